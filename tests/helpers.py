"""Helpers every test file imports (``from helpers import ...``): tiny paired image folders made with cv2, the tiny
networks, BasicSR options, subprocess runners. Fixtures and pytest hooks are in ``conftest.py``.

Every test runs on CPU with data generated in a tmp dir; nothing here reads ../shared/data.

- Networks: ``tests/data/tiny_networks.yml`` holds every tiny network block (:func:`tiny_network`), and
  ``tests/data/table1_networks.yml`` the paper's full-size ones with their sizes (:data:`TABLE1`).
- Options, one builder per kind: :func:`sr_train_options` (an SR run through the entry points),
  :func:`dckd_train_options` (the same run as DCKD), :func:`kd_options` and :func:`dckd_options` (a KD or DCKD
  model built in-process with ``build_model``; :func:`in_process` turns a run's options into such a model's).
"""
import contextlib
import copy
import functools
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import cv2
import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / 'data'
PYTHON = sys.executable
BIN = Path(PYTHON).parent


@functools.lru_cache(maxsize=None)
def _data_file(name: str) -> dict:
    return yaml.safe_load((DATA / name).read_text())


def tiny_network(name: str, **overrides: Any) -> dict:
    """A fresh copy of the tiny network block ``name`` of ``tests/data/tiny_networks.yml``, with ``overrides``."""
    net = copy.deepcopy(_data_file('tiny_networks.yml')[name])
    net.update(overrides)
    return net


def arch_args(net_opt: dict) -> dict:
    """A network block without its ``type``: the keyword arguments of the arch class itself."""
    return {k: v for k, v in net_opt.items() if k != 'type'}


def tiny_swinir(role: str, rstbs: int = 1) -> dict:
    """The tiny SwinIR ``role`` (student: 8 channels, teacher: 16) with ``rstbs`` residual Swin blocks."""
    return tiny_network(f'swinir_{role}', depths=[1] * rstbs, num_heads=[2] * rstbs)


def tiny_rcan(groups: int) -> dict:
    """The tiny RCAN student with ``groups`` residual groups."""
    return tiny_network('rcan_student', num_group=groups)


# (backbone, role) -> (network block, Table 1 size in millions, exact parameter count)
TABLE1 = {(backbone, role): (entry['network'], entry['millions'], entry['params'])
          for backbone, roles in _data_file('table1_networks.yml').items() for role, entry in roles.items()}


@functools.lru_cache(maxsize=None)
def _count_built(opt_json: str) -> int:
    import json

    from basicsr.archs import build_network

    from dckd_basicsr.archs.arch_util import count_parameters  # importing the plugin registers its archs
    return count_parameters(build_network(json.loads(opt_json)))


def count_built(opt: dict) -> int:
    """Parameters of ``build_network(opt)``; each configuration is built once per test session."""
    import json
    return _count_built(json.dumps(opt, sort_keys=True))


