"""Training-step cost of DCKD against scratch and logits KD, with a breakdown and the "floor" (issue 9).

Usage::

    python benchmarks/bench_step.py                                   # CPU: batch 2, LQ 32x32, SwinIR and RCAN x4
    python benchmarks/bench_step.py --device cuda --batch 16 --lq 48 --iters 10
    python benchmarks/bench_step.py --configs swinir --append benchmarks/RESULTS.md
    python benchmarks/bench_step.py --loss-diff                     # loss values only: fp32 against each fast row
    python benchmarks/bench_step.py --methods "DCKD amp bf16" "DCKD amp bf16 + compile"   # a subset of the rows
    python benchmarks/bench_step.py --configs span --methods "DCKD amp bf16"   # an efficient student (spandrel SPAN)

For each configuration of Table 1 (SwinIR x4: student SwinIR 60/4x6, teacher SwinIR-M 180/6x6; RCAN x4: student
RCAN 10x6, teacher RCAN 10x20; the full-size taming f16-1024 VQGAN encoder; all with random weights, which cost
the same as trained ones) the real models of this plugin are built from option dicts and their
``optimize_parameters`` timed side by side in one process on the same inputs. ``span``: the efficient student of
``options/train/SPAN`` (spandrel's SPAN, 48 channels) with the same SwinIR-M teacher, where the frozen networks
dominate the step:

* ``scratch``: BasicSR's ``SRModel``, L1 to GT;
* ``logits KD``: ``KDModel``, L1 to GT + L1 to the teacher output;
* ``DCKD exact``: ``DCKDModel`` as the paper's option file (Eq. 5 + Eq. 9, 4 degraded negatives + the LQ input), fp32;
* ``DCKD exact, channels_last``: the same with ``train.fast: {channels_last: true}`` (still fp32: the same math, the
  frozen networks' tensors in the memory layout the CPU convolutions prefer);
* ``DCKD fast``: the same with ``train.fast: {autocast: bf16, channels_last: true}`` (``--autocast fp16``: fp16):
  the frozen networks in bf16, the student and the losses in fp32;
* ``DCKD amp bf16`` / ``DCKD amp fp16``: ``{amp: bf16 | fp16, channels_last: true}``, the whole step under autocast
  (fp16 with the GradScaler; the row is left out where torch has no fp16 autocast on the device);
* ``DCKD compile``: ``{compile: true, channels_last: true}`` (fp32, compiled student, teacher, history model and
  encoder blocks); ``DCKD amp bf16 + compile``: both. Compilation happens in the warm-up steps, so give
  ``--warmup`` at least 1 (the compile rows take minutes to warm up on a CPU).

``--methods`` picks a subset of the rows (``logits KD`` and ``DCKD exact`` are always run: the ratios and the drift
are against them). Before the timings, each DCKD row's loss terms on the same inputs and the same weights are
printed next to ``DCKD exact``'s (relative difference per term): the drift a fast setting costs.

All use BasicSR's EMA (0.999) and Adam. Time per iteration is the median of ``--iters`` steps after ``--warmup``.
The DCKD exact step is broken down (student forward, teacher, negatives = degradations + history model, encoder
passes, loss arithmetic, backward, the rest = optimizer, EMA, logging) by timing the model's own methods. The floor
is the sum of the unavoidable parts, each timed alone: student forward + backward (L1), teacher forward, history model
on the (num_neg + 1) * B negatives, the encoder once on every sample (teacher output to the code logits, negatives to
the last tap) and the anchor's forward + backward through the encoder.

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` per method (reset in between). On CPU torch allocations are
invisible to tracemalloc, so each method runs again in a fresh subprocess (``--warmup`` + 1 steps) and reports
``VmHWM`` of ``/proc/self/status``, reset through ``/proc/self/clear_refs`` before the first step (the peak resident
set during the steps: Python, torch, weights and the step's own memory), and that peak minus the resident set just
before the first step (what the step itself adds). The child runs with ``MALLOC_MMAP_THRESHOLD_=65536``, so freed
tensors leave the resident set at once and the figures repeat to the MiB. ``ru_maxrss`` is not used: Linux carries
it over ``exec`` from the forking parent, which holds all models.
"""
import argparse
import contextlib
import copy
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from typing import Callable, Dict, List, Optional

