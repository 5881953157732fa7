"""dckd-demo: the README's main job, end to end in its --fast form, plus the pieces it is built from."""
import argparse
import re

import cv2
import pytest

from conftest import BIN, run
from dckd_basicsr import demo


def test_log_line_parsing_reads_iteration_and_losses():
    line = ('2026-11-26 15:13:14,828 INFO: [demo_..][epoch:  1, iter:   1,234, lr:(1.000e-04,)] [eta: 0:00:14, '
            'time (data): 3.201 (0.042)] l_pix: 3.9117e-02 l_kd: 1.5000e-03 l_dcl: 9.8700e-01 \n')
    match = demo.ITER_RE.search(line)
    assert int(match.group(1).replace(',', '')) == 1234
    assert demo.LOSS_RE.findall(match.group(2)) == [('l_pix', '3.9117e-02'), ('l_kd', '1.5000e-03'),
                                                      ('l_dcl', '9.8700e-01')]


def test_concrete_options_change_only_scale_length_device_and_seed():
    args = argparse.Namespace(scale=4, seed=3, device='cpu', vqgan=None)
    template = demo.load_template('student_DCKD')
    opt = demo.concrete_options('DCKD', args, iters=200)
    assert opt['name'] == 'demo_SRResNet_x4_DCKD' and opt['scale'] == 4 and opt['num_gpu'] == 0
    assert opt['manual_seed'] == 3
    assert opt['network_g']['upscale'] == opt['network_t']['upscale'] == 4
    assert opt['datasets']['train']['dataroot_lq'].endswith('DIV2K_train_LR_bicubic_X4_sub.lmdb')
    assert opt['datasets']['train']['gt_size'] == template['datasets']['train']['gt_size'] * 2
    assert opt['datasets']['val']['dataroot_lq'].endswith('LR_bicubic/X4')
    assert opt['datasets']['val']['filename_tmpl'] == '{}x4'
    assert {m['crop_border'] for m in opt['val']['metrics'].values()} == {4}
    assert opt['path']['pretrain_network_t'] == 'experiments/demo_SRResNet_x4_teacher/models/net_g_latest.pth'
    assert opt['train']['total_iter'] == 200 and opt['train']['scheduler']['milestones'] == [150]
    assert opt['train']['ema_decay'] == 0.95
    # the loss blocks and the networks' sizes are the template's
    for key in ('cl_opt', 'ce_opt', 'logits_opt', 'pixel_opt', 'num_neg', 'update_decay', 'step'):
        assert opt['train'][key] == template['train'][key]
    assert opt['network_vqgan'] == template['network_vqgan']


@pytest.mark.slow
def test_fast_demo_end_to_end_and_rerun_reuses_stages(tmp_path):
    proc = run([str(BIN / 'dckd-demo'), '--fast', '--out', str(tmp_path), '--device', 'cpu'], cwd=tmp_path,
               timeout=900)
    report = tmp_path / 'results' / 'demo'
    summary = (report / 'summary.md').read_text()
    assert 'RANDOMLY INITIALISED VQGAN' in proc.stdout + proc.stderr
    assert 'randomly initialised VQGAN encoder' in summary
    rows = dict(re.findall(r'^\| (\w+) \| [^|]+ \| [^|]+ \| ([\d.]+) \| [\d.]+ \|$', summary, re.M))
    assert set(rows) == {'Bicubic', 'Teacher', 'Scratch', 'Logits', 'DCKD'}
    psnr = {label: float(value) for label, value in rows.items()}
    for label in ('Teacher', 'Scratch', 'Logits', 'DCKD'):
        assert psnr['Bicubic'] - 2.0 < psnr[label] < 60, (label, psnr)
    image = cv2.imread(str(report / 'comparison.png'))
    assert image is not None and image.shape[0] > 200 and image.shape[1] > 600
    for method in ('teacher', 'Scratch', 'Logits', 'DCKD'):
        assert (tmp_path / 'experiments' / f'demo_SRResNet_x2_{method}' / 'models' / 'net_g_latest.pth').is_file()
        assert (report / 'options' / f'demo_SRResNet_x2_{method}.yml').is_file()

    again = run([str(BIN / 'dckd-demo'), '--fast', '--out', str(tmp_path), '--device', 'cpu'], cwd=tmp_path,
                timeout=600)
    assert again.stdout.count('finished earlier, reused') == 4
    assert (report / 'summary.md').read_text().split('Total time')[0] == summary.split('Total time')[0]


def test_missing_vqgan_file_is_one_clear_error(tmp_path):
    with pytest.raises(SystemExit) as info:
        demo.main(['--out', str(tmp_path), '--vqgan', str(tmp_path / 'last.ckpt')])
    assert info.value.code == 2


def test_vqgan_flag_switches_to_the_full_taming_encoder(tmp_path):
    checkpoint = tmp_path / 'last.ckpt'
    checkpoint.write_bytes(b'')
    args = argparse.Namespace(scale=2, seed=0, device='auto', vqgan=str(checkpoint))
    opt = demo.concrete_options('DCKD', args, iters=100)
    assert opt['network_vqgan']['type'] == 'VQGAN' and opt['network_vqgan']['n_embed'] == 1024
    assert opt['network_vqgan']['ddconfig']['ch'] == 128
    assert opt['network_vqgan']['ddconfig']['ch_mult'] == [1, 1, 2, 2, 4]
    assert opt['path']['pretrain_network_vqgan'] == str(checkpoint)
    assert opt['path']['param_key_vqgan'] == 'state_dict' and opt['path']['strict_load_vqgan'] is False
    assert opt['num_gpu'] == 'auto'
