"""``dckd-train -opt FILE --smoke [--stand-in]``: any training option file for a few iterations on CPU.

A smoke run shows that an option file, its data and its checkpoints go through the whole pipeline (data loading,
teacher and encoder loading, every loss term, a checkpoint, validation) before GPUs are rented. It changes only
the run's length and size, never the networks or the losses:

* run name ``smoke_<name>`` (its own ``experiments/`` folder), ``num_gpu: 0``, single process;
* :data:`SMOKE_ITERS` iterations, a checkpoint and a validation at the end, a log line every iteration, no
  TensorBoard or wandb;
* training batch 2, no workers, a small patch that fits the scale, the networks' ``window_size`` and the VQGAN
  stride (:func:`smoke_patch`); Restormer's progressive patches become two stages of that patch (batch 2, then 1);
* validation on one image per set (the smallest file of a folder set, through a ``meta_info_file`` written in the
  run folder; LMDB sets are used whole).

Data are still needed: the user's own or those ``datasets_prep`` builds; the preflight names what is missing.

The console shows what a user needs (:func:`quiet_console`): the preflight's result, one line per stage (data, each
network and loss built or loaded), the losses of every iteration, the checkpoint and the validation; BasicSR's
version banner, its option dump and the network printouts go to the log file only. The run ends with where its
folder and log are and, again, that stand-ins were used and that its metrics mean nothing
(:func:`closing_lines`).
With ``--stand-in``, a missing ``path.pretrain_network_t`` or ``path.pretrain_network_vqgan`` is replaced by a
randomly initialised network of the option file's architecture, announced on the console and in the log, and
written only inside the smoke run's folder (``<run>/stand_ins/``), never where the real checkpoint is expected.
"""
import atexit
import logging
import math
import os
import sys
import time
from os import path as osp
from typing import Any, Dict, List, Optional, Tuple

from dckd_basicsr.errors import OptionError
from dckd_basicsr.integration.option_checks import encoder_size_multiple
from dckd_basicsr.options import network_in_channels

SMOKE_ITERS = 3
SMOKE_BATCH = 2
# path keys whose missing file --stand-in replaces, with the network block each belongs to
STAND_IN_NETWORKS = {'pretrain_network_t': 'network_t', 'pretrain_network_vqgan': 'network_vqgan'}
FORMAT_KEYS = {'pretrain_network_t': ('teacher_format', 'param_key_t', 'strict_load_t'),
               'pretrain_network_vqgan': ('vqgan_format', 'param_key_vqgan', 'strict_load_vqgan')}
IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')
# Log records of more lines than this are dumps (version banner, options, network printouts): log file only.
CONSOLE_MAX_LINES = 6


def smoke_patch(opt: Dict[str, Any]) -> int:
    """The smallest GT patch of at least 32 pixels whose LQ side is a multiple of 8 (Restormer's three downsamplings),
    of every network's ``window_size`` (SwinIR) and, for DUKD's zoom-out, of the scale, and whose GT side is a
    multiple of the VQGAN stride."""
    scale = int(opt.get('scale') or 1)
    lq_multiple = 8
    for key, net_opt in opt.items():
        if key.startswith('network_') and isinstance(net_opt, dict) and isinstance(net_opt.get('window_size'), int):
            lq_multiple = lq_multiple * net_opt['window_size'] // math.gcd(lq_multiple, net_opt['window_size'])
    if ((opt.get('train') or {}).get('dukd_opt') or {}).get('zoom_out'):  # DUKD downscales the LQ patch by scale
        lq_multiple = lq_multiple * scale // math.gcd(lq_multiple, scale)
    encoder = encoder_size_multiple(opt)
    lq = lq_multiple
    while scale * lq < 32 or (scale * lq) % encoder:
        lq += lq_multiple
    return scale * lq


def apply_smoke_options(opt: Dict[str, Any]) -> List[str]:
    """Turn parsed training options into a smoke run's, in place (see the module docstring); returns what changed,
    one line each, for the console."""
    opt['name'] = opt['name'] if opt['name'].startswith('smoke_') else f"smoke_{opt['name']}"
    opt['num_gpu'] = 0
    patch = smoke_patch(opt)
    train_opt = opt.setdefault('train', {})
    train_opt['total_iter'] = SMOKE_ITERS
    train_opt['warmup_iter'] = -1
    logger_opt = opt.setdefault('logger', {})
    logger_opt.update(print_freq=1, save_checkpoint_freq=SMOKE_ITERS, use_tb_logger=False)
    if isinstance(logger_opt.get('wandb'), dict):
        logger_opt['wandb']['project'] = None
    if isinstance(opt.get('val'), dict):
        opt['val'].update(val_freq=SMOKE_ITERS, save_img=False)
    for phase, dataset_opt in (opt.get('datasets') or {}).items():
        if not isinstance(dataset_opt, dict):
            continue
        dataset_opt['num_worker_per_gpu'] = 0
        dataset_opt['prefetch_mode'] = None
        dataset_opt['pin_memory'] = False
        if phase == 'train':
            dataset_opt.update(gt_size=patch, batch_size_per_gpu=SMOKE_BATCH, dataset_enlarge_ratio=1)
            if dataset_opt.get('gt_sizes'):  # Restormer's progressive patches: two stages of the smoke patch
                dataset_opt.update(gt_sizes=[patch, patch], mini_batch_sizes=[SMOKE_BATCH, 1],
                                   iters=[1, SMOKE_ITERS - 1])
    return [f"smoke run {opt['name']}: {SMOKE_ITERS} iterations on CPU, batch {SMOKE_BATCH}, {patch} px GT patches, "
            'no workers, validation on one image per set at the end; the networks are those of the option file.']


