"""``dckd-demo``: a real DCKD distillation on photos bundled with scikit-image, on a laptop CPU, nothing downloaded.

Stages (each reused when re-run, once finished):

1. data: ``datasets_prep/make_demo_data.py`` builds a training LMDB of sub-images and a held-out test folder;
2. teacher: an SRResNet (BasicSR's MSRResNet, 6 blocks of 32 channels) trained by BasicSR's own pipeline
   (``options/demo/train_demo_SRResNet_teacher.yml``);
3. students: one compact SRResNet (2 blocks of 16 channels), same seed and iterations, trained three ways: from
   scratch, with logits KD and with DCKD (``options/demo/train_demo_SRResNet_student_{Scratch,Logits,DCKD}.yml``);
   each student validates on the held-out photos at four evenly spaced iterations and once more when its run ends
   (five points);
4. evaluation on the held-out photos (PSNR/SSIM on the Y channel, BasicSR's metrics): ``summary.md`` (means, PSNR per
   photo, the students' validation PSNR per iteration) and ``comparison.png`` (the same centre crop of one named
   photo from every method, each labelled with that crop's own PSNR, above the students' validation PSNR against
   iterations).

The full demo takes :data:`DURATION` (measured on an idle 2-core machine); ``--fast`` is a smoke version. On a
terminal each run shows a progress bar; redirected to a file, progress is plain lines (start, every quarter, end).
The console names each run's BasicSR log.

Every run is an ordinary BasicSR experiment under ``<out>/experiments``, driven by an option file written to
``<out>/results/demo/options`` from the templates in ``options/demo`` with only the scale, iterations, device and
(with ``--vqgan``) the encoder changed. Without ``--vqgan`` the VQGAN encoder is randomly initialised: the summary
says so, since the paper's DCKD relies on a pre-trained encoder.

Modules: :mod:`.templates` (the option files), :mod:`.runner` (a training subprocess and its progress display),
:mod:`.evaluation` (scores and validation curves), :mod:`.figure` (``comparison.png``), :mod:`.summary`
(``summary.md``).
"""
import argparse
import os
import time
from os import path as osp
from typing import Optional, Sequence

from dckd_basicsr.commands.demo.evaluation import evaluate, parameter_count, read_validation_curves
from dckd_basicsr.commands.demo.figure import draw_comparison
from dckd_basicsr.commands.demo.runner import Progress, say, train, train_run
from dckd_basicsr.commands.demo.summary import write_summary
from dckd_basicsr.commands.demo.templates import (METHODS, TEACHER, concrete_options, load_template, run_name,
                                                   write_random_vqgan)
from dckd_basicsr.errors import OptionError, report_option_errors

__all__ = [
    'DURATION', 'METHODS', 'SCHEDULES', 'TEACHER', 'Progress', 'concrete_options', 'draw_comparison', 'evaluate',
    'load_template', 'main', 'parse_args', 'read_validation_curves', 'run_demo', 'train_run', 'write_random_vqgan'
]

