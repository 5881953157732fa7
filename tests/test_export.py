"""dckd-export (dckd_basicsr/commands/export.py): ONNX and TorchScript round trips at sizes other than the export
size and no multiple of the window, spandrel files that spandrel loads and runs like the student, clear errors."""
import re

import numpy as np
import pytest
import torch
from basicsr.archs import build_network
from helpers import BIN, run, tiny_network, write_options

from dckd_basicsr.archs.padding import PaddedNetwork, padded_forward
from dckd_basicsr.checkpoints.spandrel_export import spandrel_state_dict
from dckd_basicsr.checkpoints.students import load_student
from dckd_basicsr.commands.export import check_sizes, export, export_onnx, main
from dckd_basicsr.errors import OptionError

SWINIR = tiny_network('swinir_student', depths=[2])  # window 4, a shifted-window block (attention mask)
NAFNET = dict(type='NAFNet', img_channel=3, width=8, middle_blk_num=1, enc_blk_nums=[1, 1], dec_blk_nums=[1, 1])


def student_file(tmp_path, net_opt, seed=0, name='net_g_5.pth'):
    torch.manual_seed(seed)
    net = build_network(dict(net_opt)).eval()
    torch.save({'params': net.state_dict(), 'params_ema': net.state_dict()}, tmp_path / name)
    return net, str(tmp_path / name)


def reference(net, x, multiple):
    with torch.no_grad():
        return padded_forward(net, x, multiple)


def test_check_sizes_differ_and_are_no_multiple_of_the_window():
    (h0, w0), (h, w), (h2, w2) = check_sizes(16, 4, avoid=20)
    assert h0 == w0 == 21  # odd, off the window, and padded (24) not to img_size: 17 and 19 would pad to 20
    assert (h, w) != (h0, w0) and h % 4 and w % 4
    assert h2 == w2 and h2 % 16 == 0
    assert check_sizes(16, 4, avoid=None)[0] == (17, 17) and check_sizes(64, 1)[0] == (65, 65)


@pytest.mark.slow
def test_onnx_swinir_dynamic_size_round_trip(tmp_path):
    import onnxruntime
    net, path = student_file(tmp_path, SWINIR)
    result = export(load_student(path), 'onnx', str(tmp_path / 'swinir.onnx'), size=16)
    assert result['sizes'][0] != result['sizes'][1] and result['sizes'][1][0] % 4 and result['sizes'][1][1] % 4
    assert max(result['max_abs_diff']) <= 1e-4
    session = onnxruntime.InferenceSession(str(tmp_path / 'swinir.onnx'), providers=['CPUExecutionProvider'])
    for shape in ((1, 3, 13, 22), (2, 3, 9, 31)):  # neither the export size nor multiples of the window; batch 2
        x = torch.rand(*shape)
        out = session.run(None, {'input': x.numpy()})[0]
        expected = reference(net, x, 4).numpy()
        assert out.shape == expected.shape == (shape[0], 3, 2 * shape[2], 2 * shape[3])
        assert np.abs(out - expected).max() <= 1e-4


