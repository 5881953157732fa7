"""Preflight: every missing file an option file names, reported at once, before any folder is created; and the
option handling around it (dropping a dataset with --force_yml, skipping missing test sets, capping workers)."""
import argparse
import os
from pathlib import Path

import pytest

from helpers import BIN, PYTHON, dckd_train_options, run, save_random_network, sr_train_options, write_options
from dckd_basicsr.errors import OptionError
from dckd_basicsr.integration import preflight
from dckd_basicsr.integration.command_line import split_force_yml
from dckd_basicsr.integration.run_options import cap_workers

SWINIR_X4 = 'experiments/pretrained_models/SwinIR/001_classicalSR_DIV2K_s48w8_SwinIR-M_x4.pth'
VQGAN = 'experiments/pretrained_models/VQGAN/vqgan_imagenet_f16_1024/checkpoints/last.ckpt'


def _missing_everything(tmp_path: Path, toy_data: dict) -> dict:
    opt = dckd_train_options(tmp_path, toy_data, name='pf', total_iter=3, logger__use_tb_logger=True)
    opt['path'].update(pretrain_network_t=SWINIR_X4, pretrain_network_vqgan=VQGAN,
                       resume_state='experiments/pf/training_states/5.state')
    opt['datasets']['val']['dataroot_gt'] = 'datasets/Benchmark_SR/Set5/HR'
    opt['datasets']['train']['dataroot_lq'] = 'datasets/DIV2K/DIV2K_train_LR_bicubic_X4_sub.lmdb'
    return opt


@pytest.mark.slow
def test_every_missing_file_is_named_in_one_message_and_no_folder_is_created(tmp_path, toy_data):
    cwd = tmp_path / 'cwd'
    cwd.mkdir()
    opt_file = write_options(tmp_path / 'pf.yml', _missing_everything(tmp_path, toy_data))
    proc = run([str(BIN / 'dckd-train'), '-opt', opt_file], cwd=cwd, check=False)
    assert proc.returncode == 2 and 'Traceback' not in proc.stderr
    message = proc.stderr.split('dckd-train: error: ', 1)[1]
    assert message.startswith('5 files or folders named by the option file are missing or unusable (nothing was '
                              'built or written):')
    lines = message.splitlines()[1:]
    assert sorted(line.split(':')[0].strip() for line in lines) == [
        'datasets.train.dataroot_lq', 'datasets.val.dataroot_gt', 'path.pretrain_network_t',
        'path.pretrain_network_vqgan', 'path.resume_state']
    where = dict(line.strip().split(': ', 1) for line in lines)
    assert 'datasets_prep/prepare_div2k.py' in where['datasets.train.dataroot_lq']
    assert 'datasets_prep/prepare_benchmarks.py' in where['datasets.val.dataroot_gt']
    assert SWINIR_X4 in where['path.pretrain_network_t'] and 'JingyunLiang/SwinIR' in where['path.pretrain_network_t']
    assert 'taming-transformers' in where['path.pretrain_network_vqgan']
    assert 'f16' in where['path.pretrain_network_vqgan'] and '1024' in where['path.pretrain_network_vqgan']
    assert 'training run named pf' in where['path.resume_state']
    assert sorted(os.listdir(cwd)) == []  # no experiments/, tb_logger/ or results/


def test_where_files_come_from():
    assert 'RCAN_BIX4.pt' in preflight.checkpoint_source('pretrain_network_t', 'x/RCAN/RCAN_BIX4.pt')
    assert 'megvii-research/NAFNet' in preflight.checkpoint_source('pretrain_network_t', 'p/NAFNet-GoPro-width32.pth')
    assert 'swz30/Restormer' in preflight.checkpoint_source('pretrain_network_t', 'p/deraining.pth')
    assert 'swz30/Restormer' in preflight.checkpoint_source('pretrain_network_t', 'p/motion_deblurring.pth')
    assert 'taming-transformers' in preflight.checkpoint_source('pretrain_network_vqgan', 'anything.pth')
    # a student checkpoint is written by the training file of that run name, when this source tree has one
    assert preflight.checkpoint_source('pretrain_network_g', 'experiments/SwinIR_SRx4_DCKD/models/net_g_latest.pth') \
        == 'written by dckd-train -opt options/train/SwinIR/train_SwinIR_SRx4_DCKD.yml'
    assert 'prepare_gopro.py' in preflight.data_source('datasets/GoPro/test/input')
    assert 'prepare_derain.py' in preflight.data_source('datasets/Derain/Rain100H/target')
    assert 'make_demo_data.py' in preflight.data_source('datasets/demo/DIV2K/DIV2K_train_HR_sub.lmdb')
    assert '--force_yml' in preflight.data_source('/my/photos')


