"""``dckd-demo``: a real DCKD distillation on photos bundled with scikit-image, on a laptop CPU, nothing downloaded.

Stages (each reused when re-run, once finished):

1. data: ``datasets_prep/make_demo_data.py`` builds a training LMDB of sub-images and a held-out test folder;
2. teacher: an SRResNet (BasicSR's MSRResNet, 6 blocks of 32 channels) trained by BasicSR's own pipeline
   (``options/demo/train_demo_SRResNet_teacher.yml``);
3. students: one compact SRResNet (2 blocks of 16 channels), same seed and iterations, trained three ways: from
   scratch, with logits KD and with DCKD (``options/demo/train_demo_SRResNet_student_{Scratch,Logits,DCKD}.yml``);
   Each student validates on the held-out photos four times during its run;
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
"""
import argparse
import copy
import math
import os
import re
import subprocess
import sys
import time
from os import path as osp
from typing import Dict, List, Optional, Sequence

import cv2
import numpy as np
import yaml
from tqdm import tqdm

from dckd_basicsr.errors import OptionError, report_option_errors

METHODS = ('Scratch', 'Logits', 'DCKD')
TEACHER = 'teacher'
ITER_RE = re.compile(r'\[epoch:\s*\d+, iter:\s*([\d,]+), lr:\([^)]*\)\][^\n]*?\]\s*(.*)$')
# Full and --fast run lengths: iterations for the teacher and for each student.
SCHEDULES = {'full': {'teacher': 2000, 'student': 1500}, 'fast': {'teacher': 30, 'student': 15}}
# Wall time of the full demo (default schedule, --scale 2, CPU) in a fresh clone, measured on an idle 2-core machine;
# the --fast one is a smoke version. Update both after timing the demo again (benchmarks/RESULTS.md).
DURATION = {'full': 'about 4 minutes on 2 idle CPU cores', 'fast': 'under 1 minute'}
# Validations of each student run (the PSNR-vs-iteration panel of comparison.png)
VALIDATIONS = 4


def options_dir() -> str:
    """``options/demo`` of the source tree, or the copy installed with the package (non-editable installs)."""
    package = osp.dirname(osp.dirname(osp.abspath(__file__)))
    for candidate in (osp.join(osp.dirname(package), 'options', 'demo'), osp.join(package, 'demo_options')):
        if osp.isdir(candidate):
            return candidate
    raise OptionError('options/demo not found: reinstall dckd-basicsr (pip install -e .) from its source tree.')


def load_template(name: str) -> dict:
    with open(osp.join(options_dir(), f'train_demo_SRResNet_{name}.yml')) as f:
        return yaml.safe_load(f)


def run_name(method: str, scale: int) -> str:
    return f'demo_SRResNet_x{scale}_{method}'


