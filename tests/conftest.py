"""Shared fixtures: tiny paired image folders made with cv2, BasicSR option files, and subprocess runners.

Every test runs on CPU with data generated in a tmp dir; nothing here reads ../shared/data.
"""
import copy
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import cv2
import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
BIN = Path(PYTHON).parent


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
        'network_g': {'type': 'MSRResNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 1,
                      'upscale': 2},
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
    for dotted, value in updates.items():
        node = opt
        keys = dotted.split('__')
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
    return opt


def load_option_file(path) -> dict:
    """An option file read as BasicSR reads it (ordered YAML)."""
    from basicsr.utils.options import ordered_yaml
    with open(path) as f:
        return yaml.load(f, Loader=ordered_yaml()[0])


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


def free_port() -> str:
    """A TCP port on the loopback interface that nothing listens on now (for torchrun's rendezvous)."""
    import socket
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return str(sock.getsockname()[1])


@pytest.fixture(autouse=True)
def one_thread():
    """In-process tests use tiny tensors: one intra-op thread is faster, and far faster on a shared, loaded machine."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def toy_data(tmp_path: Path) -> Dict[str, str]:
    return make_pairs(tmp_path / 'data')


TINY_TEACHER = {'type': 'MSRResNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 16, 'num_block': 2, 'upscale': 2}
TINY_VQGAN = {'type': 'VQGAN', 'embed_dim': 8, 'n_embed': 16,
              'ddconfig': {'double_z': False, 'z_channels': 8, 'resolution': 32, 'in_channels': 3, 'out_ch': 3,
                           'ch': 32, 'ch_mult': [1, 1, 2, 2, 4], 'num_res_blocks': 1, 'attn_resolutions': [],
                           'dropout': 0.0}}


def save_random_network(net_opt: dict, path: Path, seed: int) -> str:
    """Build a network from its option block with a fixed seed and save it as a BasicSR ``params`` file."""
    import torch
    from basicsr.archs import build_network

    import dckd_basicsr  # noqa: F401  (the VQGAN arch)
    torch.manual_seed(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({'params': build_network(net_opt).state_dict()}, path)
    return str(path)


def dckd_train_options(tmp_path: Path, data: Dict[str, str], name: str = 'toy_dckd', total_iter: int = 10,
                       **updates: Any) -> dict:
    """:func:`sr_train_options` turned into a full DCKD run (logits KD + DCR + DMM) with tiny frozen networks."""
    opt = sr_train_options(data, name=name, total_iter=total_iter, model_type='DCKDModel', **updates)
    pretrained = tmp_path / 'pretrained'
    opt['network_t'] = dict(TINY_TEACHER)
    opt['network_his'] = True
    opt['network_vqgan'] = copy.deepcopy(TINY_VQGAN)
    opt['path'].update({
        'pretrain_network_t': save_random_network(TINY_TEACHER, pretrained / 'teacher.pth', seed=1),
        'param_key_t': 'params', 'strict_load_t': True,
        'pretrain_network_vqgan': save_random_network(TINY_VQGAN, pretrained / 'vqgan.pth', seed=2),
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
    return opt