def test_a_teacher_or_encoder_without_a_checkpoint_option_is_named():
    opt = {'network_t': {'type': 'RCAN'}, 'network_vqgan': {'type': 'VQGAN'}, 'path': {'pretrain_network_t': None},
           'train': {'cl_opt': {'type': 'ContrasLoss'}}}
    assert [p.split(':')[0] for p in preflight.checkpoint_problems(opt)] == ['path.pretrain_network_t',
                                                                             'path.pretrain_network_vqgan']
    assert 'not set, but network_t needs its checkpoint' in preflight.checkpoint_problems(opt)[0]
    assert preflight.checkpoint_problems(opt, stand_ins=['pretrain_network_t', 'pretrain_network_vqgan']) == []
    del opt['train']['cl_opt']  # the encoder is only needed by cl_opt / ce_opt
    assert len(preflight.checkpoint_problems(opt)) == 1


def test_one_problem_is_one_line_and_resume_skips_the_networks_the_run_saved(tmp_path, toy_data):
    opt = sr_train_options(toy_data, path__pretrain_network_g=str(tmp_path / 'g.pth'))
    opt['path']['training_states'] = str(tmp_path / 'states')
    with pytest.raises(OptionError, match=r'^path.pretrain_network_g: .*g.pth: no such file; give the checkpoint'):
        preflight.check_files(opt)
    opt['auto_resume'] = True  # no saved state yet: the file is still needed
    with pytest.raises(OptionError, match='path.pretrain_network_g'):
        preflight.check_files(opt)
    (tmp_path / 'states').mkdir()
    (tmp_path / 'states' / '4.state').write_bytes(b'')
    preflight.check_files(opt)  # resumed: net_g comes from the run's own models folder


def test_missing_test_sets_are_skipped_unless_all_are_missing(tmp_path, toy_data, capsys):
    sets = {f'test_{i}': {'name': name, 'dataroot_gt': toy_data['gt'] if i == 1 else str(tmp_path / name / 'HR'),
                          'dataroot_lq': toy_data['lq']} for i, name in ((1, 'Set5'), (2, 'B100'), (3, 'Manga109'))}
    opt = {'datasets': dict(sets)}
    assert preflight.skip_missing_test_sets(opt) == ['test_2', 'test_3']
    assert list(opt['datasets']) == ['test_1']
    out = capsys.readouterr().out
    assert 'Skipped datasets.test_2 (B100): dataroot_gt' in out and 'Testing on Set5.' in out
    opt = {'datasets': {k: v for k, v in sets.items() if k != 'test_1'}}
    assert preflight.skip_missing_test_sets(opt) == [] and len(opt['datasets']) == 2  # check_files names both


def _args(tmp_path: Path, *force_yml: str) -> argparse.Namespace:
    opt_file = write_options(tmp_path / 'o.yml', {'name': 'x', 'datasets': {'test_1': {'name': 'a'},
                                                                            'test_2': {'name': 'b'}},
                                                  'path': {'pretrain_network_g': None}})
    return argparse.Namespace(opt=opt_file, force_yml=list(force_yml))


def test_force_yml_drops_datasets_and_names_bad_entries(tmp_path):
    kept, dropped = split_force_yml(_args(tmp_path, 'datasets:test_2=~', 'path:pretrain_network_g=g.pth', 'name=y'))
    assert kept == ['path:pretrain_network_g=g.pth', 'name=y'] and dropped == ['test_2']
    for entry, expected in (('datasets:test_9=~', 'has no dataset test_9; it has test_1, test_2'),
                            ('datasets:test_1=foo', 'write datasets:test_1=~ to drop it'),
                            ('val:metrics:psnr:crop_border=4', 'has no block val to set crop_border in'),
                            ('name', "with one '='")):
        with pytest.raises(OptionError, match=expected):
            split_force_yml(_args(tmp_path, entry))


def test_workers_are_capped_at_the_cpus_this_process_may_use(capsys):
    cpus = len(os.sched_getaffinity(0))
    opt = {'datasets': {'train': {'num_worker_per_gpu': cpus + 6}, 'val': {'num_worker_per_gpu': 0}}}
    cap_workers(opt)
    assert opt['datasets']['train']['num_worker_per_gpu'] == cpus and opt['datasets']['val']['num_worker_per_gpu'] == 0
    assert capsys.readouterr().out == (f'datasets.train.num_worker_per_gpu: {cpus + 6} capped at {cpus}, the CPUs this '
                                       'process may use.\n')