def concrete_options(method: str, args: argparse.Namespace, iters: int) -> dict:
    """A demo template with the run's scale, length, device, seed and encoder filled in."""
    opt = load_template(TEACHER if method == TEACHER else f'student_{method}')
    scale = args.scale
    opt['name'] = run_name(method, scale)
    opt['scale'] = scale
    opt['manual_seed'] = args.seed
    opt['num_gpu'] = {'cpu': 0, 'cuda': 1}.get(args.device, 'auto')
    for key in ('network_g', 'network_t'):
        if isinstance(opt.get(key), dict):
            opt[key]['upscale'] = scale
    train_set = opt['datasets']['train']
    train_set['dataroot_lq'] = re.sub(r'_X\d_', f'_X{scale}_', train_set['dataroot_lq'])
    train_set['gt_size'] = train_set['gt_size'] // 2 * scale  # templates are written for x2
    for phase, dataset in opt['datasets'].items():
        if phase.startswith('val'):
            dataset['dataroot_lq'] = re.sub(r'X\d$', f'X{scale}', dataset['dataroot_lq'])
            dataset['filename_tmpl'] = f'{{}}x{scale}'
    for metric in opt['val']['metrics'].values():
        metric['crop_border'] = scale
    if 'pretrain_network_t' in opt['path']:
        opt['path']['pretrain_network_t'] = osp.join('experiments', run_name(TEACHER, scale), 'models',
                                                     'net_g_latest.pth')
    opt['train']['total_iter'] = iters
    # EMA horizon of about a tenth of the run (0.999 suits 250k iterations; over 500 it would keep the init weights)
    opt['train']['ema_decay'] = round(min(0.999, 1 - 10 / iters), 4)
    opt['train']['scheduler']['milestones'] = [int(iters * 0.75)]
    opt['logger']['save_checkpoint_freq'] = iters
    opt['logger']['print_freq'] = print_freq = max(1, min(50, iters // 20))
    # students validate VALIDATIONS times (the figure's PSNR-vs-iteration panel), at multiples of print_freq, so each
    # validation follows a training log line that carries its iteration; the teacher only at the end
    opt['val']['val_freq'] = iters if method == TEACHER else max(print_freq, iters // VALIDATIONS // print_freq *
                                                                   print_freq)
    if method == 'DCKD' and args.vqgan:
        from dckd_basicsr.archs.vqgan_arch import DEFAULT_DDCONFIG  # the f16-1024 model, as the paper
        opt['network_vqgan'] = dict(type='VQGAN', embed_dim=256, n_embed=1024, ddconfig=copy.deepcopy(DEFAULT_DDCONFIG))
        opt['path']['pretrain_network_vqgan'] = osp.abspath(args.vqgan)
        opt['path']['param_key_vqgan'] = 'state_dict'
        opt['path']['strict_load_vqgan'] = False
    return opt


def train(method: str, args: argparse.Namespace, iters: int, report_dir: str) -> str:
    """Train one demo run (see :func:`train_run`)."""
    return train_run(concrete_options(method, args, iters), args.out, report_dir, label=method)


def say(message: str) -> None:
    """One console line, also between progress bars."""
    tqdm.write(message, file=sys.stdout)
    sys.stdout.flush()


class Progress:
    """Iterations of one run: a tqdm bar on a terminal, else plain lines (start, every quarter, end), so output
    redirected to a file reads line by line instead of as one line of carriage returns."""

    def __init__(self, label: str, total: int, interactive: Optional[bool] = None):
        self.label, self.total, self.n = label, total, 0
        self.interactive = sys.stderr.isatty() if interactive is None else interactive
        self.started = time.time()
        self._reported = 0
        if self.interactive:
            self._bar = tqdm(total=total, desc=f'{label:>8}', unit='it', dynamic_ncols=True)
        else:
            say(f'[demo] {label}: training, {total} iterations')

    def update_to(self, n: int) -> None:
        n = min(n, self.total)
        if self.interactive:
            self._bar.update(n - self._bar.n)
        else:
            quarter = 4 * n // self.total if self.total else 4
            if quarter > self._reported and n < self.total:
                self._reported = quarter
                say(f'[demo] {self.label}: {n}/{self.total} iterations ({100 * n // self.total}%), '
                    f'{time.time() - self.started:.0f} s')
        self.n = n

    def close(self, finished: bool) -> None:
        if self.interactive:
            if finished:
                self._bar.update(self.total - self._bar.n)
            self._bar.close()
        elif finished:
            seconds = time.time() - self.started
            say(f'[demo] {self.label}: {self.total}/{self.total} iterations, done in {seconds:.0f} s')


def train_run(opt: dict, root: str, report_dir: str, label: str) -> str:
    """Train one run through ``python -m dckd_basicsr.train`` (BasicSR's pipeline) in ``root``, with a progress
    display (:class:`Progress`), and say where its logs are.

    The option file is written to ``<report_dir>/options/<name>.yml``. A run whose final checkpoint exists is reused;
    an interrupted one is continued with ``--auto_resume``. Returns the experiment folder.
    """
    name, iters = opt['name'], opt['train']['total_iter']
    experiment = osp.join(root, 'experiments', name)
    final = osp.join(experiment, 'models', 'net_g_latest.pth')
    if osp.isfile(final):
        say(f'[demo] {name}: finished earlier, reused ({experiment})')
        return experiment
    opt_file = osp.join(report_dir, 'options', f'{name}.yml')
    os.makedirs(osp.dirname(opt_file), exist_ok=True)
    with open(opt_file, 'w') as f:
        yaml.safe_dump(opt, f, sort_keys=False)
    extra = ['--auto_resume'] if osp.isdir(experiment) else []
    command = [sys.executable, '-m', 'dckd_basicsr.train', '-opt', osp.abspath(opt_file)] + extra
    log_path = osp.join(report_dir, f'{name}.stdout.log')
    say(f'[demo] {label}: BasicSR log in {osp.join(experiment, f"train_{name}_<time>.log")}, console output in '
        f'{log_path}')
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    progress = Progress(label, iters)
    code = None
    try:
        with open(log_path, 'w') as log:
            process = subprocess.Popen(command, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                       text=True, env=env)
            for line in process.stdout:
                log.write(line)
                match = ITER_RE.search(line)
                if match:
                    progress.update_to(int(match.group(1).replace(',', '')))
            code = process.wait()
    finally:
        progress.close(finished=code == 0)
    if code != 0:
        with open(log_path) as f:
            tail = ''.join(f.readlines()[-25:])
        raise RuntimeError(f'training {name} failed (exit {code}); its output is in {log_path}:\n{tail}')
    from dckd_basicsr.commands.results import run_logs
    logs = run_logs(experiment)
    if logs:
        say(f'[demo] {label}: BasicSR log {logs[-1]}')
    return experiment


def read_validation_curves(experiment: str) -> List[tuple]:
    """``[(iter, PSNR), ...]`` of a run's validations, from its BasicSR logs (oldest first; a later validation at the
    same iteration, such as BasicSR's final one, replaces the earlier)."""
    from dckd_basicsr.commands.results import parse_log, run_logs
    points: Dict[int, float] = {}
    for log_path in run_logs(experiment):
        with open(log_path) as f:
            for record in parse_log(f):
                if record['iter'] is not None and 'psnr' in record['metrics']:
                    points[record['iter']] = record['metrics']['psnr']
    return sorted(points.items())


def _load_network(experiment: str):
    """The run's generator (EMA weights when saved) built from the option file BasicSR copied into the run."""
    import torch
    from basicsr.archs import build_network
    opt_files = [f for f in os.listdir(experiment) if f.endswith('.yml')]
    with open(osp.join(experiment, opt_files[0])) as f:
        opt = yaml.safe_load(f)
    net = build_network(opt['network_g'])
    checkpoint = torch.load(osp.join(experiment, 'models', 'net_g_latest.pth'), map_location='cpu', weights_only=True)
    net.load_state_dict(checkpoint.get('params_ema', checkpoint['params']))
    return net.eval()


def evaluate(runs: Dict[str, str], test_dir: str, scale: int, device: str) -> Dict[str, Dict[str, object]]:
    """PSNR/SSIM (Y channel, border = scale, BasicSR's metrics) of bicubic and each run on the held-out photos."""
    import torch
    from basicsr.metrics import calculate_psnr, calculate_ssim
    from basicsr.utils import img2tensor, tensor2img
    from basicsr.utils.matlab_functions import imresize

    torch_device = torch.device('cuda' if device == 'cuda' or (device == 'auto' and torch.cuda.is_available())
                                else 'cpu')
    hr_dir, lr_dir = osp.join(test_dir, 'HR'), osp.join(test_dir, 'LR_bicubic', f'X{scale}')
    names = sorted(osp.splitext(f)[0] for f in os.listdir(hr_dir) if f.endswith('.png'))
    networks = {label: _load_network(path).to(torch_device) for label, path in runs.items()}
    results = {label: {'psnr': [], 'ssim': [], 'images': {}} for label in ['Bicubic'] + list(runs)}
    for name in names:
        lq = cv2.imread(osp.join(lr_dir, f'{name}x{scale}.png'), cv2.IMREAD_COLOR)
        gt = cv2.imread(osp.join(hr_dir, f'{name}.png'), cv2.IMREAD_COLOR)
        gt = gt[:lq.shape[0] * scale, :lq.shape[1] * scale]
        outputs = {'Bicubic': np.clip(np.round(imresize(lq.astype(np.float64) / 255., scale) * 255.), 0,
                                      255).astype(np.uint8)}
        lq_tensor = img2tensor(lq.astype(np.float32) / 255., bgr2rgb=True, float32=True)[None].to(torch_device)
        with torch.no_grad():
            for label, net in networks.items():
                outputs[label] = tensor2img(net(lq_tensor).cpu())
        for label, image in outputs.items():
            results[label]['psnr'].append(calculate_psnr(image, gt, crop_border=scale, test_y_channel=True))
            results[label]['ssim'].append(calculate_ssim(image, gt, crop_border=scale, test_y_channel=True))
            results[label]['images'][name] = image
        results.setdefault('HR', {'images': {}})['images'][name] = gt
    for label in ['Bicubic'] + list(runs):
        results[label]['mean_psnr'] = float(np.mean(results[label]['psnr']))
        results[label]['mean_ssim'] = float(np.mean(results[label]['ssim']))
    results['names'] = names
    return results


def _label(tile: np.ndarray, text: str) -> np.ndarray:
    band = np.full((22, tile.shape[1], 3), 255, np.uint8)
    cv2.putText(band, text, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([tile, band], axis=0)


COLOURS = {'Scratch': (40, 40, 200), 'Logits': (40, 160, 40), 'DCKD': (200, 80, 20)}


def _plot_curves(curves: Dict[str, List[tuple]], width: int, height: int = 260) -> np.ndarray:
    """Validation PSNR (Y, on the held-out photos) of each student against iterations, drawn with cv2."""
    canvas = np.full((height, width, 3), 255, np.uint8)
    series = {m: [(s, v) for s, v in c if math.isfinite(v)] for m, c in curves.items()}
    series = {m: c for m, c in series.items() if c}
    cv2.putText(canvas, 'students: validation PSNR (Y, dB) on the held-out photos vs iteration', (10, 18),
                cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    if not series:
        return canvas
    left, right, top, bottom = 60, width - 20, 30, height - 30
    max_iter = max(s for c in series.values() for s, _ in c)
    values = [v for c in series.values() for _, v in c]
    low, high = min(values), max(values)
    high = high if high > low else low + 0.01
    digits = 2 if high - low >= 0.1 else 3 if high - low >= 0.01 else 4
    cv2.rectangle(canvas, (left, top), (right, bottom), (0, 0, 0), 1)
    for frac in (0.0, 0.5, 1.0):
        y = int(bottom - frac * (bottom - top))
        cv2.putText(canvas, f'{low + frac * (high - low):.{digits}f}', (4, y + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.35,
                    (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(canvas, f'{max_iter} iter', (right - 60, bottom + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
    for index, (method, points) in enumerate(series.items()):
        colour = COLOURS.get(method, (0, 0, 0))
        xy = np.array([(left + (right - left) * step / max(1, max_iter), bottom - (bottom - top) * (v - low) /
                        (high - low)) for step, v in points], np.int32)
        cv2.polylines(canvas, [xy.reshape(-1, 1, 2)], False, colour, 2, cv2.LINE_AA)
        for x, y in xy:
            cv2.circle(canvas, (int(x), int(y)), 3, colour, -1, cv2.LINE_AA)
        cv2.putText(canvas, f'{method} {points[-1][1]:.2f}', (right - 130, bottom - 12 - 16 * index),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1, cv2.LINE_AA)
    return canvas


def figure_photo(results: dict, labels: Sequence[str]) -> int:
    """Index of the photo the figure shows: where the teacher gains most over bicubic (the methods differ most)."""
    reference = 'Teacher' if 'Teacher' in labels else labels[-1]
    return int(np.argmax(np.array(results[reference]['psnr']) - np.array(results['Bicubic']['psnr'])))


def draw_comparison(results: dict, labels: Sequence[str], curves: Dict[str, List[tuple]], path: str,
                    crop: int = 96) -> Dict[str, float]:
    """The same centre crop of one held-out photo (:func:`figure_photo`, named in the figure) from every method,
    each labelled with the PSNR (Y) of that crop, above the students' validation PSNR against iterations.
    Returns the crops' PSNRs."""
    from basicsr.metrics import calculate_psnr
    index = figure_photo(results, labels)
    name = results['names'][index]
    gt = results['HR']['images'][name]
    crop = min(crop, gt.shape[0], gt.shape[1])
    y, x = (gt.shape[0] - crop) // 2, (gt.shape[1] - crop) // 2
    gt_crop = gt[y:y + crop, x:x + crop]
    zoom = (crop * 2, crop * 2)
    tiles = [_label(cv2.resize(gt_crop, zoom, interpolation=cv2.INTER_NEAREST), 'HR')]
    crop_psnr = {}
    for label in labels:
        image = results[label]['images'][name][y:y + crop, x:x + crop]
        crop_psnr[label] = float(calculate_psnr(image, gt_crop, crop_border=0, test_y_channel=True))
        tiles.append(_label(cv2.resize(image, zoom, interpolation=cv2.INTER_NEAREST),
                            f'{label} {crop_psnr[label]:.2f} dB'))
    row = np.concatenate([np.pad(t, ((4, 4), (4, 4), (0, 0)), constant_values=255) for t in tiles], axis=1)
    title = np.full((26, row.shape[1], 3), 255, np.uint8)
    cv2.putText(title, f"photo '{name}' ({gt.shape[1]}x{gt.shape[0]}), centre crop {crop}x{crop} shown 2x; "
                'dB = PSNR (Y) of each crop against the HR crop', (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                (0, 0, 0), 1, cv2.LINE_AA)
    figure = np.concatenate([title, row, _plot_curves(curves, row.shape[1])], axis=0)
    cv2.imwrite(path, figure)
    return crop_psnr


def write_summary(results: dict, labels: Sequence[str], args: argparse.Namespace, sizes: Dict[str, int],
                  iters: Dict[str, int], seconds: float, path: str, curves: Optional[Dict[str, List[tuple]]] = None,
                  crop_psnr: Optional[Dict[str, float]] = None) -> str:
    """``summary.md``: mean PSNR/SSIM per method, PSNR per held-out photo, the students' validation PSNR at each
    validation, the figure's crop PSNRs, the verdict and the encoder caveat. Returns its text."""
    lines = [f'# dckd-demo summary (x{args.scale}, seed {args.seed}{", --fast" if args.fast else ""})', '']
    lines.append('| method | params | iterations | PSNR (Y) | SSIM (Y) |')
    lines.append('|---|---|---|---|---|')
    for label in ['Bicubic'] + list(labels):
        size = f'{sizes[label] / 1e3:.1f}k' if label in sizes else '-'
        steps = str(iters.get(label, '-'))
        lines.append(f"| {label} | {size} | {steps} | {results[label]['mean_psnr']:.2f} | "
                     f"{results[label]['mean_ssim']:.4f} |")
    lines += ['', f"Held-out photos: {', '.join(results['names'])} (not used for training).", '']
    methods = ['Bicubic'] + list(labels)
    lines += ['PSNR (Y, dB) per photo:', '', '| photo | ' + ' | '.join(methods) + ' |',
              '|---|' + '---|' * len(methods)]
    for index, name in enumerate(results['names']):
        lines.append(f'| {name} | ' + ' | '.join(f"{results[m]['psnr'][index]:.2f}" for m in methods) + ' |')
    lines.append('')
    if curves and any(curves.values()):
        steps = sorted({step for points in curves.values() for step, _ in points})
        lines += ['Validation PSNR (Y, dB) of the students during training (the figure\'s lower panel):', '',
                  '| iteration | ' + ' | '.join(curves) + ' |', '|---|' + '---|' * len(curves)]
        for step in steps:
            values = [dict(points).get(step) for points in curves.values()]
            lines.append(f'| {step} | ' + ' | '.join('-' if v is None else f'{v:.2f}' for v in values) + ' |')
        lines.append('')
    if crop_psnr:
        photo = results['names'][figure_photo(results, labels)]
        lines += [f"comparison.png shows a centre crop of '{photo}'; each crop's label is the PSNR (Y) of that crop "
                  'alone: ' + ', '.join(f'{label} {value:.2f} dB' for label, value in crop_psnr.items()) + '.', '']
    dckd, logits = results['DCKD']['mean_psnr'], results['Logits']['mean_psnr']
    verdict = 'beats' if dckd > logits else 'does not beat'
    sentence = (f'At this scale DCKD {verdict} logits KD: {dckd:.2f} dB against {logits:.2f} dB '
                f'({dckd - logits:+.2f} dB).')
    if abs(dckd - logits) < 0.1:
        sentence += ' A difference this small at demo size is within seed-to-seed noise (see benchmarks/RESULTS.md).'
    lines.append(sentence)
    if args.vqgan:
        lines.append(f'The VQGAN encoder is the pre-trained checkpoint {args.vqgan}.')
    else:
        lines.append('Caveat: no pre-trained VQGAN was given (--vqgan PATH), so the DCKD run used a small, randomly '
                     'initialised VQGAN encoder. Its features and codebook carry no learned image statistics, so '
                     'this run exercises the whole DCKD pipeline but not the paper\'s setting.')
    lines += ['', f'Total time: {seconds / 60:.1f} min. Runs: {osp.join(args.out, "experiments")}.', '']
    text = '\n'.join(lines)
    with open(path, 'w') as f:
        f.write(text)
    return text


def write_random_vqgan(args: argparse.Namespace, path: str) -> str:
    """Save a randomly initialised encoder for the DCKD template (seeded), so the stand-in is explicit on disk."""
    import torch
    from basicsr.archs import build_network
    if not osp.isfile(path):
        os.makedirs(osp.dirname(path), exist_ok=True)
        torch.manual_seed(args.seed)
        net = build_network(load_template('student_DCKD')['network_vqgan'])
        torch.save({'params': net.state_dict()}, path)
    return path


def parameter_count(experiment: str) -> int:
    return sum(p.numel() for p in _load_network(experiment).parameters())


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
    with report_option_errors(prog='dckd-demo'):
        args = parse_args(argv)
        run_demo(args)


def run_demo(args: argparse.Namespace) -> dict:
    import dckd_basicsr  # noqa: F401
    mode = 'fast' if args.fast else 'full'
    schedule = dict(SCHEDULES[mode])
    if args.iters:
        schedule = {'teacher': 2 * args.iters, 'student': args.iters}
    started = time.time()
    report_dir = osp.join(args.out, 'results', 'demo')
    os.makedirs(report_dir, exist_ok=True)
    expected = DURATION[mode] if not args.iters and args.scale == 2 else 'not measured for these settings'
    shorter = f' (--fast: {DURATION["fast"]})' if mode == 'full' else ''
    say(f"[demo] a teacher ({schedule['teacher']} iterations) and three students ({schedule['student']} each): "
        f'expected wall time {expected}{shorter}; finished stages are reused when re-run')
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


if __name__ == '__main__':
    main()