def test_onnx_rcan_round_trip_with_dynamic_batch_and_its_convention(tmp_path, capsys):
    import json

    import onnx
    import onnxruntime
    net, path = student_file(tmp_path, tiny_network('rcan_student'))
    result = export(load_student(path), 'onnx', str(tmp_path / 'rcan.onnx'), size=16)
    assert max(result['max_abs_diff']) <= 1e-4 and len(result['max_abs_diff']) == 4  # three sizes, then a batch of 2
    session = onnxruntime.InferenceSession(str(tmp_path / 'rcan.onnx'), providers=['CPUExecutionProvider'])
    for batch in (1, 2, 3):
        x = torch.rand(batch, 3, 11, 19)
        out = session.run(None, {'input': x.numpy()})[0]
        assert out.shape == (batch, 3, 22, 38) and np.abs(out - reference(net, x, 1).numpy()).max() <= 1e-4
    # the convention: next to the file, in the ONNX metadata, on the console; a line per stage with its duration
    written = json.loads((tmp_path / 'rcan.onnx.json').read_text())
    assert (written['scale'], written['input']['shape'], written['input']['range']) == (2, ['N', 3, 'H', 'W'],
                                                                                        [0.0, 1.0])
    assert written['output']['shape'] == ['N', 3, '2*H', '2*W'] and written['input']['color'] == 'RGB'
    metadata = {p.key: p.value for p in onnx.load(str(tmp_path / 'rcan.onnx')).metadata_props}
    assert json.loads(metadata['dckd_basicsr.convention']) == written
    out = capsys.readouterr().out
    assert "input 'input' (N, 3, H, W) float32 RGB in [0, 1], NCHW, dynamic N, H and W" in out
    assert re.search(r'exporting RCAN to ONNX \(opset 18.*\): done in \d+\.\d s', out)
    assert re.search(r'checking the ONNX file with onnxruntime: done in \d+\.\d s', out)
    assert 'onnxruntime vs PyTorch at input 2x3x' in out


@pytest.mark.parametrize('net_opt, multiple', [(SWINIR, 4), (NAFNET, 1)], ids=['swinir', 'nafnet'])
def test_torchscript_round_trip(tmp_path, net_opt, multiple):
    net, path = student_file(tmp_path, net_opt)
    result = export(load_student(path), 'torchscript', str(tmp_path / 'net.pt'), size=16)
    assert max(result['max_abs_diff']) <= 1e-4
    loaded = torch.jit.load(str(tmp_path / 'net.pt'))
    assert (tmp_path / 'net.pt.json').is_file()
    x = torch.rand(2, 3, 13, 22)  # batch 2: the trace keeps the batch dynamic too
    with torch.no_grad():
        assert (loaded(x) - reference(net, x, multiple)).abs().max().item() <= 1e-4


@pytest.mark.parametrize('net_opt', [
    SWINIR,
    dict(SWINIR, img_range=255.),  # spandrel assumes 1 for window 4: folded into conv_first / conv_last
    tiny_network('rcan_student'),
    tiny_network('rcan_student', img_range=1., res_scale=0.5, rgb_mean=[0.3, 0.5, 0.6]),  # all folded
    NAFNET,
], ids=['swinir', 'swinir_range255', 'rcan', 'rcan_range1_resscale', 'nafnet'])
def test_spandrel_loads_the_exported_student(tmp_path, net_opt):
    from spandrel import ModelLoader
    net, path = student_file(tmp_path, net_opt)
    student = load_student(path, write_options(tmp_path / 'opt.yml', {'network_g': net_opt}))
    export(student, 'spandrel', str(tmp_path / 'student.safetensors'), size=16)
    descriptor = ModelLoader().load_from_file(str(tmp_path / 'student.safetensors'))
    assert descriptor.architecture.id == net_opt['type']
    assert descriptor.scale == net_opt.get('upscale', 1)
    multiple = net_opt.get('window_size', 1)
    for shape in ((1, 3, 16, 16), (1, 3, 13, 22)):
        x = torch.rand(*shape)
        with torch.no_grad():
            out = descriptor(x.clone())
        assert (out - reference(net, x, multiple).clamp(0, 1)).abs().max().item() <= 1e-5


def test_spandrel_rcan_uses_the_official_layout(tmp_path):
    net, path = student_file(tmp_path, tiny_network('rcan_student'))
    keys = set(spandrel_state_dict(load_student(path)))
    assert {'head.0.weight', 'body.0.body.0.body.0.weight', 'body.0.body.0.body.3.conv_du.0.weight',
            'body.0.body.1.weight', 'body.1.weight', 'tail.0.0.weight', 'tail.1.weight', 'sub_mean.bias',
            'add_mean.bias'} <= keys
    assert not any(k.startswith(('conv_first', 'upsample', 'conv_last')) for k in keys)


