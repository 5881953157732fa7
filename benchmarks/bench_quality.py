"""What precision costs in quality: short DCKD trainings in fp32 and in each ``train.fast`` mode, PSNR on Set5/Set14.

Usage::

    python benchmarks/bench_quality.py                        # the full check (minutes per mode on 2 CPU cores)
    python benchmarks/bench_quality.py --quick                # a smoke run (under a minute): tiny schedule, Set5 only
    python benchmarks/bench_quality.py --modes fp32 amp-bf16 --iters 600 --device cuda
    python benchmarks/bench_quality.py --data /path/to/shared/data --append benchmarks/RESULTS.md
    python benchmarks/bench_quality.py --student span --fp32-seeds 2   # Scratch, Logits, DCKD for a SPAN student

Real photos from the project's shared data folder (``--data``, default ``../shared/data`` next to the repository):
training HR images from ``t91/HR``, ``div2k/HR`` and ``flickr2k/HR``, downscaled x4 with BasicSR's MATLAB bicubic
``imresize``; evaluation on ``benchmark/Set5`` and ``benchmark/Set14`` (their ``LR_bicubic/X4`` images, HR cropped to
4x the LR size), PSNR on the Y channel with a 4-pixel border, as BasicSR's ``calculate_psnr`` computes it.

Networks, as the demo's (``options/demo``) at x4: teacher MSRResNet 32 channels / 6 blocks, trained first in fp32
(``--teacher-iters``) and shared by every mode; student MSRResNet 16 channels / 2 blocks; a small randomly
initialised 5-level VQGAN encoder (the demo's; no pre-trained encoder is in the shared data). Each mode distils a
student from the same seed on the same batches (random GT 64x64 crops, batch ``--batch``) with the real
``DCKDModel`` (logits KD + Eq. 5 + the authors' CELoss, 4 negatives, EMA 0.995, the history model's source) for
``--iters`` iterations, then the student itself is evaluated (after a few hundred iterations its EMA still lies close
to the initial weights). The table gives PSNR per set and the difference to the fp32 run; the difference of two
fp32 runs is 0 (the same seed and data), so any difference is what the mode changes, amplified by training.
``--fp32-seeds N`` adds fp32 runs from seeds 1..N (other initial weights and batches): the spread that any change of
the trajectory gives after so few iterations, the yardstick for the modes' differences.

Modes (``--modes``): ``fp32`` (exact), ``autocast-bf16`` (frozen networks in bf16, ``channels_last``), ``amp-bf16``
(the whole step in bf16), ``amp-fp16`` (fp16 with the GradScaler; left out by default on CPU, where fp16 is
emulated and about ten times slower), ``compile`` (fp32, compiled networks), ``amp-bf16-compile``. ``--quick`` runs
without the compile modes.

``--student span`` compares methods instead of precisions, for an efficient student from spandrel: a small SPAN
(16 channels, x4; ``dckd_basicsr/archs/spandrel_students_arch.py``) trained as Scratch (``SRModel``, L1 to GT),
Logits (``KDModel``, + L1 to the teacher) and DCKD (as above) in fp32, from the same seed on the same batches, after
the same teacher; ``--fp32-seeds N`` adds runs of every method from seeds 1..N for the spread. The differences are
to Scratch of seed 0.
"""
import argparse
import copy
import datetime
import os
import platform
import sys
import tempfile
import time
from os import path as osp
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEFAULT_DATA = osp.join(osp.dirname(REPO), 'shared', 'data')
SCALE, GT_SIZE = 4, 64
TRAIN_FOLDERS = ('t91/HR', 'div2k/HR', 'flickr2k/HR')
TEST_SETS = ('Set5', 'Set14')
MODES = {
    'fp32': None,
    'autocast-bf16': dict(autocast='bf16', channels_last=True),
    'amp-bf16': dict(amp='bf16', channels_last=True),
    'amp-fp16': dict(amp='fp16', channels_last=True),
    'compile': dict(compile=True, channels_last=True),
    'amp-bf16-compile': dict(amp='bf16', channels_last=True, compile=True),
}
TEACHER = dict(type='MSRResNet', num_in_ch=3, num_out_ch=3, num_feat=32, num_block=6, upscale=SCALE)
STUDENT = dict(TEACHER, num_feat=16, num_block=2)
SPAN_STUDENT = dict(type='SPAN', num_in_ch=3, num_out_ch=3, feature_channels=16, upscale=SCALE)
METHOD_RUNS = ('Scratch', 'Logits', 'DCKD')  # --student span: what each run trains (all fp32)
VQGAN = dict(type='VQGAN', embed_dim=32, n_embed=64,
             ddconfig=dict(double_z=False, z_channels=32, resolution=48, in_channels=3, out_ch=3, ch=32,
                           ch_mult=[1, 1, 2, 2, 4], num_res_blocks=1, attn_resolutions=[], dropout=0.0))