import torch

from dckd_basicsr.archs.vqgan_arch import DEFAULT_DDCONFIG

BASE = dict(upscale=4, in_chans=3, img_size=48, window_size=8, img_range=1., mlp_ratio=2, upsampler='pixelshuffle',
            resi_connection='1conv', type='SwinIR')
RCAN = dict(type='RCAN', num_in_ch=3, num_out_ch=3, num_feat=64, num_group=10, upscale=4)
CONFIGS = {
    'swinir': dict(student=dict(BASE, embed_dim=60, depths=[6] * 4, num_heads=[6] * 4),
                   teacher=dict(BASE, embed_dim=180, depths=[6] * 6, num_heads=[6] * 6)),
    'rcan': dict(student=dict(RCAN, num_block=6), teacher=dict(RCAN, num_block=20)),
    'span': dict(student=dict(type='SPAN', num_in_ch=3, num_out_ch=3, feature_channels=48, upscale=4),
                 teacher=dict(BASE, embed_dim=180, depths=[6] * 6, num_heads=[6] * 6)),
}
VQGAN = dict(type='VQGAN', embed_dim=256, n_embed=1024, ddconfig=DEFAULT_DDCONFIG)  # taming's f16-1024
FAST = dict(autocast='bf16', channels_last=True)  # the 'DCKD fast' row; --autocast sets its precision
# DCKD row -> train.fast (None: exact fp32)
DCKD_FAST = {
    'DCKD exact': None,
    'DCKD exact, channels_last': dict(channels_last=True),
    'DCKD fast': FAST,
    'DCKD amp bf16': dict(amp='bf16', channels_last=True),
    'DCKD amp fp16': dict(amp='fp16', channels_last=True),
    'DCKD compile': dict(compile=True, channels_last=True),
    'DCKD amp bf16 + compile': dict(amp='bf16', channels_last=True, compile=True),
}
METHODS = ('scratch', 'logits KD') + tuple(DCKD_FAST)
BREAKDOWN = ('student fwd', 'teacher', 'negatives', 'encoder', 'losses', 'backward', 'rest')


def write_checkpoints(root: str, config: str) -> Dict[str, str]:
    import dckd_basicsr  # noqa: F401
    from basicsr.archs import build_network
    from dckd_basicsr.archs.vqgan_arch import VQGANEncoder
    torch.manual_seed(0)
    paths = {'teacher': os.path.join(root, f'{config}_teacher.pth'), 'vqgan': os.path.join(root, 'vqgan.pth')}
    torch.save({'params': build_network(copy.deepcopy(CONFIGS[config]['teacher'])).state_dict()}, paths['teacher'])
    if not os.path.exists(paths['vqgan']):
        vq_opt = {k: v for k, v in VQGAN.items() if k != 'type'}
        torch.save({'state_dict': VQGANEncoder(**vq_opt).state_dict()}, paths['vqgan'])
    return paths


