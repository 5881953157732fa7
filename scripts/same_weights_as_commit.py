"""Train the same tiny runs with this working tree and with an earlier commit, and compare the weights bit for bit.

    python scripts/same_weights_as_commit.py --base 32f686d           # every method, 6 iterations, resume included
    python scripts/same_weights_as_commit.py --base 32f686d --runs dckd dukd --iters 4

A restructure must not change behaviour: for each run (logits KD, FAKD, DUKD, DCKD, DCKD*, DCKD with Eq. 9, DCKD with
``train.fast``, logits KD with progressive patches) the base commit's code (exported with ``git archive`` into a temporary folder) and this tree's code
each train ``--iters`` iterations from the same option file, seed, data and frozen-network checkpoints, in fresh
interpreters (``python -m dckd_basicsr.train`` with the tree first on ``PYTHONPATH``), saving at half-way; a second
run of this tree's code resumes from the half-way checkpoint. The student, its EMA, the history model, the optimizer
and scheduler states of the last checkpoint must be equal bit for bit (``torch.equal``) across all three. Exit status
1 and the differing tensors are printed otherwise. CPU only; uses one thread.
"""
import argparse
import copy
import os
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path
from typing import Any, Dict, List

import cv2
import numpy as np
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
SWIN = dict(type='SwinIR', upscale=2, in_chans=3, img_size=16, window_size=4, img_range=1., depths=[1, 1],
            num_heads=[2, 2], mlp_ratio=2, upsampler='pixelshuffle', resi_connection='1conv')
RCAN = dict(type='RCAN', num_in_ch=3, num_out_ch=3, num_feat=8, num_group=10, num_block=1, squeeze_factor=4,
            upscale=2, res_scale=1, img_range=255., rgb_mean=[0.4488, 0.4371, 0.4040])
VQGAN = dict(type='VQGAN', embed_dim=8, n_embed=16,
             ddconfig=dict(double_z=False, z_channels=8, resolution=32, in_channels=3, out_ch=3, ch=32,
                           ch_mult=[1, 1, 2], num_res_blocks=1, attn_resolutions=[8], dropout=0.0))
L1 = dict(type='L1Loss', loss_weight=1.0, reduction='mean')
DCKD_TRAIN = dict(cl_opt=dict(type='ContrasLoss', d_func='L1', loss_weight=0.1, weights=[0.25, 0.5, 1.0]),
                  ce_opt=dict(type='CELoss', loss_weight=0.001, reduction='mean'), num_neg=2, update_decay=0.1,
                  step=[2], gaussian_noise_prob=1, gray_noise_prob=0.5, gaussian_blur_prob=0.5, resize_prob=0.5)
# name -> (model_type, student, teacher, train-block additions, datasets.train additions)
RUNS: Dict[str, tuple] = {
    'logits': ('KDModel', RCAN, dict(RCAN, num_block=2), dict(logits_opt=L1), {}),
    'fakd': ('KDModel', RCAN, dict(RCAN, num_block=2),
             dict(pixel_opt=dict(L1, loss_weight=0.5), logits_opt=dict(L1, loss_weight=0.5),
                  fakd_opt=dict(type='FAKDLoss', loss_weight=10 / 255)), {}),
    'dukd': ('DUKDModel', SWIN, dict(SWIN, embed_dim=16), dict(kd_opt=L1, noisy=dict(prob=0.5),
                                                              dukd_opt=dict(n_gt_sub=[2], zoom_out=True)), {}),
    'dckd': ('DCKDModel', SWIN, dict(SWIN, embed_dim=16), dict(logits_opt=L1, **DCKD_TRAIN), {}),
    'dckdstar': ('DCKDModel', SWIN, dict(SWIN, embed_dim=16),
                 dict(logits_opt=L1, lcr_opt=L1, noisy=dict(prob=0.5), **DCKD_TRAIN), {}),
    'dckdeq9': ('DCKDModel', SWIN, dict(SWIN, embed_dim=16),
                dict(logits_opt=L1, **dict(DCKD_TRAIN, ce_opt=dict(type='DistributionMappingLoss',
                                                                   loss_weight=0.001))), {}),
    'dckdfast': ('DCKDModel', SWIN, dict(SWIN, embed_dim=16),
                 dict(logits_opt=L1, fast=dict(autocast='bf16', channels_last=True), **DCKD_TRAIN), {}),
    # stage 2 starts after the half-way checkpoint, so the resumed run must pick the schedule up again
    'progressive': ('KDModel', RCAN, dict(RCAN, num_block=2), dict(logits_opt=L1),
                    dict(mini_batch_sizes=[2, 1], gt_sizes=[16, 32], iters=[3, 3])),
}


def make_data(root: Path) -> Dict[str, str]:
    rng = np.random.default_rng(0)
    hr, lr = root / 'hr', root / 'lr'
    hr.mkdir(parents=True)
    lr.mkdir(parents=True)
    for i in range(4):
        image = cv2.GaussianBlur(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8), (5, 5), 1.2)
        cv2.imwrite(str(hr / f'{i}.png'), image)
        cv2.imwrite(str(lr / f'{i}.png'), cv2.resize(image, (20, 20), interpolation=cv2.INTER_AREA))
    return {'gt': str(hr), 'lq': str(lr)}


