"""``dckd-train -opt FILE --smoke [--stand-in]``: shipped option files (full-size networks) for 3 iterations on CPU."""
import copy
import os
import shutil
import sys
from pathlib import Path

import pytest

from helpers import BIN, REPO, load_option_file, make_pairs, run
from dckd_basicsr.integration import smoke
from dckd_basicsr.integration.command_line import parse_command_line
from dckd_basicsr.errors import OptionError


def _folder_pairs(input_dir: Path, target_dir: Path, count: int = 2, size: int = 48, scale: int = 1,
                  lq_template: str = '{}') -> None:
    """``count`` image pairs written where an option file expects them (LQ named with ``lq_template``)."""
    pairs = make_pairs(input_dir.parent / f'.tmp_{input_dir.name}', count=count, size=size, scale=scale)
    input_dir.mkdir(parents=True, exist_ok=True)
    target_dir.mkdir(parents=True, exist_ok=True)
    for name in sorted(os.listdir(pairs['gt'])):
        stem, ext = os.path.splitext(name)
        shutil.copy(Path(pairs['lq']) / name, input_dir / f'{lq_template.format(stem)}{ext}')
        shutil.copy(Path(pairs['gt']) / name, target_dir / name)
    shutil.rmtree(input_dir.parent / f'.tmp_{input_dir.name}')


@pytest.mark.parametrize('relative, patch', [
    ('train/SwinIR/train_SwinIR_SRx4_DCKD.yml', 32), ('train/SwinIR/train_SwinIR_SRx3_DCKD.yml', 48),
    ('train/SwinIR/train_SwinIR_SRx2_DUKD.yml', 32), ('train/RCAN/train_RCAN_SRx3_FAKD.yml', 48),
    ('train/RCAN/train_RCAN_SRx3_DUKD.yml', 72),
    ('train/NAFNet/train_NAFNet_Deblur_DCKD.yml', 32), ('train/Restormer/train_Restormer_Derain_DCKD.yml', 32)])