class MissingData(SystemExit):
    pass


def images_in(folder: str) -> List[str]:
    return sorted(osp.join(folder, name) for name in os.listdir(folder)
                  if name.lower().endswith(('.png', '.jpg', '.jpeg', '.bmp')))


def check_data(data: str, test_sets: Sequence[str]) -> None:
    """Exit with one message naming every missing folder and the option that points at the data."""
    needed = [osp.join(data, folder) for folder in TRAIN_FOLDERS[:1]]
    needed += [osp.join(data, 'benchmark', name, sub) for name in test_sets for sub in ('HR', 'LR_bicubic/X4')]
    missing = [folder for folder in needed if not osp.isdir(folder)]
    if missing:
        raise MissingData(f'bench_quality: the shared data are missing: {", ".join(missing)}. Give the folder that '
                          f'holds t91/HR and benchmark/Set5, Set14 with --data (default {DEFAULT_DATA}).')


def read_rgb(path: str) -> np.ndarray:
    """An image as float32 RGB in [0, 1] (grayscale photos such as Set14's bridge become three equal channels)."""
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise MissingData(f'bench_quality: {path} cannot be read as an image.')
    return image[:, :, ::-1].astype(np.float32) / 255.


class TrainingPatches:
    """Random GT crops of the training photos and their x4 MATLAB-bicubic LQ, from a seeded generator."""

    def __init__(self, data: str, max_images: Optional[int] = None):
        from basicsr.utils.matlab_functions import imresize
        paths = [path for folder in TRAIN_FOLDERS if osp.isdir(osp.join(data, folder))
                 for path in images_in(osp.join(data, folder))]
        self.pairs = []
        for path in paths[:max_images]:
            hr = read_rgb(path)
            if min(hr.shape[:2]) > 600:  # the large DIV2K/Flickr2K photos: a centre crop keeps memory small
                top, left = (hr.shape[0] - 600) // 2, (hr.shape[1] - 600) // 2
                hr = hr[top:top + 600, left:left + 600]
            hr = hr[:hr.shape[0] - hr.shape[0] % SCALE, :hr.shape[1] - hr.shape[1] % SCALE]
            if min(hr.shape[:2]) >= GT_SIZE:
                self.pairs.append((hr, np.clip(imresize(hr, 1 / SCALE), 0, 1).astype(np.float32)))

    def batches(self, seed: int, count: int, batch: int, device: str):
        rng = np.random.default_rng(seed)
        lq_size = GT_SIZE // SCALE
        for _ in range(count):
            gts, lqs = [], []
            for _ in range(batch):
                hr, lr = self.pairs[rng.integers(len(self.pairs))]
                top, left = rng.integers(lr.shape[0] - lq_size + 1), rng.integers(lr.shape[1] - lq_size + 1)
                lq = lr[top:top + lq_size, left:left + lq_size]
                gt = hr[top * SCALE:(top + lq_size) * SCALE, left * SCALE:(left + lq_size) * SCALE]
                if rng.random() < 0.5:
                    lq, gt = lq[:, ::-1], gt[:, ::-1]
                lqs.append(np.ascontiguousarray(lq.transpose(2, 0, 1)))
                gts.append(np.ascontiguousarray(gt.transpose(2, 0, 1)))
            yield {'lq': torch.from_numpy(np.stack(lqs)).to(device), 'gt': torch.from_numpy(np.stack(gts)).to(device)}


def test_pairs(data: str, name: str, limit: Optional[int]) -> List[Tuple[np.ndarray, np.ndarray]]:
    """(LR, HR cropped to 4x the LR size) of a benchmark set, from its ``LR_bicubic/X4`` folder."""
    root = osp.join(data, 'benchmark', name)
    pairs = []
    for hr_path in images_in(osp.join(root, 'HR'))[:limit]:
        stem, extension = osp.splitext(osp.basename(hr_path))
        lr_path = osp.join(root, 'LR_bicubic', 'X4', f'{stem}x4{extension}')
        if not osp.isfile(lr_path):
            raise MissingData(f'bench_quality: {lr_path} is missing (the LR of {hr_path}).')
        lr, hr = read_rgb(lr_path), read_rgb(hr_path)
        pairs.append((lr, hr[:lr.shape[0] * SCALE, :lr.shape[1] * SCALE]))
    return pairs