def test_spandrel_refuses_archs_it_does_not_have(tmp_path):
    _, path = student_file(tmp_path, tiny_network('msrresnet'))
    with pytest.raises(OptionError, match='spandrel has no MSRResNet architecture.*onnx or torchscript'):
        export(load_student(path), 'spandrel', str(tmp_path / 'msr.pth'))
    assert not (tmp_path / 'msr.pth').exists()


def test_unexportable_op_is_named(tmp_path):

    @torch.library.custom_op('dckd_test::mystery', mutates_args=())
    def mystery(x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    @mystery.register_fake
    def _(x):
        return torch.empty_like(x)

    class Odd(torch.nn.Module):

        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)

        def forward(self, x):
            return mystery(self.conv(x))

    with pytest.raises(OptionError, match=r'Odd cannot be exported to ONNX \(opset 18\): the exporter stopped at '
                       r'operator dckd_test\.mystery\.default'):
        export_onnx(PaddedNetwork(Odd(), 1), str(tmp_path / 'odd.onnx'), 3, (8, 8), [(8, 8)], arch='Odd')
    assert not (tmp_path / 'odd.onnx').exists()


def test_a_network_whose_code_fixes_the_batch_is_exported_with_a_batch_of_one(tmp_path, capsys):
    """A trace records ``int(x.shape[0])`` as a constant: the checks fail, the export is made again with a batch of 1
    (height and width dynamic), and the convention says so."""
    import json

    from dckd_basicsr.checkpoints.students import Student

    class FixesBatch(torch.nn.Module):

        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)

        def forward(self, x):
            batch = int(x.shape[0])
            return self.conv(x).reshape(batch, -1).reshape(batch, 3, x.shape[2], x.shape[3])

    student = Student(FixesBatch().eval(), {'type': 'FixesBatch'}, 1, 'params', 'test')
    result = export(student, 'torchscript', str(tmp_path / 'fixed.pt'), size=8)
    assert max(result['max_abs_diff']) <= 1e-4
    out = capsys.readouterr().out
    assert 'dckd-export: with a dynamic batch: the exported graph fails in TorchScript at input (1, 3, ' in out
    assert 'Exporting again with a batch of 1 (height and width stay dynamic).' in out
    assert json.loads((tmp_path / 'fixed.pt.json').read_text())['input']['shape'] == [1, 3, 'H', 'W']


def test_failed_check_removes_the_file(tmp_path, monkeypatch):
    _, path = student_file(tmp_path, tiny_network('msrresnet'))
    student = load_student(path)
    real = torch.jit.load
    monkeypatch.setattr(torch.jit, 'load', lambda *a, **k: (lambda x: real(*a, **k)(x) + 1e-3))
    with pytest.raises(OptionError, match=r'TorchScript differs from PyTorch by 0\.001 > 0\.0001.*not kept'):
        export(student, 'torchscript', str(tmp_path / 'msr.pt'), size=8)
    assert not (tmp_path / 'msr.pt').exists()


@pytest.mark.slow
def test_console_script(tmp_path):
    _, path = student_file(tmp_path, tiny_network('msrresnet'))
    proc = run([str(BIN / 'dckd-export'), '--model', path, '--to', 'torchscript', '-o', str(tmp_path / 'msr.pt'),
                '--size', '12', '--check-size', '9', '17'], cwd=tmp_path)
    assert 'MSRResNet (num_in_ch: 3' in proc.stdout
    assert 'TorchScript vs PyTorch at input 1x3x9x17: max abs difference' in proc.stdout
    assert (tmp_path / 'msr.pt').is_file()


def test_bad_target_is_an_argparse_error(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(['--model', 'x.pth', '--to', 'tflite', '-o', str(tmp_path / 'x')])
    assert "argument --to: invalid choice: 'tflite'" in capsys.readouterr().err