def save_network(net_opt: Dict[str, Any], path: Path, seed: int) -> str:
    """Frozen-network checkpoints, written once with this tree's archs (same names in both trees)."""
    from basicsr.archs import build_network

    import dckd_basicsr  # noqa: F401
    torch.manual_seed(seed)
    torch.save({'params': build_network(copy.deepcopy(net_opt)).state_dict()}, path)
    return str(path)


def options(name: str, root: Path, data: Dict[str, str], iters: int) -> Dict[str, Any]:
    model_type, student, teacher, train_extra, dataset_extra = RUNS[name]
    dataset = dict(name='toy', type='PairedImageDataset', dataroot_gt=data['gt'], dataroot_lq=data['lq'],
                   io_backend=dict(type='disk'))
    opt = dict(name=name, model_type=model_type, scale=2, num_gpu=0, manual_seed=7,
               datasets=dict(train=dict(dataset, gt_size=32, use_hflip=True, use_rot=True, num_worker_per_gpu=0,
                                        batch_size_per_gpu=2, dataset_enlarge_ratio=1, **dataset_extra),
                             val=dataset),
               network_g=copy.deepcopy(student), network_t=copy.deepcopy(teacher),
               path=dict(pretrain_network_t=save_network(teacher, root / f'{name}_teacher.pth', 1)),
               train=dict(ema_decay=0.9, optim_g=dict(type='Adam', lr=2e-3, betas=[0.9, 0.99]),
                          scheduler=dict(type='MultiStepLR', milestones=[iters // 2], gamma=0.5), total_iter=iters,
                          warmup_iter=-1, **{'pixel_opt': L1, **copy.deepcopy(train_extra)}),
               val=dict(val_freq=10**6, save_img=False),
               logger=dict(print_freq=1, save_checkpoint_freq=iters // 2, use_tb_logger=False))
    if 'cl_opt' in train_extra:
        opt['network_his'] = True
        opt['network_vqgan'] = copy.deepcopy(VQGAN)
        opt['path'].update(pretrain_network_vqgan=save_network(VQGAN, root / 'vqgan.pth', 2), param_key_vqgan='params',
                           strict_load_vqgan=True)
    return opt


def train(tree: Path, option_file: Path, cwd: Path, extra: List[str] = ()) -> None:
    env = dict(os.environ, PYTHONPATH=str(tree), OMP_NUM_THREADS='1', MKL_NUM_THREADS='1', PYTHONHASHSEED='0')
    proc = subprocess.run([sys.executable, '-m', 'dckd_basicsr.train', '-opt', str(option_file), *extra],
                          cwd=str(cwd), env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f'{tree}: training {option_file.name} failed\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}')


def last_checkpoint(run_dir: Path, iters: int) -> Dict[str, Any]:
    state = {f'net_g.{k}': v for k, v in torch.load(run_dir / f'models/net_g_{iters}.pth').items()}
    his = run_dir / f'models/net_his_{iters}.pth'
    if his.is_file():
        state['net_his'] = torch.load(his)
    training = torch.load(run_dir / f'training_states/{iters}.state', weights_only=False)
    state.update(optimizers=training['optimizers'], schedulers=training['schedulers'])
    return state


def differences(a: Any, b: Any, where: str = '') -> List[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return [f'{where}: keys {sorted(set(a) ^ set(b))[:4]}']
        return sum((differences(a[k], b[k], f'{where}.{k}') for k in a), [])
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return [f'{where}: lengths {len(a)} and {len(b)}']
        return sum((differences(x, y, f'{where}[{i}]') for i, (x, y) in enumerate(zip(a, b))), [])
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return [] if a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b) else [where]
    return [] if a == b else [f'{where}: {a!r} != {b!r}']


def export(commit: str, target: Path) -> None:
    archive = subprocess.run(['git', '-C', str(REPO), 'archive', commit], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(target, filter='data')


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--base', required=True, help='commit to compare with (e.g. the one before a restructure)')
    parser.add_argument('--runs', nargs='+', choices=sorted(RUNS), default=list(RUNS))
    parser.add_argument('--iters', type=int, default=6, help='even number of iterations (saved at half-way)')
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        export(args.base, root / 'base')
        data = make_data(root / 'data')
        for name in args.runs:
            results = {}
            option_file = root / f'{name}.yml'
            option_file.write_text(yaml.safe_dump(options(name, root, data, args.iters), sort_keys=False))
            for label, tree, extra in (('base', root / 'base', []), ('tree', REPO, []), ('tree, resumed', REPO, [])):
                cwd = root / label.replace(', ', '_')
                cwd.mkdir(exist_ok=True)
                if label == 'tree, resumed':  # stop at half-way, then resume from that checkpoint
                    half = yaml.safe_load(option_file.read_text())
                    half['train']['total_iter'] = args.iters // 2
                    half_file = root / f'{name}_half.yml'
                    half_file.write_text(yaml.safe_dump(half, sort_keys=False))
                    train(tree, half_file, cwd)
                    extra = ['--auto_resume']
                train(tree, option_file, cwd, extra)
                results[label] = last_checkpoint(cwd / 'experiments' / name, args.iters)
            for label in ('tree', 'tree, resumed'):
                diff = differences(results['base'], results[label])
                failed |= bool(diff)
                verdict = 'bit-identical' if not diff else f'{len(diff)} differ: {", ".join(diff[:6])}'
                print(f'{name:11s} base vs {label:14s}: {verdict}', flush=True)
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
