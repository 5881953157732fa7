"""``dckd-results``: BasicSR validation logs -> the paper's tables with the paper's numbers."""
import json
import os
import re
import subprocess
import sys
from os import path as osp

import cv2
import numpy as np
import pytest

from helpers import tiny_network

from dckd_basicsr.commands import results
from dckd_basicsr.commands.results import (collect_runs, format_tables, labels_from_name, labels_from_options,
                                           parse_log, pick)

LOG_5000 = """2025-01-01 12:00:00,000 INFO: [RCAN_..][epoch:  0, iter:   5,000, lr:(1.000e-04,)] [eta: 1:00:00, \
time (data): 0.100 (0.001)] l_pix: 1.0000e-02
2025-01-01 12:00:01,000 INFO: Validation Set5
\t # psnr: 32.5000\tBest: 32.5000 @ 5000 iter
\t # ssim: 0.8990\tBest: 0.8990 @ 5000 iter

2025-01-01 12:00:02,000 INFO: Validation BSD100
\t # psnr: 27.7000\tBest: 27.7000 @ 5000 iter
\t # ssim: 0.7420\tBest: 0.7420 @ 5000 iter

"""
LOG_10000 = """2025-01-02 12:10:00,000 INFO: Resuming training from epoch: 1, iter: 5000.
2025-01-02 12:10:00,000 INFO: [RCAN_..][epoch:  1, iter:  10,000, lr:(1.000e-04,)] [eta: 1:00:00, \
time (data): 0.100 (0.001)] l_pix: 1.0000e-02
2025-01-02 12:10:01,000 INFO: Validation Set5
\t # psnr: 32.4000\tBest: 32.5000 @ 5000 iter
\t # ssim: 0.9000\tBest: 0.9000 @ 10000 iter

2025-01-02 12:10:02,000 INFO: Validation BSD100
\t # psnr: 27.7500\tBest: 27.7500 @ 10000 iter
\t # ssim: 0.7400\tBest: 0.7420 @ 5000 iter

"""
TEST_LOG = """2025-01-03 09:00:00,000 INFO: Testing GoPro...
2025-01-03 09:00:09,000 INFO: Validation gopro_test
\t # psnr: 31.3000\tBest: 31.3000 @ test_GoPro iter
\t # ssim: 0.9470\tBest: 0.9470 @ test_GoPro iter

"""