@pytest.mark.slow
def test_dropping_a_test_set_on_the_command_line_runs_the_others(tmp_path, toy_data):
    """``dckd-test ... --force_yml datasets:test_2=~``: BasicSR 1.4.2's parser raised a TypeError here."""
    train_opt = sr_train_options(toy_data)
    checkpoint = save_random_network(train_opt['network_g'], tmp_path / 'g.pth', seed=0)
    val = train_opt['datasets']['val']
    test_opt = {'name': 'drop', 'model_type': 'SRModel', 'scale': 2, 'num_gpu': 0,
                'datasets': {'test_1': dict(val, name='kept'), 'test_2': dict(val, name='dropped'),
                             'test_3': dict(val, name='absent', dataroot_gt=str(tmp_path / 'absent'))},
                'network_g': train_opt['network_g'],
                'path': {'pretrain_network_g': checkpoint, 'strict_load_g': True},
                'val': {'save_img': False, 'metrics': train_opt['val']['metrics']}}
    test_file = write_options(tmp_path / 'test.yml', test_opt)
    proc = run([PYTHON, '-m', 'dckd_basicsr.test', '-opt', test_file, '--force_yml', 'datasets:test_2=~'],
               cwd=tmp_path)
    assert 'Dropped datasets.test_2 (dropped) (--force_yml datasets:test_2=~).' in proc.stdout
    assert 'Skipped datasets.test_3 (absent): dataroot_gt' in proc.stdout
    logs = list((tmp_path / 'results' / 'drop').glob('test_drop_*.log'))
    text = logs[0].read_text()
    assert 'Validation kept' in text and 'Validation dropped' not in text and 'Validation absent' not in text


def _x4_folders(root: Path, names=('baby', 'bird', 'woman'), lq_size: int = 12, suffix: str = 'x4') -> dict:
    """HR and LR folders as datasets_prep/prepare_benchmarks.py writes them (LR named <name>x4.png)."""
    import cv2
    import numpy as np
    (root / 'HR').mkdir(parents=True)
    (root / 'LR').mkdir()
    for name in names:
        cv2.imwrite(str(root / 'HR' / f'{name}.png'), np.full((48, 50, 3), 128, np.uint8))  # 50: mod-4 crop is 48
        cv2.imwrite(str(root / 'LR' / f'{name}{suffix}.png'), np.full((lq_size, lq_size, 3), 128, np.uint8))
    return {'gt': str(root / 'HR'), 'lq': str(root / 'LR')}


def test_pairing_names_the_missing_filename_tmpl_and_the_fix(tmp_path):
    data = _x4_folders(tmp_path / 'Set5')
    opt = sr_train_options(data, scale=4)
    opt['datasets']['train'].pop('filename_tmpl', None)
    problems = preflight.pairing_problems(opt)
    assert problems[0] == (f"datasets.train.filename_tmpl: 3 of 3 GT images have no LQ image in {data['lq']} under "
                           "filename_tmpl '{}' (baby.png -> baby.png is missing); the LQ names end in 'x4' "
                           "(babyx4.png): set datasets.train.filename_tmpl: '{}x4'.")
    for phase in ('train', 'val'):
        opt['datasets'][phase]['filename_tmpl'] = '{}x4'
    assert preflight.pairing_problems(opt) == []
    opt['datasets']['val']['filename_tmpl'] = '{}_x4'
    assert preflight.pairing_problems(opt)[0].endswith("set datasets.val.filename_tmpl: '{}x4'.")
    for number, lq in enumerate(sorted(Path(data['lq']).iterdir())):  # LQ names unrelated to the GT names
        lq.rename(lq.with_name(f'lr{number}.png'))
    assert preflight.pairing_problems(opt)[0].endswith(
        "(baby.png -> babyx4.png is missing); name the LQ images as their GT images, or set datasets.train."
        "filename_tmpl (the LQ name of a GT image <name>.png is filename_tmpl.format(<name>) + '.png', e.g. '{}x4').")


def test_pairing_compares_sampled_sizes_with_the_scale(tmp_path):
    data = _x4_folders(tmp_path / 'Set5', lq_size=24)  # x2 images under a x4 option file
    opt = sr_train_options(data, scale=4)
    for phase in ('train', 'val'):
        opt['datasets'][phase]['filename_tmpl'] = '{}x4'
    assert preflight.pairing_problems(opt)[0] == ('datasets.train: baby.png is 50x48 but its LQ babyx4.png is 24x24, a '
                                                  'x2 pair, while scale is 4; set scale to the data\'s factor or point '
                                                  'datasets.train.dataroot_lq at the x4 images.')


def test_a_damaged_checkpoint_is_named_by_the_preflight(tmp_path, toy_data):
    import torch
    torch.save({'params': {'w': torch.zeros(64, 64)}}, tmp_path / 'g.pth')
    (tmp_path / 'g.pth').write_bytes((tmp_path / 'g.pth').read_bytes()[:3000])
    opt = sr_train_options(toy_data, path__pretrain_network_g=str(tmp_path / 'g.pth'))
    assert preflight.checkpoint_problems(opt) == [
        f"path.pretrain_network_g: {tmp_path / 'g.pth'}: the file ends early (3000 bytes; a truncated download or an "
        'interrupted write?): it starts as a PyTorch checkpoint but its end is missing; download it again, or run '
        'again the training that wrote it.']