def options(method: str, config: str, files: Dict[str, str], root: str, device: str,
            negatives_per_pass: Optional[int] = None) -> dict:
    train = dict(ema_decay=0.999, optim_g=dict(type='Adam', lr=1e-4, betas=[0.9, 0.99]),
                 scheduler=dict(type='MultiStepLR', milestones=[250000], gamma=0.5), pixel_opt=dict(type='L1Loss'))
    opt = dict(is_train=True, dist=False, num_gpu=0 if device == 'cpu' else 1, rank=0, world_size=1, manual_seed=0,
               scale=4, model_type='SRModel', network_g=copy.deepcopy(CONFIGS[config]['student']),
               path=dict(models=os.path.join(root, 'models'), training_states=os.path.join(root, 'states')),
               train=train, val=dict(metrics={}))
    if method != 'scratch':
        opt['model_type'] = 'KDModel'
        opt['network_t'] = copy.deepcopy(CONFIGS[config]['teacher'])
        opt['path'].update(pretrain_network_t=files['teacher'])
        train['logits_opt'] = dict(type='L1Loss')
    if method.startswith('DCKD'):
        opt.update(model_type='DCKDModel', network_his=True, network_vqgan=copy.deepcopy(VQGAN))
        opt['path'].update(pretrain_network_vqgan=files['vqgan'], param_key_vqgan='state_dict')
        train.update(cl_opt=dict(type='ContrasLoss', d_func='L1', loss_weight=0.1,
                                 weights=[1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0]),
                     ce_opt=dict(type='DistributionMappingLoss', loss_weight=0.001), num_neg=4, gaussian_noise_prob=1,
                     gray_noise_prob=0.5, update_decay=0.1, step=[1000, 2000, 3000])
        if DCKD_FAST[method]:
            train['fast'] = dict(DCKD_FAST[method])
        if negatives_per_pass:
            train.setdefault('fast', {})['negatives_per_pass'] = negatives_per_pass
    return opt


def build(method: str, config: str, files: Dict[str, str], root: str, device: str, negatives_per_pass=None):
    import dckd_basicsr  # noqa: F401
    from basicsr.models import build_model
    torch.manual_seed(0)
    return build_model(options(method, config, files, root, device, negatives_per_pass))


def inputs(batch: int, lq: int, device: str, seed: int = 0) -> Dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    data = {'lq': torch.rand(batch, 3, lq, lq, generator=generator),
            'gt': torch.rand(batch, 3, 4 * lq, 4 * lq, generator=generator)}
    return {key: value.to(device) for key, value in data.items()}


def sync(device: str) -> None:
    if device.startswith('cuda'):
        torch.cuda.synchronize()


def step_time(model, data: Dict[str, torch.Tensor], iteration: int, device: str) -> float:
    model.feed_data(data)
    sync(device)
    start = time.perf_counter()
    model.optimize_parameters(iteration)
    sync(device)
    return time.perf_counter() - start


def median_time(fn: Callable[[], None], warmup: int, iters: int, device: str) -> float:
    times = []
    for index in range(warmup + iters):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        if index >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


class Timers:
    """Inclusive wall times of wrapped callables, summed per name over one step."""

    def __init__(self, device: str):
        self.device = device
        self.totals = defaultdict(float)

    def wrap(self, name: str, fn: Callable) -> Callable:

        def timed(*args, **kwargs):
            sync(self.device)
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                sync(self.device)
                self.totals[name] += time.perf_counter() - start

        return timed


@contextlib.contextmanager
def instrumented(model, timers: Timers):
    """Time the parts of a DCKD step through the model's own methods (restored afterwards)."""
    from dckd_basicsr.losses.dcl_loss import NegativeDistances
    patched = {name: getattr(model, name) for name in ('run_teacher', 'restore_negatives', 'encode', 'compute_losses')}
    for name, label in (('run_teacher', 'teacher'), ('restore_negatives', 'negatives'), ('encode', 'encoder'),
                        ('compute_losses', 'compute_losses')):
        setattr(model, name, timers.wrap(label, patched[name]))
    original_add, original_backward = NegativeDistances.add, torch.Tensor.backward
    NegativeDistances.add = timers.wrap('distances', original_add)
    torch.Tensor.backward = timers.wrap('backward', original_backward)
    state = {}

    def pre_hook(module, args):
        sync(timers.device)
        state['start'] = time.perf_counter()

    def post_hook(module, args, output):
        sync(timers.device)
        timers.totals['student fwd'] += time.perf_counter() - state['start']

    hooks = [model.net_g.register_forward_pre_hook(pre_hook), model.net_g.register_forward_hook(post_hook)]
    try:
        yield
    finally:
        for name in patched:
            delattr(model, name)
        NegativeDistances.add, torch.Tensor.backward = original_add, original_backward
        for hook in hooks:
            hook.remove()