def write(path, text):
    os.makedirs(osp.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        f.write(text)


@pytest.fixture
def experiments(tmp_path):
    root = tmp_path / 'experiments'
    run = root / 'RCAN_SRx4_DCKD'
    # written by two sessions (a resume); the newer file sorts first by name, last by BasicSR's time stamp
    write(str(run / 'train_RCAN_SRx4_DCKD_20250102_121000.log'), LOG_10000)
    write(str(run / 'train_RCAN_SRx4_DCKD_20250101_120000.log'), LOG_5000)
    write(str(root / 'RCAN_SRx4_DCKD_archived_20241231_000000' / 'train_RCAN_SRx4_DCKD_20241231_000000.log'),
          LOG_5000.replace('32.5000', '20.0000'))
    write(str(root / 'NAFNet_Deblur_Logits' / 'test_NAFNet_Deblur_Logits_20250103_090000.log'), TEST_LOG)
    write(str(root / 'empty_run' / 'train_empty_run_20250101_000000.log'), 'INFO: nothing validated\n')
    return root


def test_parse_log_records():
    records = parse_log((LOG_5000 + LOG_10000).splitlines(keepends=True))
    assert [(r['dataset'], r['iter'], r['metrics']) for r in records] == [
        ('Set5', 5000, {'psnr': 32.5, 'ssim': 0.899}), ('B100', 5000, {'psnr': 27.7, 'ssim': 0.742}),
        ('Set5', 10000, {'psnr': 32.4, 'ssim': 0.9}), ('B100', 10000, {'psnr': 27.75, 'ssim': 0.74})]
    # a test log has no training message: no iteration (its "Best @" holds the test name, not a number)
    assert parse_log(TEST_LOG.splitlines()) == [{'dataset': 'GoPro', 'iter': None,
                                                 'metrics': {'psnr': 31.3, 'ssim': 0.947}}]


def test_pick_best_and_last():
    records = parse_log((LOG_5000 + LOG_10000).splitlines())
    best, last = pick(records, 'best'), pick(records, 'last')
    # best PSNR round, with the SSIM of that same round (BasicSR's own best SSIM, 0.9000 @ 10000, is another round)
    assert best['Set5']['metrics'] == {'psnr': 32.5, 'ssim': 0.899} and best['Set5']['iter'] == 5000
    assert best['B100']['metrics'] == {'psnr': 27.75, 'ssim': 0.74}
    assert last['Set5']['metrics'] == {'psnr': 32.4, 'ssim': 0.9} and last['Set5']['iter'] == 10000


@pytest.mark.parametrize('name,expected', [
    ('RCAN_SRx4_DCKD', dict(backbone='RCAN', task='SR', scale=4, method='DCKD')),
    ('001_SwinIR_SRx2_Logits_seed1', dict(backbone='SwinIR', task='SR', scale=2, method='Logits')),
    ('NAFNet_Deblur_Scratch', dict(backbone='NAFNet', task='Deblur', scale=1, method='Scratch')),
    ('Restormer_Rain13K_DCKDstar', dict(backbone='Restormer', task='Derain', scale=1, method='DCKD*')),
    ('RCAN_x2_DCR-only', dict(backbone='RCAN', task='SR', scale=2, method='DCR only')),
    ('my_experiment', {}),
])
def test_labels_from_name(name, expected):
    assert labels_from_name(name) == expected


def test_labels_from_options():
    base = {'network_g': {'type': 'NAFNetLocal'}, 'scale': 1, 'datasets': {'val': {'name': 'GoPro'}}}
    assert labels_from_options(dict(base, model_type='SRModel')) == dict(
        backbone='NAFNet', scale=1, task='Deblur', method='Scratch')
    kd = dict(base, model_type='DCKDModel', datasets={'val_1': {'name': 'Rain100L'}})
    assert labels_from_options(dict(kd, train={'logits_opt': {}}))['method'] == 'Logits'
    assert labels_from_options(dict(kd, train={'logits_opt': {}}))['task'] == 'Derain'
    assert labels_from_options(dict(kd, train={'cl_opt': {}, 'ce_opt': {}}))['method'] == 'DCKD'
    assert labels_from_options(dict(kd, train={'cl_opt': {}, 'ce_opt': {}, 'lcr_opt': {}}))['method'] == 'DCKD*'
    assert labels_from_options(dict(kd, train={'ce_opt': {}}))['method'] == 'DMM only'
    sr = labels_from_options({'network_g': {'type': 'RCAN'}, 'scale': 3, 'model_type': 'SRModel'})
    assert sr == dict(backbone='RCAN', scale=3, task='SR', method='Scratch')
    swinir = labels_from_options({'network_g': {'type': 'SwinIR'}, 'scale': 4, 'model_type': 'SwinIRModel'})
    assert swinir == dict(backbone='SwinIR', scale=4, task='SR', method='Scratch')


def test_tables_with_paper_reference(experiments):
    runs = collect_runs([str(experiments)], 'best')
    assert sorted(r['name'] for r in runs) == ['NAFNet_Deblur_Logits', 'RCAN_SRx4_DCKD']  # archived and empty out
    text = format_tables(runs, 'best')
    rcan = text[text.index('## RCAN x4'):text.index('## NAFNet')]
    assert '| Method | | Set5 | B100 |' in rcan  # paper column order, BSD100 -> B100
    assert '| DCKD | ours | 32.50/0.8990 | 27.75/0.7400 |' in rcan
    assert '| | paper | 32.56/0.8995 | 27.73/0.7423 |' in rcan
    assert '| | diff | -0.06/-0.0005 | +0.02/-0.0023 |' in rcan
    gopro = text[text.index('## NAFNet'):text.index('## Runs')]
    assert 'GoPro, PSNR/SSIM on RGB' in gopro
    assert '| Logits | ours | 31.30/0.9470 |' in gopro and '| | paper | 31.26/0.9464 |' in gopro
    assert '| | diff | +0.04/+0.0006 |' in gopro
    assert '| RCAN_SRx4_DCKD | RCAN SR x4 | DCKD | 4 | Set5 5000, B100 10000 |' in text

    last = format_tables(collect_runs([str(experiments)], 'last'), 'last', paper=False)
    assert '| DCKD | ours | 32.40/0.9000 | 27.75/0.7400 |' in last and 'paper |' not in last


def test_cli(experiments, tmp_path):
    out = tmp_path / 'out' / 'results.md'
    results.main([str(experiments), '--out', str(out), '--pick', 'last'])
    assert '| DCKD | ours | 32.40/0.9000 | 27.75/0.7400 |' in out.read_text()
    with pytest.raises(SystemExit) as error:
        results.main([str(tmp_path / 'missing')])
    assert error.value.code == 2
    with pytest.raises(SystemExit) as error:
        results.main([str(experiments / 'empty_run')])
    assert error.value.code == 2


def _images(folder, names, size, seed):
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    for name in names:
        smooth = cv2.resize(rng.integers(0, 256, (size // 4, size // 4, 3), dtype=np.uint8), (size, size))
        cv2.imwrite(osp.join(folder, f'{name}.png'), smooth)


def _sr_pairs(root, names, size, seed):
    _images(osp.join(root, 'HR'), names, size, seed)
    os.makedirs(osp.join(root, 'LR'), exist_ok=True)
    for name in names:
        hr = cv2.imread(osp.join(root, 'HR', f'{name}.png'))
        cv2.imwrite(osp.join(root, 'LR', f'{name}.png'), cv2.resize(hr, (size // 4, size // 4),
                                                                   interpolation=cv2.INTER_AREA))


OPTIONS = """name: cpu_run
model_type: SRModel
scale: 4
num_gpu: 0
manual_seed: 0
datasets:
  train:
    name: tiny
    type: PairedImageDataset
    dataroot_gt: data/train/HR
    dataroot_lq: data/train/LR
    filename_tmpl: '{}'
    io_backend: {type: disk}
    gt_size: 16
    use_hflip: true
    use_rot: true
    num_worker_per_gpu: 0
    batch_size_per_gpu: 2
    dataset_enlarge_ratio: 1
  val_1:
    name: Set5
    type: PairedImageDataset
    dataroot_gt: data/set5/HR
    dataroot_lq: data/set5/LR
    filename_tmpl: '{}'
    io_backend: {type: disk}
  val_2:
    name: BSD100
    type: PairedImageDataset
    dataroot_gt: data/b100/HR
    dataroot_lq: data/b100/LR
    filename_tmpl: '{}'
    io_backend: {type: disk}
network_g: NETWORK_G
path: {pretrain_network_g: ~, strict_load_g: true, resume_state: ~}
train:
  optim_g: {type: Adam, lr: !!float 1e-2, betas: [0.9, 0.99]}
  scheduler: {type: MultiStepLR, milestones: [100], gamma: 0.5}
  total_iter: 6
  warmup_iter: -1
  pixel_opt: {type: L1Loss, loss_weight: 1.0, reduction: mean}
val:
  val_freq: 2
  save_img: false
  metrics:
    psnr: {type: calculate_psnr, crop_border: 4, test_y_channel: true}
    ssim: {type: calculate_ssim, crop_border: 4, test_y_channel: true}
logger: {print_freq: 2, save_checkpoint_freq: 100, use_tb_logger: false}
""".replace('NETWORK_G', json.dumps(tiny_network('rcan_student', num_feat=8, upscale=4)))  # JSON is YAML


@pytest.mark.slow
def test_logs_of_a_real_cpu_run(tmp_path):
    """A 6-iteration BasicSR SRModel run: results reads its log and its saved option file."""
    _sr_pairs(str(tmp_path / 'data' / 'train'), [f'{i:03d}' for i in range(4)], 32, 0)
    _sr_pairs(str(tmp_path / 'data' / 'set5'), ['a', 'b'], 32, 1)
    _sr_pairs(str(tmp_path / 'data' / 'b100'), ['c'], 32, 2)
    write(str(tmp_path / 'cpu_run.yml'), OPTIONS)
    env = dict(os.environ, CUDA_VISIBLE_DEVICES='', OMP_NUM_THREADS='1')
    proc = subprocess.run([sys.executable, '-m', 'dckd_basicsr.train', '-opt', 'cpu_run.yml'], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    runs = collect_runs([str(tmp_path / 'experiments')], 'best')
    assert len(runs) == 1
    run = runs[0]
    # named "cpu_run": everything comes from the copied option file
    assert run['labels'] == dict(backbone='RCAN', task='SR', scale=4, method='Scratch')
    assert run['n_val'] == 2 * 4  # iterations 2, 4, 6 and the final validation, for two sets
    with open(glob_one(str(tmp_path / 'experiments' / 'cpu_run' / 'train_cpu_run_*.log'))) as f:
        log = f.read()
    # BasicSR's own running best on the last validation of each set equals our best-PSNR pick
    for dataset, log_name in (('Set5', 'Set5'), ('B100', 'BSD100')):
        section = log[log.rindex(f'Validation {log_name}'):]
        best_psnr = float(re.search(r'Best: ([\d.]+) @ (\d+) iter', section).group(1))
        assert run['picked'][dataset]['metrics']['psnr'] == best_psnr
    text = format_tables(runs)
    picked = run['picked']['Set5']['metrics']
    assert f"| Scratch | ours | {picked['psnr']:.2f}/{picked['ssim']:.4f} |" in text
    assert '| | paper | 32.38/0.8971 | 27.63/0.7379 |' in text  # RCAN x4 Scratch reference, Set5 and B100


def glob_one(pattern):
    import glob
    matches = glob.glob(pattern)
    assert len(matches) == 1, matches
    return matches[0]


def test_repeated_method_rows_carry_the_run_name(tmp_path):
    for name in ('RCAN_SRx4_DCKD_seed1', 'RCAN_SRx4_DCKD_seed2'):
        write(str(tmp_path / name / f'train_{name}_20250101_120000.log'), LOG_5000)
    text = format_tables(collect_runs([str(tmp_path)]))
    assert '| DCKD (RCAN_SRx4_DCKD_seed1) | ours | 32.50/0.8990 | 27.70/0.7420 |' in text
    assert '| DCKD (RCAN_SRx4_DCKD_seed2) | ours | 32.50/0.8990 | 27.70/0.7420 |' in text
    assert text.count('| | paper | 32.56/0.8995 | 27.73/0.7423 |') == 2
