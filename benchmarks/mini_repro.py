"""A small reproduction of the paper's comparison: Scratch vs Logits KD vs DCKD at a scale that means something.

Teacher and student come from the RCAN family of Table 1 at reduced size (teacher 64 channels, 5 groups x 10 blocks;
student 64 channels, 5 groups x 3 blocks: the paper's 15.6M / 5.2M ratio of about 3), trained on real photos you
give, evaluated on benchmark sets you give, for several seeds; the result is the mean and standard deviation per
method and set. Every run is an ordinary BasicSR experiment (the demo's option templates with these networks, sizes
and lengths), so a run can be opened, resumed and re-used. Meant for a GPU: the defaults (teacher 15k iterations,
students 5k, batch 16, LQ 48x48, x4, 3 seeds) are sized to finish in about half an hour on one recent GPU (an
estimate: this script has not yet been timed on a GPU; see benchmarks/RESULTS.md)::

    python benchmarks/mini_repro.py --train-hr DIV2K_train_HR --bench-src datasets_src/benchmark --sets Set5 Set14 \\
        --out mini_repro --device cuda [--vqgan vqgan_imagenet_f16_1024/last.ckpt]

Without ``--vqgan`` the DCKD runs use the demo's small randomly initialised encoder, and the summary says so.
"""
import argparse
import copy
import os
import sys
import time
from os import path as osp
from typing import Dict, Optional, Sequence

import numpy as np

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from dckd_basicsr.commands import demo  # noqa: E402
from dckd_basicsr.errors import OptionError, report_option_errors  # noqa: E402

TEACHER_NET = {'type': 'RCAN', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 64, 'num_group': 5, 'num_block': 10,
               'squeeze_factor': 16, 'res_scale': 1, 'img_range': 255., 'rgb_mean': [0.4488, 0.4371, 0.4040]}
STUDENT_NET = dict(TEACHER_NET, num_block=3)


def run_options(method: str, args: argparse.Namespace, seed: int, data: Dict[str, str]) -> dict:
    """The demo template of ``method`` with the mini-repro networks, data, batch, length, seed and encoder."""
    iters = args.teacher_iters if method == demo.TEACHER else args.student_iters
    demo_args = argparse.Namespace(scale=args.scale, seed=seed, device=args.device, vqgan=args.vqgan)
    opt = demo.concrete_options(method, demo_args, iters)
    suffix = '' if method == demo.TEACHER else f'_seed{seed}'
    opt['name'] = f'mini_RCAN_x{args.scale}_{method}{suffix}'
    opt['network_g'] = dict(copy.deepcopy(TEACHER_NET if method == demo.TEACHER else STUDENT_NET), upscale=args.scale)
    if 'network_t' in opt:
        opt['network_t'] = dict(copy.deepcopy(TEACHER_NET), upscale=args.scale)
        opt['path']['pretrain_network_t'] = osp.join('experiments', f'mini_RCAN_x{args.scale}_{demo.TEACHER}',
                                                     'models', 'net_g_latest.pth')
    train_set = opt['datasets']['train']
    train_set.update(dataroot_gt=data['gt'], dataroot_lq=data['lq'], gt_size=args.lq_size * args.scale,
                     batch_size_per_gpu=args.batch, num_worker_per_gpu=args.workers)
    opt['datasets'] = {'train': train_set}  # evaluation happens afterwards, on every benchmark set
    opt.pop('val', None)
    opt['logger']['print_freq'] = 100
    return opt