def test_smoke_options_shrink_the_run_not_the_networks(relative, patch):
    opt = load_option_file(REPO / 'options' / relative)
    original = copy.deepcopy(opt)
    assert smoke.smoke_patch(opt) == patch
    smoke.apply_smoke_options(opt)
    assert opt['name'] == f"smoke_{original['name']}" and opt['num_gpu'] == 0
    assert opt['train']['total_iter'] == smoke.SMOKE_ITERS and opt['val']['val_freq'] == smoke.SMOKE_ITERS
    assert opt['logger']['save_checkpoint_freq'] == smoke.SMOKE_ITERS and opt['logger']['use_tb_logger'] is False
    train_set = opt['datasets']['train']
    assert (train_set['gt_size'], train_set['batch_size_per_gpu'], train_set['num_worker_per_gpu']) == (patch, 2, 0)
    # a patch that the scale, every window and the VQGAN stride divide
    assert patch % opt['scale'] == 0 and (patch // opt['scale']) % 8 == 0
    assert patch % 16 == 0 or 'cl_opt' not in opt['train']
    for key in original:
        if key.startswith('network_'):
            assert opt[key] == original[key], key
    changed = {k for k in original['train'] if opt['train'][k] != original['train'][k]}
    assert changed <= {'total_iter', 'warmup_iter'}


def _smoke(cwd: Path, relative: str, *extra: str) -> str:
    proc = run([str(BIN / 'dckd-train'), '-opt', str(REPO / 'options' / relative), '--smoke', '--stand-in', *extra],
               cwd=cwd, timeout=300)
    return proc.stdout + proc.stderr


def _check_smoke_run(cwd: Path, name: str, output: str, val_sets: dict) -> None:
    run_dir = cwd / 'experiments' / f'smoke_{name}'
    assert 'SMOKE RUN WITH RANDOMLY INITIALISED STAND-INS' in output
    assert f"a RANDOM network_t stands in, written to {run_dir / 'stand_ins' / 'net_t_random.pth'}" in output
    assert sorted(os.listdir(run_dir / 'stand_ins')) == ['net_t_random.pth', 'net_vqgan_random.pth']
    assert sorted(os.listdir(cwd / 'experiments')) == [f'smoke_{name}']  # nothing where real checkpoints go
    assert not (cwd / 'tb_logger').exists()
    assert {'net_g_3.pth', 'net_his_3.pth', 'net_g_latest.pth'} <= set(os.listdir(run_dir / 'models'))
    log = next(run_dir.glob('train_*.log')).read_text()
    assert 'Model [DCKDModel] is created.' in log and 'iter:       3,' in log and 'iter:       4,' not in log
    for val_set, images in val_sets.items():
        assert f'Number of val images/folders in {val_set}: 1' in log, (val_set, images)
    assert '@ 3 iter' in log and '@ 4 iter' not in log and '@ 5 iter' not in log  # BasicSR said total_iter + 2
    # the console: the preflight, a line per stage, the losses of every iteration, and at the end where the run is
    # and what its numbers are worth; BasicSR's banner, option dump and network printouts are in the log only
    assert 'Preflight: the option schema found no problem' in output and 'iter:       3,' in output
    assert 'Version Information' not in output and 'with parameters' in output and len(output.splitlines()) < 80
    assert 'Version Information' in log and 'model_type: DCKDModel' in log and log.count('SMOKE RUN WITH') == 1
    assert output.count('SMOKE RUN WITH RANDOMLY INITIALISED STAND-INS') == 1
    lines = output.splitlines()
    closing = lines[next(i for i, line in enumerate(lines) if line.startswith(f'Smoke run smoke_{name} done in ')):]
    assert f'Run folder: {run_dir} (log: ' in closing[0]
    assert closing[1] == 'Its losses and metrics come from 3 iterations on tiny patches and mean nothing.'
    assert closing[2].startswith('It used RANDOMLY INITIALISED STAND-INS for network_t (path.pretrain_network_t), '
                                 'network_vqgan (path.pretrain_network_vqgan)')


@pytest.mark.slow
def test_smoke_runs_of_shipped_sr_deblur_and_derain_files_with_stand_ins(tmp_path):
    """Full-size SwinIR-M / NAFNet-width32 / Restormer teachers and the f16 VQGAN, random, 3 CPU iterations each."""
    # SR: SwinIR x4 DCKD; training folders given with --force_yml (the file names DIV2K LMDBs) as
    # datasets_prep/prepare_benchmarks.py writes them (<name>x4.png, hence filename_tmpl), Set5 in the file's layout,
    # Set14 and Urban100 dropped: the README's own-folder example
    sr = tmp_path / 'sr'
    _folder_pairs(sr / 'train' / 'lr', sr / 'train' / 'hr', count=4, size=64, scale=4, lq_template='{}x4')
    _folder_pairs(sr / 'datasets/Benchmark_SR/Set5/LR_bicubic/X4', sr / 'datasets/Benchmark_SR/Set5/HR', size=64,
                  scale=4, lq_template='{}x4')
    output = _smoke(sr, 'train/SwinIR/train_SwinIR_SRx4_DCKD.yml', '--force_yml', 'datasets:train:io_backend:type=disk',
                    'datasets:train:dataroot_gt=train/hr', 'datasets:train:dataroot_lq=train/lr',
                    'datasets:train:filename_tmpl={}x4', 'datasets:val_2=~', 'datasets:val_3=~')
    assert 'Dropped datasets.val_2 (Set14)' in output and 'Dropped datasets.val_3 (Urban100)' in output
    _check_smoke_run(sr, 'SwinIR_SRx4_DCKD', output, {'Set5': 2})

    # deblurring: NAFNet on GoPro, every folder in the file's own layout
    deblur = tmp_path / 'deblur'
    _folder_pairs(deblur / 'datasets/GoPro/train_crops/input', deblur / 'datasets/GoPro/train_crops/target')
    _folder_pairs(deblur / 'datasets/GoPro/test/input', deblur / 'datasets/GoPro/test/target')
    _check_smoke_run(deblur, 'NAFNet_Deblur_DCKD', _smoke(deblur, 'train/NAFNet/train_NAFNet_Deblur_DCKD.yml'),
                     {'GoPro': 2})

    # deraining: Restormer (progressive patches) on Rain13K, validation on Test100 only
    derain = tmp_path / 'derain'
    _folder_pairs(derain / 'datasets/Rain13K/train/input', derain / 'datasets/Rain13K/train/target')
    _folder_pairs(derain / 'datasets/Derain/Test100/input', derain / 'datasets/Derain/Test100/target')
    output = _smoke(derain, 'train/Restormer/train_Restormer_Derain_DCKD.yml', '--force_yml',
                    *[f'datasets:val_{i}=~' for i in range(2, 6)])
    assert 'Progressive patches, stage 2/2 from iter 2: patch 32, batch 1 per GPU.' in output
    _check_smoke_run(derain, 'Restormer_Derain_DCKD', output, {'Test100': 2})


@pytest.mark.slow
def test_smoke_without_stand_in_names_the_missing_teacher_and_data(tmp_path):
    proc = run([str(BIN / 'dckd-train'), '-opt', str(REPO / 'options/train/RCAN/train_RCAN_SRx4_Logits.yml'),
                '--smoke'], cwd=tmp_path, check=False)
    assert proc.returncode == 2
    message = proc.stderr.split('dckd-train: error: ', 1)[1]
    assert 'path.pretrain_network_t: experiments/pretrained_models/RCAN/RCAN_BIX4.pt: no such file' in message
    assert 'datasets.train.dataroot_gt: datasets/DIV2K/DIV2K_train_HR_sub.lmdb does not exist' in message
    assert 'A smoke run still needs data' in message and 'with --stand-in' in message
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize('argv, message', [(['--stand-in'], '--stand-in: only with --smoke'),
                                           (['--smoke', '--launcher', 'pytorch'], '--smoke: runs one process on CPU')])
def test_stand_ins_only_in_a_single_process_smoke_run(monkeypatch, argv, message):
    monkeypatch.setattr(sys, 'argv', ['dckd-train', '-opt', 'x.yml'] + argv)
    with pytest.raises(OptionError, match=message):
        parse_command_line(is_train=True)