def breakdown(model, data, warmup: int, iters: int, device: str) -> Dict[str, float]:
    """Median over steps of each part of the DCKD step (see the module docstring)."""
    parts = defaultdict(list)
    for index in range(warmup + iters):
        timers = Timers(device)
        with instrumented(model, timers):
            total = step_time(model, data, 1000 + index, device)
        t = timers.totals
        # the Eq. 5 denominators are accumulated inside the encoder passes: count them as losses
        encoder = t['encoder'] - t['distances']
        row = {'student fwd': t['student fwd'], 'teacher': t['teacher'], 'negatives': t['negatives'],
               'encoder': encoder, 'losses': t['compute_losses'] - t['negatives'] - encoder,
               'backward': t['backward']}
        row['rest'] = total - sum(row.values())
        row['total'] = total
        if index >= warmup:
            for key, value in row.items():
                parts[key].append(value)
    return {key: statistics.median(values) for key, values in parts.items()}


def floor_functions(model, data) -> Dict[str, Callable[[], None]]:
    """The unavoidable parts of a DCKD step, each a callable on the DCKD model's own networks."""
    from torch.nn import functional as F
    lq, gt = data['lq'], data['gt']
    batch = lq.size(0)
    net_g, encoder = model.net_g, model.net_vqgan
    with torch.no_grad():
        output_t = model.net_t(lq)
        negatives_in = model.negatives(lq)
        negatives = model.net_his(negatives_in)

    def student():
        net_g.zero_grad(set_to_none=True)
        F.l1_loss(net_g(lq), gt).backward()

    def teacher():
        with torch.no_grad():
            model.net_t(lq)

    def history():
        with torch.no_grad():
            model.net_his(negatives_in)

    def frozen_encoder():
        with torch.no_grad():
            encoder.encode(torch.cat([output_t, negatives]), full_rows=batch)

    anchor_in = output_t.clone()

    def anchor():
        x = anchor_in.detach().requires_grad_(True)
        taps, logits = encoder.encode(x)
        (sum(tap.mean() for tap in taps) + logits.mean()).backward()

    return {'student fwd+bwd': student, 'teacher fwd': teacher, 'history on negatives': history,
            'encoder: positive + negatives (no grad)': frozen_encoder, 'encoder: anchor fwd+bwd': anchor}


def count_flops(fn: Callable[[], None]) -> int:
    """FLOPs of the matrix products and convolutions ``fn`` runs (``torch.utils.flop_counter``; elementwise work,
    normalisations and the optimizer are not counted)."""
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def matmul_rate(device: str, size: int = 2048, iters: int = 5) -> float:
    """FLOP/s of a square fp32 matrix product: what this device reaches on the best-suited work."""
    a, b = (torch.rand(size, size, device=device) for _ in range(2))
    return 2 * size**3 / median_time(lambda: torch.mm(a, b), 1, iters, device)


def proc_status(key: str) -> int:
    """``VmRSS`` (resident now) or ``VmHWM`` (peak resident set of this process image) in bytes."""
    with open('/proc/self/status') as handle:
        for line in handle:
            if line.startswith(key + ':'):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def memory_child(method: str, config: str, args) -> None:
    """Run in a fresh process: build one method, run warmup + 1 steps, print the RSS figures as JSON."""
    batch, lq, warmup, root = args.batch, args.lq, args.warmup, args.root
    files = write_checkpoints(root, config)
    model = build(method, config, files, root, 'cpu', args.negatives_per_pass)
    data = inputs(batch, lq, 'cpu')
    with open('/proc/self/clear_refs', 'w') as handle:
        handle.write('5')  # reset VmHWM, so the peak is that of the steps, not of building the model
    before = proc_status('VmRSS')
    for index in range(warmup + 1):
        step_time(model, data, 1000 + index, 'cpu')
    peak = proc_status('VmHWM')
    print(json.dumps({'peak': peak, 'step': peak - before}))


