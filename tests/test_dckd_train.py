"""DCKD through the training entry point: the authors' SwinIR x4 option file with full-size networks, and exact
resume (student, EMA, history and optimizer state of a resumed run equal an uninterrupted run's)."""
import copy
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from basicsr.archs import build_network
from basicsr.utils.lmdb_util import make_lmdb_from_imgs

from helpers import REPO, dckd_train_options, tiny_network

import dckd_basicsr  # noqa: F401
from dckd_basicsr.archs.arch_util import count_parameters
from dckd_basicsr.archs.vqgan_arch import VQGANEncoder

pytestmark = pytest.mark.slow  # every test here trains in fresh interpreters, over 5 s each

AUTHORS_OPTIONS = REPO / 'options/train/SwinIR/train_SwinIR_SRx4_DCKD_authors.yml'


# Runs `python -m dckd_basicsr.train <args>` once per `--` separated argument group, in one interpreter.
DRIVER = """import sys
from dckd_basicsr.train import main
runs, current = [], []
for arg in sys.argv[1:] + ['--']:
    if arg == '--':
        runs.append(current)
        current = []
    else:
        current.append(arg)
for run in runs:
    sys.argv = ['dckd_basicsr.train'] + run
    main()
"""


def train(cwd: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """Fresh interpreter(s)' training runs; several runs separated by ``--`` share one interpreter (import time)."""
    command = [sys.executable, '-c', DRIVER, *args] if '--' in args else [sys.executable, '-m', 'dckd_basicsr.train',
                                                                            *args]
    proc = subprocess.run(command, cwd=str(cwd), capture_output=True,
                          text=True, timeout=timeout, env={'OMP_NUM_THREADS': '1', 'PATH': '/usr/bin:/bin',
                                                           'PYTHONUNBUFFERED': '1'})
    assert proc.returncode == 0, f'exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}'
    return proc


def images(folder: Path, count: int, size, seed: int, suffix: str = '') -> list:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = []
    for i in range(count):
        image = cv2.GaussianBlur(rng.integers(0, 256, (size[0], size[1], 3), dtype=np.uint8), (5, 5), 1.0)
        names.append(f'{i:04d}{suffix}.png')
        cv2.imwrite(str(folder / names[-1]), image)
    return names


def test_authors_swinir_x4_options_run_two_iterations_with_full_size_networks(tmp_path):
    torch.manual_seed(0)
    opt = yaml.safe_load(AUTHORS_OPTIONS.read_text())
    teacher = build_network(opt['network_t'])
    torch.save({'params': teacher.state_dict()}, tmp_path / 'teacher.pth')
    del teacher
    vq_opt = {k: v for k, v in opt['network_vqgan'].items() if k != 'type'}
    state = dict(VQGANEncoder(**vq_opt).state_dict(), **{'decoder.conv_out.bias': torch.zeros(3)})
    torch.save({'state_dict': state}, tmp_path / 'vqgan.ckpt')
    del state
    # DIV2K-like LMDBs (layout contract) and a Set5-like folder whose LR size is no multiple of the window (8)
    hr, lr = tmp_path / 'src/hr', tmp_path / 'src/lr'
    names = images(hr, 2, (48, 48), seed=1)
    for name in names:
        cv2.imwrite(str(lr / name) if lr.mkdir(exist_ok=True) or True else '',
                    cv2.resize(cv2.imread(str(hr / name)), (12, 12), interpolation=cv2.INTER_AREA))
    for src, dst in ((hr, 'hr.lmdb'), (lr, 'lr.lmdb')):
        make_lmdb_from_imgs(str(src), str(tmp_path / dst), names, [n[:-4] for n in names], map_size=1 << 24)
    val_hr = tmp_path / 'Set5/HR'
    images(val_hr, 1, (44, 36), seed=2)
    (tmp_path / 'Set5/LR').mkdir(parents=True)
    cv2.imwrite(str(tmp_path / 'Set5/LR/0000x4.png'),
                cv2.resize(cv2.imread(str(val_hr / '0000.png')), (9, 11), interpolation=cv2.INTER_AREA))

    proc = train(tmp_path, '-opt', str(AUTHORS_OPTIONS), '--force_yml',
                 'datasets:train:batch_size_per_gpu=1', 'datasets:train:gt_size=32', 'train:total_iter=2',
                 f'datasets:train:dataroot_gt={tmp_path / "hr.lmdb"}',
                 f'datasets:train:dataroot_lq={tmp_path / "lr.lmdb"}',
                 *(f'datasets:val_{i}:dataroot_{kind}={folder}' for i in (1, 2, 3)
                   for kind, folder in (('gt', val_hr), ('lq', tmp_path / 'Set5/LR'))), 'num_gpu=0',
                 f'path:pretrain_network_t={tmp_path / "teacher.pth"}',
                 f'path:pretrain_network_vqgan={tmp_path / "vqgan.ckpt"}', timeout=600)
    run_dir = tmp_path / 'experiments' / opt['name']
    log = ''.join(p.read_text() for p in run_dir.glob('train_*.log'))
    assert 'format taming' in log and 'Validation Set5' in log, proc.stdout[-2000:]
    net_g = torch.load(run_dir / 'models/net_g_latest.pth')
    his = torch.load(run_dir / 'models/net_his_latest.pth')['params']
    student = build_network(opt['network_g'])
    student.load_state_dict(net_g['params'])
    assert count_parameters(student) > 1_200_000  # the 1.2M-parameter student of Table 1
    # two Adam steps moved the student; the EMA (0.999) moved far less; the history (step 1000) not at all
    key = 'conv_first.weight'
    student_move = (net_g['params'][key] - his[key]).abs().max()
    ema_move = (net_g['params_ema'][key] - his[key]).abs().max()
    assert 0 < ema_move < 0.01 * student_move


def test_resumed_run_equals_uninterrupted_run(tmp_path):
    images(tmp_path / 'data/hr', 1, (16, 16), seed=5)
    images(tmp_path / 'data/lr', 1, (8, 8), seed=6)
    # tiny SwinIR and the three-level VQGAN; DCKD* (with the LCR draws), a history update at every iteration
    opt = dckd_train_options(
        tmp_path, {'gt': str(tmp_path / 'data/hr'), 'lq': str(tmp_path / 'data/lr')}, name='resume',
        teacher='swinir_teacher', vqgan='vqgan', network_g=tiny_network('swinir_student'), manual_seed=3,
        datasets__train__gt_size=16, datasets__train__batch_size_per_gpu=1,
        path__experiments_root=str(tmp_path / 'runs'), train__scheduler__milestones=[3],
        train__lcr_opt={'type': 'L1Loss'}, train__noisy={'prob': 0.5}, train__cl_opt__weights=[0.25, 0.5, 1],
        train__step=[1], logger__print_freq=1, logger__save_checkpoint_freq=1)
    del opt['datasets']['val'], opt['val']

    def write(name: str, total_iter: int, run: str) -> str:
        run_opt = copy.deepcopy(opt)
        run_opt['name'] = run
        run_opt['train']['total_iter'] = total_iter
        (tmp_path / name).write_text(yaml.safe_dump(run_opt))
        return str(tmp_path / name)

    train(tmp_path, '-opt', write('full.yml', 3, 'full'), '--', '-opt', write('part.yml', 2, 'part'))
    assert (tmp_path / 'runs/part/training_states/2.state').is_file()
    train(tmp_path, '-opt', write('part_resume.yml', 3, 'part'), '--auto_resume')  # a new process, as after a kill

    full, part = tmp_path / 'runs/full', tmp_path / 'runs/part'
    for name in ('net_g_3.pth', 'net_his_3.pth'):
        a, b = torch.load(full / 'models' / name), torch.load(part / 'models' / name)
        assert a.keys() == b.keys()
        for param_key in a:
            for key, value in a[param_key].items():
                assert torch.equal(value, b[param_key][key]), (name, param_key, key)
    his_2 = torch.load(full / 'models/net_his_2.pth')['params']['conv_first.weight']
    his_3 = torch.load(full / 'models/net_his_3.pth')['params']['conv_first.weight']
    assert not torch.equal(his_2, his_3)  # the history model moved after the checkpoint
    state_a, state_b = torch.load(full / 'training_states/3.state'), torch.load(part / 'training_states/3.state')
    assert state_a['schedulers'] == state_b['schedulers']
    for group_a, group_b in zip(state_a['optimizers'][0]['state'].values(), state_b['optimizers'][0]['state'].values()):
        assert all(torch.equal(group_a[k], group_b[k]) for k in ('exp_avg', 'exp_avg_sq'))
    assert torch.equal(state_a['rng'][0]['step']['torch'], state_b['rng'][0]['step']['torch'])
    assert 'Resuming training from epoch' in ''.join(p.read_text() for p in part.glob('train_*.log'))