def psnr(net: torch.nn.Module, pairs, device: str) -> float:
    """Mean PSNR (Y channel, 4-pixel border) of ``net`` on ``pairs``."""
    from basicsr.metrics import calculate_psnr
    values = []
    net.eval()
    with torch.no_grad():
        for lr, hr in pairs:
            x = torch.from_numpy(np.ascontiguousarray(lr.transpose(2, 0, 1)))[None].to(device)
            out = net(x).clamp(0, 1)[0].float().cpu().numpy().transpose(1, 2, 0)
            to_bgr8 = lambda image: np.round(image[:, :, ::-1] * 255.).astype(np.uint8)  # noqa: E731
            values.append(calculate_psnr(to_bgr8(out), to_bgr8(hr), crop_border=SCALE, test_y_channel=True))
    return float(np.mean(values))


def base_options(root: str, device: str, iters: int) -> dict:
    train = dict(ema_decay=0.995, optim_g=dict(type='Adam', lr=1e-3, betas=[0.9, 0.99]),
                 scheduler=dict(type='MultiStepLR', milestones=[max(1, iters * 3 // 4)], gamma=0.1),
                 pixel_opt=dict(type='L1Loss'))
    return dict(is_train=True, dist=False, num_gpu=0 if device == 'cpu' else 1, rank=0, world_size=1, manual_seed=0,
                scale=SCALE, model_type='SRModel', network_g=copy.deepcopy(TEACHER),
                path=dict(models=osp.join(root, 'models'), training_states=osp.join(root, 'states')), train=train,
                val=dict(metrics={}))


def train_model(opt: dict, patches: TrainingPatches, iters: int, batch: int, device: str, seed: int = 0):
    """``iters`` steps from ``torch.manual_seed(seed)`` on the batches of seed ``seed + 1``."""
    from basicsr.models import build_model
    torch.manual_seed(seed)
    model = build_model(opt)
    for current_iter, data in enumerate(patches.batches(seed + 1, iters, batch, device), 1):
        model.feed_data(data)
        model.optimize_parameters(current_iter)
        model.update_learning_rate(current_iter, warmup_iter=-1)
    return model


def student_options(root: str, device: str, iters: int, teacher: str, vqgan: str, fast: Optional[dict],
                    student: dict = STUDENT, method: str = 'DCKD') -> dict:
    """A DCKD student's options (``method`` ``Scratch``: ``SRModel`` alone; ``Logits``: ``KDModel``)."""
    opt = base_options(root, device, iters)
    opt['network_g'] = copy.deepcopy(student)
    if method == 'Scratch':
        return opt
    opt.update(model_type='KDModel', network_t=copy.deepcopy(TEACHER))
    opt['path'].update(pretrain_network_t=teacher, param_key_t='params')
    opt['train'].update(logits_opt=dict(type='L1Loss'))
    if method == 'Logits':
        return opt
    opt.update(model_type='DCKDModel', network_his=True, network_vqgan=copy.deepcopy(VQGAN))
    opt['path'].update(pretrain_network_vqgan=vqgan, param_key_vqgan='params')
    opt['train'].update(cl_opt=dict(type='ContrasLoss', d_func='L1', loss_weight=0.1,
                                    weights=[0.03125, 0.0625, 0.125, 0.25, 1.0]),
                        ce_opt=dict(type='CELoss', loss_weight=0.001), num_neg=4, update_decay=0.1,
                        step=[max(1, iters // 15)], gaussian_noise_prob=1, gray_noise_prob=0.5, gaussian_blur_prob=0,
                        resize_prob=0)
    if fast:
        opt['train']['fast'] = dict(fast)
    return opt


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--data', default=DEFAULT_DATA, help=f'the shared data folder (default {DEFAULT_DATA})')
    parser.add_argument('--modes', nargs='+', choices=sorted(MODES), help='default: all (amp-fp16 only on GPUs)')
    parser.add_argument('--iters', type=int, default=400, help='student iterations per mode (default 400)')
    parser.add_argument('--teacher-iters', type=int, default=1000, help='teacher iterations (default 1000)')
    parser.add_argument('--batch', type=int, default=8)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--threads', type=int, help='torch threads (default: torch\'s choice)')
    parser.add_argument('--quick', action='store_true',
                        help='smoke run: 20 iterations each, 10 training photos, 2 Set5 photos, no compile modes')
    parser.add_argument('--fp32-seeds', type=int, default=0,
                        help='extra fp32 runs with seeds 1..N (other initial weights and batches): the run-to-run '
                        'spread that any change of the trajectory gives, to judge the modes\' differences against')
    parser.add_argument('--student', choices=['span'],
                        help='compare Scratch, Logits and DCKD (fp32) for this efficient student instead of the modes')
    parser.add_argument('--append', help='append the table to this markdown file (e.g. benchmarks/RESULTS.md)')
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    import dckd_basicsr  # noqa: F401
    from basicsr.archs import build_network
    from basicsr.utils import get_root_logger
    from dckd_basicsr.training.precision import fp16_supported

    get_root_logger().setLevel('WARNING')
    modes = args.modes or [m for m in MODES if m != 'amp-fp16' or args.device != 'cpu']
    test_sets, limit, max_images = TEST_SETS, None, None
    if args.quick:
        args.iters, args.teacher_iters, test_sets, limit, max_images = 20, 20, ('Set5', ), 2, 10
        modes = [m for m in modes if 'compile' not in m]
    if 'amp-fp16' in modes and not fp16_supported(torch.device(args.device)):
        print(f'amp-fp16: left out, torch {torch.__version__} has no fp16 autocast on {args.device}.')
        modes.remove('amp-fp16')
    modes = ['fp32'] + [m for m in modes if m != 'fp32']
    # (run, method, train.fast, seed): the precision modes, or with --student the methods; then the seed spread
    reference = 'Scratch' if args.student else 'fp32'
    student = SPAN_STUDENT if args.student else STUDENT
    runs = [(method, method, None, 0) for method in METHOD_RUNS] if args.student else \
        [(mode, 'DCKD', MODES[mode], 0) for mode in modes]
    methods = METHOD_RUNS if args.student else ('DCKD', )
    runs += [(f'{method + " " if args.student else ""}fp32, seed {seed}', method, None, seed)
             for seed in range(1, args.fp32_seeds + 1) for method in methods]
    try:
        check_data(args.data, test_sets)
        patches = TrainingPatches(args.data, max_images)
        evaluation = {name: test_pairs(args.data, name, limit) for name in test_sets}
    except MissingData as error:
        print(error, file=sys.stderr)
        return 2

    results: Dict[str, Dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as root:
        start = time.perf_counter()
        teacher_model = train_model(base_options(root, args.device, args.teacher_iters), patches, args.teacher_iters,
                                    args.batch, args.device)
        teacher_path, vqgan_path = osp.join(root, 'teacher.pth'), osp.join(root, 'vqgan.pth')
        torch.save({'params': teacher_model.net_g_ema.state_dict()}, teacher_path)
        torch.manual_seed(0)
        torch.save({'params': build_network(copy.deepcopy(VQGAN)).state_dict()}, vqgan_path)
        results['teacher'] = {name: psnr(teacher_model.net_g, pairs, args.device)
                              for name, pairs in evaluation.items()}
        results['teacher']['seconds'] = time.perf_counter() - start
        print(f"teacher: {results['teacher']}", flush=True)
        for run, method, fast, seed in runs:
            start = time.perf_counter()
            opt = student_options(root, args.device, args.iters, teacher_path, vqgan_path, fast, student, method)
            model = train_model(opt, patches, args.iters, args.batch, args.device, seed=seed)
            results[run] = {name: psnr(model.net_g, pairs, args.device) for name, pairs in evaluation.items()}
            results[run]['seconds'] = time.perf_counter() - start
            print(f'{run}: {results[run]}', flush=True)

    now = datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')
    hardware = torch.cuda.get_device_name() if args.device.startswith('cuda') else \
        f'{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores visible'
    title = (f'{student["type"]} student ({student["feature_channels"]} channels): Scratch, Logits and DCKD'
             if args.student else 'DCKD')
    lines = [f'### {title} short training x4: PSNR after {args.iters} iterations per run (teacher '
             f'{args.teacher_iters}, batch {args.batch}, GT {GT_SIZE}), {args.device}', '',
             f'Run: {now}. Hardware: {hardware}; torch {torch.__version__}, {torch.get_num_threads()} threads. '
             f'Command: `python benchmarks/bench_quality.py {" ".join(sys.argv[1:] if argv is None else argv)}`.', '',
             '| run | ' + ' | '.join(f'{name} PSNR | {name} vs {reference}' for name in test_sets) + ' | time s |',
             '|---|' + '---|---|' * len(test_sets) + '---|']
    for run, values in results.items():
        cells = []
        for name in test_sets:
            diff = '' if run == 'teacher' else f"{values[name] - results[reference][name]:+.3f} dB"
            cells.append(f'{values[name]:.3f} | {diff}')
        lines.append(f'| {run} | ' + ' | '.join(cells) + f" | {values['seconds']:.0f} |")
    print('\n'.join([''] + lines))
    if args.append:
        with open(args.append, 'a') as handle:
            handle.write('\n' + '\n'.join(lines) + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