def cpu_memory(method: str, config: str, args, root: str) -> Dict[str, int]:
    command = [sys.executable, os.path.abspath(__file__), '--memory-child', method, '--configs', config,
               '--batch', str(args.batch), '--lq', str(args.lq), '--warmup', str(args.warmup), '--root', root,
               '--threads', str(torch.get_num_threads()), '--autocast', FAST['autocast']]
    if args.negatives_per_pass:
        command += ['--negatives-per-pass', str(args.negatives_per_pass)]
    # A fixed mmap threshold makes glibc map every block above 64 KiB on its own and unmap it when freed, so the
    # resident set follows the live tensors: the peak is the same to the MiB from run to run (with glibc's default
    # sliding threshold, freed blocks stay in the heap and the peak moved by about 100 MiB between runs).
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_='65536')
    result = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
    return json.loads(result.stdout.strip().splitlines()[-1])


def cuda_memory(model, data, device: str) -> Dict[str, int]:
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    step_time(model, data, 2000, device)
    peak = torch.cuda.max_memory_allocated()
    return {'peak': peak, 'step': peak - base}


def mib(value: float) -> str:
    return f'{value / 2**20:.0f}'


def run_config(config: str, args, root: str) -> List[str]:
    device = args.device
    files = write_checkpoints(root, config)
    data = inputs(args.batch, args.lq, device)
    methods = args.methods
    models = {method: build(method, config, files, root, device, args.negatives_per_pass) for method in methods}
    # the drift first, while every model still has the weights it was built with
    drift = drift_lines(config, args, {m: model for m, model in models.items() if m.startswith('DCKD')}, data)
    # interleave the methods so load changes on a shared machine hit them alike
    times = defaultdict(list)
    for index in range(args.warmup + args.iters):
        for method, model in models.items():
            elapsed = step_time(model, data, 1000 + index, device)
            if index >= args.warmup:
                times[method].append(elapsed)
    step = {method: statistics.median(values) for method, values in times.items()}
    # the models are warm by now
    broken_down = [method for method in ('DCKD exact', 'DCKD fast', 'DCKD amp bf16') if method in models]
    parts = {method: breakdown(models[method], data, 0, args.iters, device) for method in broken_down}
    floor_fns = floor_functions(models['DCKD exact'], data)
    floor = {name: median_time(fn, 1, args.iters, device) for name, fn in floor_fns.items()}
    floor_total = sum(floor.values())
    flops = {name: count_flops(fn) for name, fn in floor_fns.items()}
    kd_model = models['logits KD']
    flops['logits KD step'] = count_flops(lambda: step_time(kd_model, data, 3000, device))
    peak_rate = matmul_rate(device)
    if device == 'cpu':
        memory = {method: cpu_memory(method, config, args, root) if not args.no_memory else None
                  for method in methods}
        memory_note = ('peak resident set (VmHWM of a fresh process per method, which ran warm-up + 1 steps) / that '
                       'peak minus the resident set just before the first step')
    else:
        memory = {method: cuda_memory(model, data, device) for method, model in models.items()}
        memory_note = 'torch.cuda.max_memory_allocated / minus memory allocated before the step'
    kd = step['logits KD']
    lines = [f'### {config} x4, batch {args.batch}, LQ {args.lq}x{args.lq} (GT {4 * args.lq}x{4 * args.lq}), '
             f'{device}' + (f', negatives_per_pass {args.negatives_per_pass}' if args.negatives_per_pass else ''), '',
             f'| method | step s (median of {args.iters}) | / logits KD | peak MiB | step MiB | peak / logits KD |',
             '|---|---|---|---|---|---|']
    for method in methods:
        if memory[method] is None:
            figures = '- | - | -'
        else:
            figures = (f"{mib(memory[method]['peak'])} | {mib(memory[method]['step'])} | "
                       f"{memory[method]['peak'] / memory['logits KD']['peak']:.2f}x")
        lines.append(f"| {method} | {step[method]:.3f} | {step[method] / kd:.2f}x | {figures} |")
    lines += ['', f'Memory: {memory_note}.' if not args.no_memory else 'Memory: not measured (--no-memory).', '',
              '| DCKD step part | ' + ' | '.join(f'{method} s' for method in broken_down) + ' |',
              '|---|' + '---|' * len(broken_down)]
    for part in BREAKDOWN + ('total', ):
        lines.append(f'| {part} | ' + ' | '.join(f'{parts[method][part]:.3f}' for method in broken_down) + ' |')
    lines += ['', f'| floor part (timed alone) | s | GFLOP | GFLOP/s | / fp32 matmul ({peak_rate / 1e9:.0f} GFLOP/s) |',
              '|---|---|---|---|---|']
    for part, value in list(floor.items()) + [('logits KD step', kd)]:
        rate = flops[part] / value
        lines.append(f'| {part} | {value:.3f} | {flops[part] / 1e9:.1f} | {rate / 1e9:.1f} | {rate / peak_rate:.0%} |')
    floor_flops = sum(flops[part] for part in floor)
    fastest = min((method for method in step if method.startswith('DCKD')), key=step.get)
    lines += [f'| **floor** | **{floor_total:.3f}** | **{floor_flops / 1e9:.1f}** | {floor_flops / floor_total / 1e9:.1f}'
              f' | {floor_flops / floor_total / peak_rate:.0%} |', '',
              f"DCKD exact / floor: {step['DCKD exact'] / floor_total:.2f}x (instrumented total "
              f"{parts['DCKD exact']['total'] / floor_total:.2f}x); fastest DCKD row ({fastest}) / floor: "
              f"{step[fastest] / floor_total:.2f}x, / logits KD: {step[fastest] / kd:.2f}x. "
              f"Floor / logits KD: {floor_total / kd:.2f}x in time, {floor_flops / flops['logits KD step']:.2f}x in "
              'FLOPs.']
    encoder_parts = [part for part in floor if part.startswith('encoder')]
    budget = 4.5 * kd - sum(floor[part] for part in floor if part not in encoder_parts)
    encoder_flops = sum(flops[part] for part in encoder_parts)
    lines += [f'For a step of 4.5x logits KD even at the floor, the encoder parts ({encoder_flops / 1e9:.0f} GFLOP) '
              f'would have to run in {budget:.2f} s, at {encoder_flops / max(budget, 1e-9) / 1e9:.0f} GFLOP/s '
              f'({encoder_flops / max(budget, 1e-9) / peak_rate:.0%} of the fp32 matmul rate); they run at '
              f'{encoder_flops / sum(floor[part] for part in encoder_parts) / 1e9:.0f} GFLOP/s.', '']
    return drift + lines


