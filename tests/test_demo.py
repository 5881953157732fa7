"""dckd-demo: the README's main job, end to end in its --fast form, plus the pieces it is built from."""
import argparse
import re
from typing import List

import cv2
import numpy as np
import pytest

from helpers import BIN, run
from dckd_basicsr.commands import demo
from dckd_basicsr.integration import training_log


def _train_line(step: int) -> str:
    return (f'2026-11-26 15:13:14,828 INFO: [demo_..][epoch:  1, iter:{step:>8,d}, lr:(1.000e-04,)] [eta: 0:00:14, '
            'time (data): 3.201 (0.042)] l_pix: 3.9117e-02 l_kd: 1.5000e-03 l_dcl: 9.8700e-01 \n')


def test_log_parsing_reads_iterations_and_validation_curves(tmp_path):
    assert int(training_log.ITER_RE.search(_train_line(1234)).group(1).replace(',', '')) == 1234
    def validation(psnr: float, best_iter: int) -> List[str]:
        return ['2026-11-26 15:13:15,000 INFO: Validation Demo\n',
                f'\t # psnr: {psnr:.4f}\tBest: {psnr:.4f} @ {best_iter} iter\n']

    # BasicSR's final validation repeats the last iteration: the later value is kept
    lines = [_train_line(5)] + validation(30.5, 5) + [_train_line(10)] + validation(31.25, 10) + validation(31.26, 10)
    (tmp_path / 'train_demo_20261126_151300.log').write_text(''.join(lines))
    assert demo.read_validation_curves(str(tmp_path)) == [(5, 30.5), (10, 31.26)]


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
    # students validate 4 times, at multiples of print_freq (so the log line before each names its iteration)
    assert opt['logger']['print_freq'] == 10 and opt['val']['val_freq'] == 50
    assert demo.concrete_options('Scratch', args, iters=1500)['val']['val_freq'] == 350
    assert demo.concrete_options(demo.TEACHER, args, iters=400)['val']['val_freq'] == 400
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
    output = proc.stdout + proc.stderr
    # stated up front: duration and the random encoder, before any training; plain lines when not on a terminal
    assert proc.stdout.startswith(f"[demo] a teacher (30 iterations) and three students (15 each): expected wall "
                                  f"time {demo.DURATION['fast']}")
    assert proc.stdout.index('RANDOMLY INITIALISED VQGAN') < proc.stdout.index('[demo] teacher: 30 iterations')
    assert '\r' not in output
    for label, method in (('teacher', 'teacher'), ('Scratch', 'Scratch'), ('Logits', 'Logits'), ('DCKD', 'DCKD')):
        experiment = tmp_path / 'experiments' / f'demo_SRResNet_x2_{method}'
        assert f'[demo] {label}: BasicSR log in {experiment}/train_demo_SRResNet_x2_{method}_<time>.log' in output
        assert f'[demo] {label}: 15/15 iterations' in output or label == 'teacher'
    assert '[demo] teacher: 30/30 iterations, done in' in output
    assert 'randomly initialised VQGAN encoder' in summary
    rows = dict(re.findall(r'^\| (\w+) \| [^|]+ \| [^|]+ \| ([\d.]+) \| [\d.]+ \|$', summary, re.M))
    assert set(rows) == {'Bicubic', 'Teacher', 'Scratch', 'Logits', 'DCKD'}
    psnr = {label: float(value) for label, value in rows.items()}
    for label in ('Teacher', 'Scratch', 'Logits', 'DCKD'):
        assert psnr['Bicubic'] - 2.0 < psnr[label] < 60, (label, psnr)
    for photo in ('camera', 'chelsea', 'motorcycle'):
        assert re.search(rf'^\| {photo} \|( [\d.]+ \|){{5}}$', summary, re.M), photo
    assert re.findall(r'^\| (\d+) \| [\d.]+ \| [\d.]+ \| [\d.]+ \|$', summary, re.M) == ['3', '6', '9', '12', '15']
    assert re.search(r"comparison.png shows a centre crop of '\w+'; each crop's label is the PSNR \(Y\) of that crop",
                     summary)
    image = cv2.imread(str(report / 'comparison.png'))
    assert image is not None and image.shape[0] > 200 and image.shape[1] > 600
    for method in ('teacher', 'Scratch', 'Logits', 'DCKD'):
        assert (tmp_path / 'experiments' / f'demo_SRResNet_x2_{method}' / 'models' / 'net_g_latest.pth').is_file()
        assert (report / 'options' / f'demo_SRResNet_x2_{method}.yml').is_file()

    again = run([str(BIN / 'dckd-demo'), '--fast', '--out', str(tmp_path), '--device', 'cpu'], cwd=tmp_path,
                timeout=600)
    assert again.stdout.count('finished earlier, reused') == 4
    assert 'every run finished earlier and is reused' in again.stdout and 'expected wall time' not in again.stdout
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


def test_plain_progress_lines_when_not_on_a_terminal(capsys):
    progress = demo.Progress('Logits', 100, interactive=False)
    for step in range(0, 101, 5):
        progress.update_to(step)
    progress.close(finished=True)
    lines = capsys.readouterr().out.splitlines()
    assert [re.sub(r', \d+ s$|, done in \d+ s$', '', line) for line in lines] == [
        '[demo] Logits: training, 100 iterations', '[demo] Logits: 25/100 iterations (25%)',
        '[demo] Logits: 50/100 iterations (50%)', '[demo] Logits: 75/100 iterations (75%)',
        '[demo] Logits: 100/100 iterations']


def test_figure_names_the_photo_and_labels_crops_with_their_own_psnr(tmp_path):
    """Two photos; on 'b' the teacher gains most over bicubic, so the figure shows 'b', and each crop's PSNR is
    computed on the crop (the outputs differ from the HR only inside the centre crop for Teacher)."""
    from basicsr.metrics import calculate_psnr
    rng = np.random.default_rng(0)
    hr = {name: rng.integers(0, 256, (120, 120, 3), dtype=np.uint8) for name in ('a', 'b')}
    noisy = {name: np.clip(img.astype(int) + rng.integers(-20, 21, img.shape), 0, 255).astype(np.uint8)
             for name, img in hr.items()}
    teacher = {'a': noisy['a'], 'b': hr['b'].copy()}
    teacher['b'][40:80, 40:80] = noisy['b'][40:80, 40:80]
    results = {'names': ['a', 'b'], 'HR': {'images': hr},
               'Bicubic': {'images': noisy, 'psnr': [20.0, 20.0]}, 'Teacher': {'images': teacher, 'psnr': [20.0, 30.0]}}
    curves = {'Scratch': [(5, 30.0), (10, 30.5)], 'Logits': [(5, 30.1), (10, 30.6)], 'DCKD': [(5, 30.2), (10, 30.7)]}
    crop_psnr = demo.draw_comparison(results, ['Bicubic', 'Teacher'], curves, str(tmp_path / 'c.png'), crop=60)
    expected = calculate_psnr(teacher['b'][30:90, 30:90], hr['b'][30:90, 30:90], crop_border=0, test_y_channel=True)
    assert crop_psnr['Teacher'] == pytest.approx(expected)
    assert crop_psnr['Bicubic'] == pytest.approx(calculate_psnr(noisy['b'][30:90, 30:90], hr['b'][30:90, 30:90],
                                                                crop_border=0, test_y_channel=True))
    image = cv2.imread(str(tmp_path / 'c.png'))
    assert image.shape[1] == 3 * (120 + 8) and image.shape[0] == 26 + 120 + 8 + 22 + 260