# Full and --fast run lengths: iterations for the teacher and for each student.
SCHEDULES = {'full': {'teacher': 2000, 'student': 1500}, 'fast': {'teacher': 30, 'student': 15}}
# Wall time of the full demo (default schedule, --scale 2, CPU) in a fresh clone, measured on an idle 2-core machine;
# the --fast one is a smoke version. Update both after timing the demo again (benchmarks/RESULTS.md).
DURATION = {'full': 'about 4 minutes on 2 idle CPU cores', 'fast': 'under 1 minute'}


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    summary = __doc__.split('\n\n')[0].replace('``', '')
    parser = argparse.ArgumentParser(prog='dckd-demo',
                                     description=f"{summary} Takes {DURATION['full']} (--fast: {DURATION['fast']}).")
    parser.add_argument('--out', default='.', help='root for datasets/, experiments/ and results/demo (default: .)')
    parser.add_argument('--scale', type=int, default=2, choices=(2, 4))
    parser.add_argument('--iters', type=int, default=None,
                        help='iterations per student (teacher: about twice); default 1500, 15 with --fast')
    parser.add_argument('--device', default='auto', choices=('auto', 'cpu', 'cuda'))
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--fast', action='store_true', help=f"a smoke version, {DURATION['fast']} (used by the tests)")
    parser.add_argument('--vqgan', default=None, help='a taming-transformers VQGAN checkpoint (f16, 1024 codes)')
    args = parser.parse_args(argv)
    args.out = osp.abspath(args.out)
    if args.vqgan and not osp.isfile(args.vqgan):
        raise OptionError(f'--vqgan {args.vqgan}: no such file.')
    return args


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Console script ``dckd-demo``: parse ``argv`` and run the demo; option mistakes print one message."""
    with report_option_errors(prog='dckd-demo'):
        args = parse_args(argv)
        run_demo(args)


def run_demo(args: argparse.Namespace) -> dict:
    """Every stage of the demo (see the package docstring); returns the evaluation results."""
    mode = 'fast' if args.fast else 'full'
    schedule = dict(SCHEDULES[mode])
    if args.iters:
        schedule = {'teacher': 2 * args.iters, 'student': args.iters}
    started = time.time()
    report_dir = osp.join(args.out, 'results', 'demo')
    os.makedirs(report_dir, exist_ok=True)
    expected = DURATION[mode] if not args.iters and args.scale == 2 else 'not measured for these settings'
    shorter = f' (--fast: {DURATION["fast"]})' if mode == 'full' else ''
    finished = [method for method in (TEACHER, ) + tuple(METHODS) if osp.isfile(osp.join(
        args.out, 'experiments', run_name(method, args.scale), 'models', 'net_g_latest.pth'))]
    if len(finished) == 1 + len(METHODS):
        say('[demo] every run finished earlier and is reused: only the evaluation runs (seconds)')
    else:
        reused = f'; {", ".join(finished)} finished earlier and {"is" if len(finished) == 1 else "are"} reused' \
            if finished else '; finished stages are reused when re-run'
        say(f"[demo] a teacher ({schedule['teacher']} iterations) and three students ({schedule['student']} each): "
            f'expected wall time {expected}{shorter} for all of them{reused}')
    if not args.vqgan:
        say('[demo] no --vqgan given: the DCKD student will use a small RANDOMLY INITIALISED VQGAN encoder, so it '
            "runs the whole DCKD pipeline but not the paper's setting (see the caveat in the summary; --vqgan "
            'last.ckpt uses the pre-trained taming-transformers f16-1024 encoder)')

    from datasets_prep import make_demo_data
    data_root = osp.join(args.out, 'datasets', 'demo')
    say(f'[demo] data: {data_root}')
    make_demo_data.main(['--out', data_root, '--scales', str(args.scale)])

    say(f"[demo] teacher: {schedule['teacher']} iterations")
    runs = {'Teacher': train(TEACHER, args, schedule['teacher'], report_dir)}
    if not args.vqgan:
        path = write_random_vqgan(args, osp.join(report_dir, 'random_vqgan_encoder.pth'))
        say(f'[demo] the random VQGAN encoder for DCKD: {path}')
    for method in METHODS:
        say(f"[demo] student {method}: {schedule['student']} iterations")
        runs[method] = train(method, args, schedule['student'], report_dir)

    say('[demo] evaluating on the held-out photos')
    results = evaluate(runs, osp.join(data_root, 'Benchmark_SR', 'Demo'), args.scale, args.device)
    labels = ['Teacher'] + list(METHODS)
    curves = {method: read_validation_curves(runs[method]) for method in METHODS}
    crop_psnr = draw_comparison(results, ['Bicubic'] + labels, curves, osp.join(report_dir, 'comparison.png'))
    sizes = {label: parameter_count(runs[label]) for label in labels}
    iters = {'Teacher': schedule['teacher'], **{m: schedule['student'] for m in METHODS}}
    text = write_summary(results, labels, args, sizes, iters, time.time() - started,
                         osp.join(report_dir, 'summary.md'), curves, crop_psnr)
    print(text)
    print(f'[demo] wrote {osp.join(report_dir, "summary.md")} and {osp.join(report_dir, "comparison.png")}; the runs '
          f'and their BasicSR logs are in {osp.join(args.out, "experiments")}')
    return results