def stand_in_keys(opt: Dict[str, Any]) -> List[str]:
    """``path`` keys of a teacher or VQGAN whose network is configured but whose checkpoint is not there."""
    path_opt = opt.get('path') or {}
    return [key for key, network in STAND_IN_NETWORKS.items()
            if isinstance(opt.get(network), dict) and not (isinstance(path_opt.get(key), str) and
                                                             osp.isfile(path_opt[key]))]


def preflight_note(stand_in: bool) -> str:
    """The last line of a smoke run's preflight message."""
    note = ('A smoke run still needs data: build it with the datasets_prep command named above, or point the dataset '
            'at your own folders (--force_yml datasets:train:dataroot_gt=PATH datasets:train:dataroot_lq=PATH), or '
            'drop a validation set (--force_yml datasets:val_3=~).')
    if not stand_in:
        note += (' A missing teacher or VQGAN checkpoint can be replaced by random weights for this smoke run with '
                 '--stand-in.')
    return note


def stand_in_path(opt: Dict[str, Any], key: str) -> str:
    """Where the stand-in for ``path.<key>`` is written: inside the smoke run's own folder."""
    return osp.join(opt['path']['experiments_root'], 'stand_ins', f"net_{key[len('pretrain_network_'):]}_random.pth")


def announce_stand_ins(opt: Dict[str, Any], keys: List[str]) -> str:
    """The loud notice for the console and the log."""
    lines = ['#' * 100,
             '# SMOKE RUN WITH RANDOMLY INITIALISED STAND-INS (--stand-in): its losses and metrics mean nothing.']
    for key in keys:
        given = (opt.get('path') or {}).get(key)
        lines.append(f'#   path.{key}: {given or "not set"} is missing; a RANDOM {STAND_IN_NETWORKS[key]} stands in, '
                     f'written to {stand_in_path(opt, key)}')
    lines.append('#' * 100)
    return '\n'.join(lines)


def _smallest_image(folder: str) -> str:
    names = [entry for entry in os.scandir(folder)
             if entry.is_file() and entry.name.lower().endswith(IMAGE_EXTENSIONS)]
    return min(names, key=lambda entry: (entry.stat().st_size, entry.name)).name if names else ''


def prepare_run(opt: Dict[str, Any]) -> None:
    """Write what a smoke run needs inside its own folder, once BasicSR has created it: the one-image
    ``meta_info_file`` of every folder validation set and, with ``--stand-in``, the stand-in checkpoints (the options
    are pointed at them). Called by the patched ``create_train_val_dataloader``; does nothing for other runs."""
    smoke = opt.get('smoke')
    if not smoke:
        return
    announce_end(opt)
    import torch
    from basicsr.archs import build_network
    from basicsr.utils import get_root_logger
    logger = get_root_logger()
    run_root = opt['path']['experiments_root']
    for phase, dataset_opt in (opt.get('datasets') or {}).items():
        if phase == 'train' or not isinstance(dataset_opt, dict) or dataset_opt.get('meta_info_file') or \
                (dataset_opt.get('io_backend') or {}).get('type', 'disk') != 'disk' or \
                not isinstance(dataset_opt.get('dataroot_gt'), str):
            continue
        name = _smallest_image(dataset_opt['dataroot_gt'])
        if name:
            meta = osp.join(run_root, 'smoke_inputs', f'{phase}_meta_info.txt')
            os.makedirs(osp.dirname(meta), exist_ok=True)
            with open(meta, 'w') as f:
                f.write(f'{name}\n')
            dataset_opt['meta_info_file'] = meta
            logger.info(f'Smoke run: datasets.{phase} validates on {name} only.')
    keys = smoke.get('stand_ins') or []
    if keys:  # the console has had it from the preflight; the log gets it here
        logger.warning('\n' + announce_stand_ins(opt, keys), extra={'log_only': True})
    for key in keys:
        target = stand_in_path(opt, key)
        os.makedirs(osp.dirname(target), exist_ok=True)
        net_opt, fmt_value = stand_in_network(opt, key)
        with torch.random.fork_rng(devices=[]):  # the run's own random streams stay as seeded
            torch.manual_seed(int(opt.get('manual_seed') or 0))
            net = build_network(net_opt)
        torch.save({'params': net.state_dict()}, target)
        fmt, param_key, strict = FORMAT_KEYS[key]
        opt['path'].update({key: target, fmt: fmt_value, param_key: 'params', strict: True})