def loss_values(model, data) -> Dict[str, float]:
    """One step's loss terms on ``data`` (no update), under the model's ``train.fast`` precision."""
    model.feed_data(data)
    with model.model_random_stream(), torch.no_grad(), model.precision.step_autocast():
        model.output = model.net_g(model.lq).float()
        model.run_teacher()
        return {key: value.item() for key, value in model.compute_losses(1).items()}


def drift_lines(config: str, args, models: Dict[str, object], data) -> List[str]:
    """Each DCKD row's loss terms against ``DCKD exact``'s on the same inputs (relative difference per term).

    The models are built from the same seed, so student, history model, teacher, encoder and the negatives' random
    draws are the same; only the ``train.fast`` settings differ.
    """
    values = {method: loss_values(model, data) for method, model in models.items()}
    exact = values['DCKD exact']
    others = [method for method in values if method != 'DCKD exact']
    lines = [f'### {config} x4: loss terms, fp32 (DCKD exact) vs each fast row, relative difference (batch '
             f'{args.batch}, LQ {args.lq}, {args.device})', '',
             '| term | fp32 | ' + ' | '.join(others) + ' |', '|---|---|' + '---|' * len(others)]
    for key, value in exact.items():
        lines.append(f'| {key} | {value:.6g} | ' +
                     ' | '.join(f'{abs(values[m][key] - value) / abs(value):.2e}' for m in others) + ' |')
    return lines + ['']


