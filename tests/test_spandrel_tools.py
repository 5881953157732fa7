"""The commands with students of spandrel's architectures: ``dckd-infer``/``dckd-export`` detect them from their
files (``checkpoints/detect.py``, ``checkpoints/students.py``), ``dckd-profile`` counts SPAN as deployed next to its
training count, ``dckd-results`` gives each student (and each teacher it is distilled from) its own blocks."""
import copy
import os

import cv2
import numpy as np
import pytest
import torch
import yaml
from basicsr.archs import build_network

from helpers import tiny_network

import dckd_basicsr  # noqa: F401  (registers the archs)
from dckd_basicsr.checkpoints.students import load_student
from dckd_basicsr.commands import profile
from dckd_basicsr.commands.infer import main as infer_main
from dckd_basicsr.commands.measurement import measure
from dckd_basicsr.commands.results import collect_runs, format_tables, labels_from_name
from dckd_basicsr.errors import OptionError

SPAN_48 = {'type': 'SPAN', 'num_in_ch': 3, 'num_out_ch': 3, 'feature_channels': 48, 'upscale': 4}


def save(net_opt: dict, path, key='params_ema', seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    net = build_network(copy.deepcopy(net_opt))
    torch.save({key: net.state_dict()} if key else net.state_dict(), path)
    return net.eval()


# ---------------------------------------------------------------------------------------------- detection
def test_a_basicsr_checkpoint_of_a_span_student_is_detected_without_options(tmp_path):
    net = save(tiny_network('spandrel_SPAN'), tmp_path / 'net_g_2.pth')
    student = load_student(str(tmp_path / 'net_g_2.pth'))
    assert student.opt == {'type': 'SPAN', 'num_in_ch': 3, 'num_out_ch': 3, 'feature_channels': 8, 'upscale': 2}
    assert student.param_key == 'params_ema' and student.pad_multiple == 1
    assert any(a.startswith('img_range: 255.0') for a in student.assumed)  # what spandrel assumes is shown
    x = torch.rand(1, 3, 13, 11)
    with torch.no_grad():
        assert torch.allclose(student.net(x), net(x), rtol=0, atol=1e-6)


def test_a_basicsr_rrdbnet_checkpoint_is_read_as_spandrels_esrgan(tmp_path):
    """BasicSR's RRDBNet keys (``conv_first``, ``body.N.rdbM``): spandrel reads them into its ESRGAN layout, and the
    student built from that reading computes the RRDBNet."""
    rrdb = {'type': 'RRDBNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 1, 'num_grow_ch': 32}
    net = save(rrdb, tmp_path / 'rrdb.pth', key='params')
    student = load_student(str(tmp_path / 'rrdb.pth'))
    assert student.opt['type'] == 'ESRGAN'
    x = torch.rand(1, 3, 9, 10)
    with torch.no_grad():
        out = student.net(x)
        assert out.shape == (1, 3, 36, 40) and torch.allclose(out, net(x), rtol=0, atol=1e-5)


def test_a_spandrel_file_of_an_architecture_that_is_no_student_says_why(tmp_path):
    from spandrel.architectures.DRUNet import DRUNet
    torch.save(DRUNet(in_nc=4, out_nc=3, nc=[8, 16, 32, 64], nb=2).state_dict(), tmp_path / 'drunet.pth')
    with pytest.raises(OptionError, match=r'drunet\.pth: spandrel detects a DRUNet \(DRUNet\), which cannot be run '
                                          r'as a student here: it takes the image plus a noise-level map'):
        load_student(str(tmp_path / 'drunet.pth'))


def test_dckd_infer_runs_a_file_exported_for_spandrel(tmp_path):
    """A SPAN student exported with ``dckd-export --to spandrel`` (a bare safetensors state dict) restores an image
    with ``dckd-infer`` and nothing else, and gives what spandrel gives."""
    from spandrel import ModelLoader

    from dckd_basicsr.commands.export import main as export_main
    save(tiny_network('spandrel_SPAN'), tmp_path / 'net_g_2.pth')
    exported = str(tmp_path / 'span.safetensors')
    export_main(['--model', str(tmp_path / 'net_g_2.pth'), '--to', 'spandrel', '-o', exported])
    image = (np.random.default_rng(0).random((10, 12, 3)) * 255).astype(np.uint8)
    cv2.imwrite(str(tmp_path / 'img.png'), image)
    written = infer_main(['-i', str(tmp_path / 'img.png'), '-o', str(tmp_path / 'out'), '--model', exported,
                          '--device', 'cpu', '--quiet'])
    out = cv2.imread(written[0], cv2.IMREAD_UNCHANGED)
    assert out.shape == (20, 24, 3)
    rgb = torch.from_numpy(image[:, :, ::-1].astype(np.float32) / 255).permute(2, 0, 1)[None]
    expected = ModelLoader().load_from_file(exported)(rgb)[0].permute(1, 2, 0).numpy()
    assert np.abs(out[:, :, ::-1].astype(np.float64) - np.round(expected * 255)).max() <= 1


# ---------------------------------------------------------------------------------------------- profile
def test_profile_counts_span_as_deployed_next_to_its_training_count(tmp_path):
    """SPAN-48 x4: 1,840,488 parameters trained, 426,288 deployed (its paper's 0.43M); the FLOPs are those of the
    fused network (2 per multiply-add of 426,288 weights at each of 16x16 positions, plus the bias-free part)."""
    m = measure(SPAN_48, size=16, runs=0, memory=False)
    assert (m.params, m.deployed_params) == (1_840_488, 426_288)
    assert m.flops < 2 * 426_288 * 16 * 16 * 1.01
    save(SPAN_48, tmp_path / 'net_g_5.pth')
    rows = profile.model_rows([str(tmp_path / 'net_g_5.pth')])
    assert rows[0].student['type'] == 'SPAN' and rows[0].teacher is None
    table = profile.format_table(rows, {profile.network_key(rows[0].student): m}, 16, 1, 0, 0)
    assert '| net_g_5.pth | student | SPAN x4 | 1,840,488 (deployed 426,288) |' in table


def test_profile_describes_the_scale_of_spandrel_students():
    assert profile._describe({'type': 'SAFMN', 'dim': 36, 'upscaling_factor': 3}) == 'SAFMN x3'
    assert profile._describe({'type': 'SwinIR', 'upscale': 2}) == 'SwinIR x2'


# ---------------------------------------------------------------------------------------------- results
LOG = """2025-01-01 12:00:00,000 INFO: Validation Set5
\t # psnr: {psnr:.4f}\tBest: {psnr:.4f} @ 5000 iter
\t # ssim: 0.8000\tBest: 0.8000 @ 5000 iter

"""


def write_run(root, name: str, psnr: float, student: str, model_type: str, teacher=None, **train) -> None:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / f'train_{name}_20250101_120000.log').write_text(LOG.format(psnr=psnr))
    opt = {'name': name, 'model_type': model_type, 'scale': 4, 'network_g': {'type': student}, 'train': train}
    if teacher:
        opt['network_t'] = teacher
    (folder / f'{name}.yml').write_text(yaml.safe_dump(opt))


def test_results_give_efficient_students_their_own_blocks_per_teacher(tmp_path):
    kd = dict(cl_opt={}, ce_opt={})
    write_run(tmp_path, 'SwinIR_SRx4_DCKD', 32.40, 'SwinIR', 'DCKDModel', {'type': 'SwinIR'}, **kd)
    write_run(tmp_path, 'SPAN_SRx4_Scratch', 31.00, 'SPAN', 'SRModel')
    write_run(tmp_path, 'SPAN_SRx4_DCKD', 31.20, 'SPAN', 'DCKDModel', {'type': 'SwinIR'}, **kd)
    write_run(tmp_path, 'SPAN_SRx4_DCKDstar_SpandrelTeacher', 31.30, 'SPAN', 'DCKDModel',
              {'type': 'SpandrelTeacher', 'architecture': 'HAT'}, lcr_opt={}, **kd)
    write_run(tmp_path, 'SwinIR_to_SAFMN_SRx4_Logits', 30.50, 'SAFMN', 'KDModel', {'type': 'SwinIR'}, logits_opt={})
    text = format_tables(collect_runs([str(tmp_path)]))
    blocks = {part.split('\n')[0]: part for part in text.split('## ')[1:]}
    swinir = blocks['SwinIR x4 (super-resolution, PSNR/SSIM on Y)']
    assert '| DCKD | ours | 32.40/0.8000 |' in swinir and '31.' not in swinir and '30.50' not in swinir
    assert '| | paper | 32.49/0.8991 |' in swinir
    by_swinir = blocks['SPAN x4, teacher SwinIR (super-resolution, PSNR/SSIM on Y)']
    assert '| Scratch | ours | 31.00/0.8000 |' in by_swinir and '| DCKD | ours | 31.20/0.8000 |' in by_swinir
    assert 'paper' not in by_swinir and 'DCKD*' not in by_swinir
    by_hat = blocks['SPAN x4, teacher HAT (SpandrelTeacher) (super-resolution, PSNR/SSIM on Y)']
    assert '| Scratch | ours | 31.00/0.8000 |' in by_hat and '| DCKD* | ours | 31.30/0.8000 |' in by_hat
    safmn = blocks['SAFMN x4, teacher SwinIR (super-resolution, PSNR/SSIM on Y)']  # its name's SwinIR: the teacher
    assert '| Logits | ours | 30.50/0.8000 |' in safmn
    assert len(blocks) == 5  # the four above and the runs table


def test_run_names_state_spandrel_students_and_teachers():
    assert labels_from_name('SPAN_SRx4_DCKDstar_SpandrelTeacher') == dict(
        backbone='SPAN', task='SR', scale=4, method='DCKD*', teacher='SpandrelTeacher')
    assert labels_from_name('002_RealPLKSR_SRx2_Logits')['backbone'] == 'RealPLKSR'
    assert labels_from_name('SpandrelSwinIR_SRx4_Scratch')['backbone'] == 'SpandrelSwinIR'


def test_runs_without_options_are_grouped_by_their_names(tmp_path):
    for name, psnr in (('SPAN_SRx4_Scratch', 31.0), ('SAFMN_SRx4_Scratch', 30.0)):
        os.makedirs(tmp_path / name)
        (tmp_path / name / f'test_{name}_20250101_120000.log').write_text(LOG.format(psnr=psnr))
    text = format_tables(collect_runs([str(tmp_path)]))
    assert '## SPAN x4 (super-resolution' in text and '## SAFMN x4 (super-resolution' in text