def generator_module():
    """``options/generate_sr_options.py``, the generator of the SR option files, imported as a module."""
    import importlib.util
    spec = importlib.util.spec_from_file_location('generate_sr_options', REPO / 'options' / 'generate_sr_options.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_pairs(root: Path, count: int = 4, size: int = 48, scale: int = 2, seed: int = 0) -> Dict[str, str]:
    """Write ``count`` smooth random HR images and their x``scale`` downscaled LR images as PNG folders."""
    rng = np.random.default_rng(seed)
    hr_dir, lr_dir = root / 'hr', root / 'lr'
    hr_dir.mkdir(parents=True, exist_ok=True)
    lr_dir.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        hr = cv2.GaussianBlur(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), (5, 5), 1.5)
        cv2.imwrite(str(hr_dir / f'{i:04d}.png'), hr)
        cv2.imwrite(str(lr_dir / f'{i:04d}.png'), cv2.resize(hr, (size // scale, size // scale),
                                                               interpolation=cv2.INTER_AREA))
    return {'gt': str(hr_dir), 'lq': str(lr_dir)}


def sr_train_options(data: Dict[str, str], name: str = 'toy_sr', total_iter: int = 10, **updates: Any) -> dict:
    """A complete BasicSR training option dict for a tiny MSRResNet x2 on the folders of :func:`make_pairs`."""
    opt = {
        'name': name,
        'model_type': 'SRModel',
        'scale': 2,
        'num_gpu': 0,
        'manual_seed': 0,
        'datasets': {
            'train': {
                'name': 'toy', 'type': 'PairedImageDataset', 'dataroot_gt': data['gt'], 'dataroot_lq': data['lq'],
                'io_backend': {'type': 'disk'}, 'gt_size': 32, 'use_hflip': True, 'use_rot': True,
                'num_worker_per_gpu': 0, 'batch_size_per_gpu': 2, 'dataset_enlarge_ratio': 1
            },
            'val': {
                'name': 'toyval', 'type': 'PairedImageDataset', 'dataroot_gt': data['gt'], 'dataroot_lq': data['lq'],
                'io_backend': {'type': 'disk'}
            },
        },
        'network_g': tiny_network('msrresnet'),
        'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None},
        'train': {
            'ema_decay': 0.9,
            'optim_g': {'type': 'Adam', 'lr': 1e-3, 'betas': [0.9, 0.99]},
            'scheduler': {'type': 'MultiStepLR', 'milestones': [1000], 'gamma': 0.5},
            'total_iter': total_iter,
            'warmup_iter': -1,
            'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0, 'reduction': 'mean'},
        },
        'val': {'val_freq': total_iter, 'save_img': False,
                'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 2, 'test_y_channel': True}}},
        'logger': {'print_freq': 5, 'save_checkpoint_freq': 5, 'use_tb_logger': False},
    }
    return _update(opt, updates)


def load_option_file(path) -> dict:
    """An option file read by the plugin's one YAML reader, :func:`dckd_basicsr.options.read_option_file`."""
    from dckd_basicsr.options import read_option_file
    return read_option_file(str(path))


def flatten(d: dict, prefix: str = '') -> dict:
    """``{'a': {'b': 1}}`` -> ``{'a.b': 1}``: option files compared key by key."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f'{prefix}{k}.'))
        else:
            out[f'{prefix}{k}'] = v
    return out


def write_options(path: Path, opt: dict) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(copy.deepcopy(opt), sort_keys=False))
    return str(path)


def run(args: List[str], cwd: Path, timeout: int = 300, env: Optional[dict] = None,
        check: bool = True) -> subprocess.CompletedProcess:
    """Run a command the way a user would (fresh interpreter), capturing output; fail with its output shown."""
    full_env = dict(os.environ, PYTHONUNBUFFERED='1', OMP_NUM_THREADS='1')
    full_env.update(env or {})
    proc = subprocess.run(args, cwd=str(cwd), env=full_env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f'{args} exited {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}\n'
                             f'--- stderr\n{proc.stderr[-4000:]}')
    return proc


@contextlib.contextmanager
def basicsr_messages() -> Iterator[List[str]]:
    """The messages BasicSR's logger emits inside the block (it does not propagate to pytest's caplog)."""
    messages, handler = [], logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    logging.getLogger('basicsr').addHandler(handler)
    try:
        yield messages
    finally:
        logging.getLogger('basicsr').removeHandler(handler)


def free_port() -> str:
    """A TCP port on the loopback interface that nothing listens on now (for torchrun's rendezvous)."""
    import socket
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return str(sock.getsockname()[1])


def save_random_network(net_opt: dict, path: Path, seed: int, key: str = 'params') -> str:
    """Build a network from its option block with a fixed seed and save its weights under ``key`` (BasicSR's
    ``params``, or a taming checkpoint's ``state_dict``)."""
    import torch
    from basicsr.archs import build_network

    import dckd_basicsr  # noqa: F401  (the VQGAN arch)
    torch.manual_seed(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({key: build_network(net_opt).state_dict()}, path)
    return str(path)


def dckd_train_options(tmp_path: Path, data: Dict[str, str], name: str = 'toy_dckd', total_iter: int = 10,
                       teacher: str = 'msrresnet_teacher', vqgan: str = 'vqgan_5_levels', **updates: Any) -> dict:
    """:func:`sr_train_options` turned into a full DCKD run (logits KD + DCR + DMM) with tiny frozen networks, the
    teacher and the VQGAN saved with seeds 1 and 2. ``updates`` (``a__b=value``) may also replace ``network_g``;
    ``train__cl_opt__weights`` must then have one entry per level of ``vqgan`` (five for the default)."""
    opt = sr_train_options(data, name=name, total_iter=total_iter, model_type='DCKDModel')
    pretrained = tmp_path / 'pretrained'
    opt['network_t'] = tiny_network(teacher)
    opt['network_his'] = True
    opt['network_vqgan'] = tiny_network(vqgan)
    opt['path'].update({
        'pretrain_network_t': save_random_network(opt['network_t'], pretrained / 'teacher.pth', seed=1),
        'param_key_t': 'params', 'strict_load_t': True,
        'pretrain_network_vqgan': save_random_network(opt['network_vqgan'], pretrained / 'vqgan.pth', seed=2),
        'param_key_vqgan': 'params', 'strict_load_vqgan': True,
    })
    opt['train'].update({
        'logits_opt': {'type': 'L1Loss', 'loss_weight': 1.0, 'reduction': 'mean'},
        'cl_opt': {'type': 'ContrasLoss', 'd_func': 'L1', 'loss_weight': 0.1,
                   'weights': [0.03125, 0.0625, 0.125, 0.25, 1.0]},
        'ce_opt': {'type': 'CELoss', 'loss_weight': 0.001},
        'num_neg': 2, 'update_decay': 0.1, 'step': [3, 5, 7],
        'gaussian_noise_prob': 1, 'gray_noise_prob': 0.5, 'gaussian_blur_prob': 0, 'resize_prob': 0,
    })
    return _update(opt, updates)


def _update(opt: dict, updates: Dict[str, Any]) -> dict:
    for dotted, value in updates.items():
        node = opt
        keys = dotted.split('__')
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
    return opt


# ---------------------------------------------------------------- models built in-process (build_model)
def in_process(opt: dict, root: Path) -> dict:
    """A run's options as ``parse_options`` would complete them for a model built in this process on CPU."""
    for folder in ('models', 'states'):
        (root / folder).mkdir(exist_ok=True)
    opt.update(is_train=True, dist=False, num_gpu=0, rank=0, world_size=1)
    opt['path'].update(models=str(root / 'models'), training_states=str(root / 'states'))
    return opt


def kd_options(root: Path, student: dict, teacher: dict, teacher_file: Optional[str] = None,
               model_type: str = 'KDModel', **train: Any) -> dict:
    """A KD model (x2, EMA 0.5, L1 pixel loss) whose teacher is ``teacher_file`` or ``teacher`` saved with seed 1;
    ``train`` adds or replaces ``train`` keys."""
    train_opt = dict(ema_decay=0.5, optim_g=dict(type='Adam', lr=1e-3, betas=[0.9, 0.99]),
                     scheduler=dict(type='MultiStepLR', milestones=[100], gamma=0.5), pixel_opt=dict(type='L1Loss'))
    train_opt.update(train)
    teacher_file = teacher_file or save_random_network(teacher, root / 'teacher.pth', seed=1)
    return in_process(dict(manual_seed=0, scale=2, model_type=model_type, network_g=student, network_t=teacher,
                           path=dict(pretrain_network_t=teacher_file), train=train_opt, val=dict(metrics={})), root)


def write_checkpoints(root: Path, teacher_upscale: int = 2, vq_state=None) -> dict:
    """The teacher of :func:`dckd_options` and a taming-like VQGAN checkpoint (encoder weights, plus the decoder and
    training-loss keys such a file holds), both drawn after ``torch.manual_seed(123)``."""
    import torch
    from basicsr.archs import build_network

    from dckd_basicsr.archs.vqgan_arch import VQGANEncoder
    torch.manual_seed(123)
    teacher = build_network(tiny_network('swinir_teacher', upscale=teacher_upscale))
    torch.save({'params': teacher.state_dict()}, root / 'teacher.pth')
    if vq_state is None:
        vq_state = dict(VQGANEncoder(**arch_args(tiny_network('vqgan'))).state_dict())
        vq_state.update({'decoder.conv_in.weight': torch.zeros(4, 16, 3, 3), 'post_quant_conv.bias': torch.zeros(16),
                         'loss.discriminator.main.0.weight': torch.zeros(2)})
    torch.save({'state_dict': vq_state, 'global_step': 7}, root / 'vqgan.ckpt')
    return {'teacher': str(root / 'teacher.pth'), 'vqgan': str(root / 'vqgan.ckpt')}


def dckd_options(root: Path, files: dict, **train_updates: Any) -> dict:
    """A DCKD model (tiny SwinIR student and teacher, the three-level VQGAN; DCKD* terms: logits KD, LCR, Eq. 5 and
    the authors' CELoss) on the checkpoints of :func:`write_checkpoints`; a ``None`` update removes that key."""
    train = dict(logits_opt=dict(type='L1Loss'), lcr_opt=dict(type='L1Loss'), noisy=dict(prob=0.5),
                 cl_opt=dict(type='ContrasLoss', d_func='L1', loss_weight=0.1, weights=[0.25, 0.5, 1.0]),
                 ce_opt=dict(type='CELoss', loss_weight=0.001),
                 num_neg=2, update_decay=0.1, step=[2], gaussian_noise_prob=1, gray_noise_prob=0.5)
    train.update(train_updates)
    opt = kd_options(root, tiny_network('swinir_student'), tiny_network('swinir_teacher'),
                     teacher_file=files['teacher'], model_type='DCKDModel')
    opt['train'].update(train)
    for key in [k for k, v in opt['train'].items() if v is None]:
        del opt['train'][key]
    opt.update(network_his=True, network_vqgan=tiny_network('vqgan'))
    opt['path'].update(pretrain_network_vqgan=files['vqgan'], param_key_vqgan='state_dict', strict_load_vqgan=False)
    return opt


def batch(seed: int = 0, size: int = 8, scale: int = 2) -> dict:
    """Two random LQ images of ``size`` pixels and their GT, ``scale`` times larger."""
    import torch
    generator = torch.Generator().manual_seed(seed)
    return {'lq': torch.rand(2, 3, size, size, generator=generator),
            'gt': torch.rand(2, 3, scale * size, scale * size, generator=generator)}