def loss_difference(config: str, args, root: str) -> List[str]:
    """``--loss-diff``: only :func:`drift_lines`, for the DCKD rows of ``--methods``."""
    files = write_checkpoints(root, config)
    data = inputs(args.batch, args.lq, args.device)
    models = {method: build(method, config, files, root, args.device) for method in args.methods
              if method.startswith('DCKD')}
    return drift_lines(config, args, models, data)


def header(args) -> List[str]:
    now = datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')
    if args.device.startswith('cuda'):
        hardware = torch.cuda.get_device_name()
    else:
        hardware = f'{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores visible'
    load = ', '.join(f'{value:.2f}' for value in os.getloadavg())
    return [f'Run: {now}. Hardware: {hardware}; torch {torch.__version__}, {torch.get_num_threads()} threads. '
            f'Load average (1, 5, 15 min) at start: {load}. Command: `python benchmarks/bench_step.py '
            f'{" ".join(sys.argv[1:])}`.', '']


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--configs', nargs='+', default=['swinir', 'rcan'], choices=sorted(CONFIGS))
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--lq', type=int, default=32, help='LQ patch size; GT is 4x (a multiple of 16 for the VQGAN)')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--negatives-per-pass', type=int,
                        help='train.fast.negatives_per_pass of both DCKD rows (default: the model\'s, 1)')
    parser.add_argument('--autocast', default='bf16', choices=['bf16', 'fp16'], help='train.fast.autocast of DCKD fast')
    parser.add_argument('--threads', type=int, help='torch threads (default: torch\'s choice); children inherit it')
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--iters', type=int, default=3)
    parser.add_argument('--methods', nargs='+', choices=METHODS, default=list(METHODS),
                        help='rows to run (logits KD and DCKD exact always run); default: all')
    parser.add_argument('--no-memory', action='store_true',
                        help='skip the peak-memory runs (on CPU a fresh process per row: minutes for compile rows)')
    parser.add_argument('--loss-diff', action='store_true',
                        help='only compare the loss terms of DCKD exact and each other DCKD row on one batch')
    parser.add_argument('--append', help='append the table to this markdown file (e.g. benchmarks/RESULTS.md)')
    parser.add_argument('--memory-child', help=argparse.SUPPRESS)
    parser.add_argument('--root', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    FAST['autocast'] = args.autocast
    args.methods = [m for m in METHODS if m in set(args.methods) | {'logits KD', 'DCKD exact'}]
    if 'DCKD amp fp16' in args.methods:
        from dckd_basicsr.training.precision import fp16_supported
        if not fp16_supported(torch.device(args.device)):
            print(f'DCKD amp fp16: left out, torch {torch.__version__} has no fp16 autocast on {args.device}.')
            args.methods.remove('DCKD amp fp16')
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        memory_child(args.memory_child, args.configs[0], args)
        return
    with tempfile.TemporaryDirectory() as root:
        lines = header(args)
        print('\n'.join(lines), flush=True)
        for config in args.configs:
            config_lines = loss_difference(config, args, root) if args.loss_diff else run_config(config, args, root)
            print('\n'.join(config_lines), flush=True)
            lines += config_lines
    if args.append:
        with open(args.append, 'a') as handle:
            handle.write('\n' + '\n'.join(lines) + '\n')


if __name__ == '__main__':
    main()