def stand_in_network(opt: Dict[str, Any], key: str) -> Tuple[Dict[str, Any], str]:
    """The network block a stand-in for ``path.<key>`` is built from, and the checkpoint format it is read in: the
    option file's own block; for a ``SpandrelTeacher``, which spandrel builds from its file, a registered spandrel
    arch of the ``architecture`` it names (SPAN when it names none) at the run's scale, with the student's input
    channels, read by spandrel."""
    block = dict(opt[STAND_IN_NETWORKS[key]])
    if block.get('type') != 'SpandrelTeacher':
        return block, 'basicsr'
    from dckd_basicsr.archs.spandrel_students_arch import network_of_package
    package = block.get('architecture') or 'SPAN'
    net_opt = network_of_package(package, int(opt.get('scale') or 1), network_in_channels(opt.get('network_g') or {}))
    if net_opt is None:
        raise OptionError(f'network_t.architecture: {package}: --stand-in has no registered spandrel arch of that '
                          f'architecture at x{opt.get("scale")} to stand in for {block.get("type")}; give the '
                          'teacher file (--force_yml path:pretrain_network_t=FILE).')
    return net_opt, 'auto'


class ConsoleDigest(logging.Filter):
    """A console handler's filter for smoke runs: dumps (INFO records of more than :data:`CONSOLE_MAX_LINES` lines)
    and records logged with ``extra={'log_only': True}`` are left to the log file; the first dump is replaced by one
    line saying so."""

    def __init__(self, log_file: Optional[str]):
        super().__init__()
        self.log_file = log_file
        self.noted = False

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, 'log_only', False):
            return False
        if record.levelno > logging.INFO or str(record.msg).count('\n') < CONSOLE_MAX_LINES:
            return True
        if not self.noted:
            self.noted = True
            where = self.log_file or 'the log file'
            print(f'Smoke run: the version banner, the options and the network printouts are in {where} only.',
                  file=sys.stderr, flush=True)
        return False


class InstallConsoleDigest(logging.Filter):
    """A filter on BasicSR's logger that gives its console handlers a :class:`ConsoleDigest` as soon as they exist
    (BasicSR creates them with its first log record, after the options are parsed); it filters nothing itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        logger = logging.getLogger('basicsr')
        files = [h.baseFilename for h in logger.handlers if isinstance(h, logging.FileHandler)]
        for handler in logger.handlers:
            if not isinstance(handler, logging.FileHandler) and \
                    not any(isinstance(f, ConsoleDigest) for f in handler.filters):
                handler.addFilter(ConsoleDigest(files[0] if files else None))
        return True


def quiet_console() -> None:
    """Smoke runs: dumps go to the log file only (see :class:`ConsoleDigest`)."""
    logger = logging.getLogger('basicsr')
    if not any(isinstance(f, InstallConsoleDigest) for f in logger.filters):
        logger.addFilter(InstallConsoleDigest())


def closing_lines(opt: Dict[str, Any], finished: bool, seconds: float, log_file: Optional[str]) -> str:
    """What a smoke run says last: where its folder and log are, and what its numbers are worth."""
    run_root = opt['path']['experiments_root']
    log = f' (log: {log_file})' if log_file else ''
    if not finished:
        return f'Smoke run {opt["name"]} stopped before its last iteration; its folder is {run_root}{log}.'
    lines = [f'Smoke run {opt["name"]} done in {seconds:.0f} s: the option file runs end to end. Run folder: '
             f'{run_root}{log}.',
             f'Its losses and metrics come from {SMOKE_ITERS} iterations on tiny patches and mean nothing.']
    keys = (opt.get('smoke') or {}).get('stand_ins') or []
    if keys:
        lines.append('It used RANDOMLY INITIALISED STAND-INS for ' + ', '.join(
            f'{STAND_IN_NETWORKS[key]} (path.{key})' for key in keys) + ': a real run needs those checkpoints.')
    return '\n'.join(lines)


def announce_end(opt: Dict[str, Any]) -> None:
    """Print :func:`closing_lines` when the process ends (the run finished when its latest checkpoint exists)."""
    start = time.perf_counter()

    def report() -> None:
        logger = logging.getLogger('basicsr')
        files = [h.baseFilename for h in logger.handlers if isinstance(h, logging.FileHandler)]
        models = opt['path']['models']
        finished = osp.isdir(models) and any(name.startswith('net_g_latest') for name in os.listdir(models))
        print(closing_lines(opt, finished, time.perf_counter() - start, files[0] if files else None), flush=True)

    atexit.register(report)