def summarise(results: Dict[str, Dict[int, dict]], sets: Sequence[str], args: argparse.Namespace) -> str:
    """Mean and standard deviation over seeds of each method's PSNR/SSIM (Y channel) on each set."""
    lines = [f'# mini_repro: RCAN x{args.scale}, teacher {args.teacher_iters} / students {args.student_iters} '
             f'iterations, seeds {" ".join(map(str, args.seeds))}', '']
    header = '| method | ' + ' | '.join(f'{s} PSNR | {s} SSIM' for s in sets) + ' |'
    lines += [header, '|' + '---|' * (1 + 2 * len(sets))]
    for method, per_seed in results.items():
        cells = []
        for bench in sets:
            psnr = np.array([r[bench]['psnr'] for r in per_seed.values()])
            ssim = np.array([r[bench]['ssim'] for r in per_seed.values()])
            spread = len(psnr) > 1 and method != 'Teacher'  # one teacher serves every seed
            cells.append(f'{psnr.mean():.2f}' + (f' ± {psnr.std(ddof=1):.2f}' if spread else ''))
            cells.append(f'{ssim.mean():.4f}' + (f' ± {ssim.std(ddof=1):.4f}' if spread else ''))
        lines.append(f'| {method} | ' + ' | '.join(cells) + ' |')
    lines.append('')
    lines.append('VQGAN encoder: ' + (args.vqgan if args.vqgan else 'small, randomly initialised (no --vqgan given); '
                                      'DCKD here is not the paper\'s setting'))
    return '\n'.join(lines) + '\n'


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='mini_repro.py', description=__doc__.split('\n\n')[0])
    parser.add_argument('--train-hr', nargs='+', required=True, metavar='DIR', help='folder(s) of HR training photos')
    parser.add_argument('--bench-src', required=True, metavar='DIR', help='benchmark sets (prepare_benchmarks --src)')
    parser.add_argument('--sets', nargs='+', default=None, help='benchmark sets to evaluate (default: all found)')
    parser.add_argument('--out', default='mini_repro')
    parser.add_argument('--scale', type=int, default=4, choices=(2, 3, 4))
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument('--teacher-iters', type=int, default=15000)
    parser.add_argument('--student-iters', type=int, default=5000)
    parser.add_argument('--batch', type=int, default=16)
    parser.add_argument('--lq-size', type=int, default=48, help='LQ patch size (GT: x scale; a multiple of 16 after)')
    parser.add_argument('--crop-size', type=int, default=480, help='HR sub-image size of the training LMDB')
    parser.add_argument('--workers', type=int, default=4, help='data loader workers per run')
    parser.add_argument('--device', default='auto', choices=('auto', 'cpu', 'cuda'))
    parser.add_argument('--vqgan', default=None, help='a taming-transformers VQGAN checkpoint (f16, 1024 codes)')
    args = parser.parse_args(argv)
    args.out = osp.abspath(args.out)
    if (args.lq_size * args.scale) % 16:
        raise OptionError(f'--lq-size {args.lq_size}: the GT patch ({args.lq_size * args.scale}) must be a multiple '
                          'of 16 for the VQGAN encoder.')
    if args.vqgan and not osp.isfile(args.vqgan):
        raise OptionError(f'--vqgan {args.vqgan}: no such file.')
    return args


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Dict[int, dict]]:
    with report_option_errors('mini_repro.py'):
        args = parse_args(argv)
        return run(args)


def run(args: argparse.Namespace) -> Dict[str, Dict[int, dict]]:
    import dckd_basicsr  # noqa: F401
    from datasets_prep import prepare_benchmarks, prepare_div2k
    started = time.time()
    report_dir = osp.join(args.out, 'results', 'mini_repro')
    os.makedirs(report_dir, exist_ok=True)
    train_root = osp.join(args.out, 'datasets', 'train')
    prepare_div2k.main(['--hr', *args.train_hr, '--out', train_root, '--scales', str(args.scale), '--crop-size',
                        str(args.crop_size), '--step', str(args.crop_size // 2)])
    data = {'gt': osp.join(train_root, 'DIV2K_train_HR_sub.lmdb'),
            'lq': osp.join(train_root, f'DIV2K_train_LR_bicubic_X{args.scale}_sub.lmdb')}
    bench_root = osp.join(args.out, 'datasets', 'Benchmark_SR')
    prepare_benchmarks.main(['--src', args.bench_src, '--out', bench_root, '--scales', str(args.scale)] +
                            (['--sets', *args.sets] if args.sets else []))
    sets = sorted(os.listdir(bench_root)) if not args.sets else list(args.sets)
    if not args.vqgan:
        demo.write_random_vqgan(argparse.Namespace(seed=0), osp.join(args.out, 'results', 'demo',
                                                                     'random_vqgan_encoder.pth'))

    teacher = demo.train_run(run_options(demo.TEACHER, args, args.seeds[0], data), args.out, report_dir, 'teacher')
    results: Dict[str, Dict[int, dict]] = {'Teacher': {}}
    results.update({method: {} for method in demo.METHODS})
    for seed in args.seeds:
        runs = {'Teacher': teacher}
        for method in demo.METHODS:
            runs[method] = demo.train_run(run_options(method, args, seed, data), args.out, report_dir,
                                          f'{method} s{seed}')
        for bench in sets:
            scores = demo.evaluate(runs, osp.join(bench_root, bench), args.scale, args.device)
            for label in runs:
                results[label].setdefault(seed, {})[bench] = {'psnr': scores[label]['mean_psnr'],
                                                              'ssim': scores[label]['mean_ssim']}
    text = summarise(results, sets, args)
    text += f'\nTotal time: {(time.time() - started) / 60:.1f} min.\n'
    with open(osp.join(report_dir, 'summary.md'), 'w') as f:
        f.write(text)
    print(text)
    return results


if __name__ == '__main__':
    main()
