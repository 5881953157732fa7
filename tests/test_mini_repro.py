"""benchmarks/mini_repro.py: the options it trains with and the statistics it reports (its training is the demo's)."""
import argparse
import importlib.util

import pytest

from helpers import REPO

spec = importlib.util.spec_from_file_location('mini_repro', REPO / 'benchmarks' / 'mini_repro.py')
mini_repro = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mini_repro)


def _args(**updates):
    args = argparse.Namespace(scale=4, device='cuda', vqgan=None, teacher_iters=15000, student_iters=5000, batch=16,
                              lq_size=48, workers=4, seeds=[0, 1, 2])
    vars(args).update(updates)
    return args


def test_run_options_use_the_rcan_family_at_reduced_size():
    data = {'gt': '/d/hr.lmdb', 'lq': '/d/lr.lmdb'}
    teacher = mini_repro.run_options('teacher', _args(), 0, data)
    dckd = mini_repro.run_options('DCKD', _args(), 2, data)
    assert teacher['name'] == 'mini_RCAN_x4_teacher' and dckd['name'] == 'mini_RCAN_x4_DCKD_seed2'
    assert teacher['network_g']['num_block'] == 10 and dckd['network_g']['num_block'] == 3
    assert dckd['network_t'] == teacher['network_g']
    assert dckd['network_g']['upscale'] == dckd['network_t']['upscale'] == 4
    assert dckd['path']['pretrain_network_t'] == 'experiments/mini_RCAN_x4_teacher/models/net_g_latest.pth'
    train_set = dckd['datasets']['train']
    assert (train_set['dataroot_gt'], train_set['dataroot_lq']) == ('/d/hr.lmdb', '/d/lr.lmdb')
    assert train_set['gt_size'] == 192 and train_set['batch_size_per_gpu'] == 16
    assert list(dckd['datasets']) == ['train'] and 'val' not in dckd
    assert teacher['train']['total_iter'] == 15000 and dckd['train']['total_iter'] == 5000
    assert dckd['manual_seed'] == 2 and dckd['num_gpu'] == 1
    assert {'cl_opt', 'ce_opt', 'logits_opt'} <= set(dckd['train'])


def test_summary_reports_mean_and_sample_std_over_seeds():
    results = {'Scratch': {0: {'Set5': {'psnr': 30.0, 'ssim': 0.80}}, 1: {'Set5': {'psnr': 31.0, 'ssim': 0.82}}},
               'DCKD': {0: {'Set5': {'psnr': 31.5, 'ssim': 0.83}}, 1: {'Set5': {'psnr': 32.5, 'ssim': 0.85}}}}
    text = mini_repro.summarise(results, ['Set5'], _args(seeds=[0, 1]))
    assert '| Scratch | 30.50 ± 0.71 | 0.8100 ± 0.0141 |' in text
    assert '| DCKD | 32.00 ± 0.71 | 0.8400 ± 0.0141 |' in text
    assert 'randomly initialised' in text


def test_gt_patch_must_suit_the_encoder(tmp_path):
    with pytest.raises(SystemExit) as info:
        mini_repro.main(['--train-hr', str(tmp_path), '--bench-src', str(tmp_path), '--lq-size', '10',
                         '--scale', '3'])
    assert info.value.code == 2
