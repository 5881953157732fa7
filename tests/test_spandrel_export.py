"""``dckd-export`` of students of spandrel's architectures (``dckd_basicsr/checkpoints/spandrel_export.py``): for every
registered arch a file ``spandrel.ModelLoader`` reads as that arch and scale with the student's eval output (1e-5),
``.pth`` and ``.safetensors``; SPAN written fused; configurations spandrel cannot read back refused before anything is
written; ONNX and TorchScript on representative archs. Tiny networks: the ``spandrel_*`` blocks of
``tests/data/tiny_networks.yml``."""
import copy

import pytest
import torch
import yaml
from basicsr.archs import build_network
from torch.nn import functional as F

from helpers import tiny_network

import dckd_basicsr  # noqa: F401  (registers the archs)
from dckd_basicsr.archs import spandrel_students_arch as students
from dckd_basicsr.archs.padding import padded_forward
from dckd_basicsr.archs.spandrel_students_arch import REGISTERED
from dckd_basicsr.checkpoints.students import load_student
from dckd_basicsr.commands.export import main as export_main
from dckd_basicsr.errors import OptionError

# The values spandrel 0.4.2 assumes for the options it cannot read from these tiny networks' weights (the tiny blocks
# of the battery use other values, which the export refuses: see test_configurations_spandrel_reads_differently...).
EXPORTABLE = {
    'ATD': dict(category_size=256),
    'DCTLSA': dict(num_head=5),
    'GRL': dict(img_size=64, window_size=32, stripe_size=[64, 64], anchor_window_down_factor=4, stripe_shift=True),
    'SCUNet': dict(input_resolution=256),
}
# The name a file of these archs is detected under without -opt: the BasicSR / plugin arch with the same keys.
DETECTED_AS = {'SpandrelSwinIR': 'SwinIR', 'SpandrelNAFNet': 'NAFNet'}


def exportable(name: str) -> dict:
    arch = REGISTERED[name]
    return tiny_network(f'spandrel_{arch.name}', **EXPORTABLE.get(name, {}))


def write_student(root, net_opt: dict, seed: int = 0):
    """A BasicSR checkpoint (``params``) of ``net_opt`` with random weights and the option file that builds it;
    returns (network in eval mode, checkpoint, option file)."""
    torch.manual_seed(seed)
    net = build_network(copy.deepcopy(net_opt))
    checkpoint, options = root / 'net_g_1.pth', root / 'student.yml'
    torch.save({'params': net.state_dict()}, checkpoint)
    options.write_text(yaml.safe_dump({'network_g': net_opt}))
    return net.eval(), str(checkpoint), str(options)


def export(checkpoint: str, options: str, out, to: str = 'spandrel', *extra: str) -> dict:
    args = ['--model', checkpoint, '--to', to, '-o', str(out), '--size', '16', '--atol', '1e-5', *extra]
    return export_main(args + (['-opt', options] if options else []))


def lq(name: str, net_opt: dict, seed: int = 5) -> torch.Tensor:
    """A 1-image input meeting no size requirement of the arch (so spandrel's padding and ours both run), or the
    smallest one that the arch's square / large-multiple requirement allows."""
    arch = REGISTERED[name]
    minimum, multiple, square = arch.size_requirements(students.option_values(arch, net_opt))
    height, width = (21, 19) if multiple < 32 and not square else (multiple + 3, multiple + 5)
    return torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize('name', sorted(REGISTERED))
def test_spandrel_export_round_trip(tmp_path, name):
    """``dckd-export --to spandrel -opt``: spandrel detects the arch and the scale, and gives the student's eval
    output; the file without -opt is detected (``dckd-infer``'s loading) as the same network."""
    from spandrel import ModelLoader
    arch, net_opt = REGISTERED[name], exportable(name)
    net, checkpoint, options = write_student(tmp_path, net_opt)
    suffix = 'pth' if sorted(REGISTERED).index(name) % 2 else 'safetensors'
    out = tmp_path / f'{name}.{suffix}'
    export(checkpoint, options, out)
    descriptor = ModelLoader().load_from_file(str(out))
    assert type(descriptor.model) is arch.network_class
    assert descriptor.scale == students.network_scale(arch, net_opt)
    x = lq(name, net_opt)
    with torch.no_grad():
        expected = net(x).clamp(0, 1)
        assert expected.shape[-2:] == (x.shape[-2] * descriptor.scale, x.shape[-1] * descriptor.scale)
        assert (descriptor(x.clone()) - expected).abs().max() <= 1e-5
        detected = load_student(str(out))
        assert detected.opt['type'] == DETECTED_AS.get(name, name)
        assert (padded_forward(detected.net, x, detected.pad_multiple).clamp(0, 1) - expected).abs().max() <= 1e-5


def test_span_is_written_fused(tmp_path):
    """SPAN's file holds, in each ``eval_conv``, the fusion of the trained branches: a consumer that runs the fused
    convolutions without fusing again (traiNNer-redux's SPAN after construction) computes the student."""
    from spandrel import ModelLoader
    from spandrel.architectures.SPAN.__arch.span import Conv3XC
    net_opt = exportable('SPAN')
    torch.manual_seed(0)
    net = build_network(copy.deepcopy(net_opt))
    stale = {key: torch.zeros_like(value) if 'eval_conv' in key else value for key, value in net.state_dict().items()}
    torch.save({'params_ema': stale}, tmp_path / 'net_g.pth')  # a file whose fused convolutions are out of date
    export_main(['--model', str(tmp_path / 'net_g.pth'), '--to', 'spandrel', '-o', str(tmp_path / 'span.pth')])
    state = torch.load(tmp_path / 'span.pth', weights_only=True)
    x = torch.rand(1, 8, 9, 7)
    with torch.no_grad():
        branches = net.block_1.c1_r.conv(F.pad(x, (1, 1, 1, 1))) + net.block_1.c1_r.sk(x)
        fused = F.conv2d(x, state['block_1.c1_r.eval_conv.weight'], state['block_1.c1_r.eval_conv.bias'], padding=1)
    assert torch.allclose(fused, branches, rtol=0, atol=1e-5 * float(branches.abs().max()))
    descriptor = ModelLoader().load_from_file(str(tmp_path / 'span.pth'))
    image = torch.rand(1, 3, 11, 13)
    update_params = Conv3XC.update_params
    try:
        Conv3XC.update_params = lambda self: None  # run the stored fused convolutions as they are
        out = descriptor(image.clone())
    finally:
        Conv3XC.update_params = update_params
    with torch.no_grad():
        assert (out - net.eval()(image).clamp(0, 1)).abs().max() <= 1e-5


@pytest.mark.parametrize('name, overrides, ours, theirs', [
    ('ATD', dict(category_size=16), 'category_size: 16', 'category_size: 256'),
    ('DCTLSA', dict(num_head=2), 'num_head: 2', 'num_head: 5'),
    ('GRL', dict(window_size=16), 'window_size: 16', 'window_size: 32'),
    ('SPAN', dict(img_range=1.0), 'img_range: 1.0', 'img_range: 255.0'),
    ('RealPLKSR', dict(norm_groups=2), 'norm_groups: 2', 'norm_groups: 4'),
    ('HAT', dict(conv_scale=0.02), 'conv_scale: 0.02', 'conv_scale: 0.01'),
])
def test_configurations_spandrel_reads_differently_are_refused_before_writing(tmp_path, name, overrides, ours, theirs):
    _, checkpoint, options = write_student(tmp_path, dict(exportable(name), **overrides))
    out = tmp_path / 'student.safetensors'
    with pytest.raises(OptionError) as info:
        export(checkpoint, options, out)
    message = str(info.value)
    assert message.startswith(f'{name} cannot be exported for spandrel: {ours} is not stored in the weights')
    assert theirs in message and 'onnx or torchscript' in message and '\n' not in message
    assert not out.exists()


@pytest.mark.parametrize('name, overrides, reason', [
    # spandrel's SPAN loader takes the output channels to equal the input's: 3 x2 outputs read as 12 = 3 x 2^2 at x1
    ('SPAN', dict(num_out_ch=1), r'spandrel 0\.4\.\d+ reads its weights as x1, the student is x2'),
    ('SpandrelSwinIR', dict(ape=True), r'spandrel 0\.4\.\d+ cannot load its weights \(RuntimeError: .*\)'),
])
def test_weights_spandrel_reads_as_another_network_are_refused_before_writing(tmp_path, name, overrides, reason):
    _, checkpoint, options = write_student(tmp_path, dict(exportable(name), **overrides))
    with pytest.raises(OptionError, match=f'^{name} cannot be exported for spandrel: {reason}; export to onnx or '
                                          r'torchscript instead\.$'):
        export(checkpoint, options, tmp_path / 'student.pth')
    assert not (tmp_path / 'student.pth').exists()


# ---------------------------------------------------------------------------------------------- ONNX, TorchScript
@pytest.mark.parametrize('name', ['SPAN', 'RealPLKSR', 'SAFMN', 'Compact'])
def test_torchscript_export_of_efficient_students(tmp_path, name):
    """Traced with the size requirements' padding outside the network (so the graph keeps height and width dynamic);
    the command checks the file at three sizes, one of them no multiple of the requirement."""
    net, checkpoint, _ = write_student(tmp_path, exportable(name))
    result = export(checkpoint, None, tmp_path / f'{name}.pt', 'torchscript')
    assert len(result['max_abs_diff']) >= 3 and max(result['max_abs_diff']) <= 1e-5
    traced = torch.jit.load(str(tmp_path / f'{name}.pt'))
    x = torch.rand(1, 3, 19, 21)
    with torch.no_grad():
        assert (traced(x) - padded_forward(net, x, 1)).abs().max() <= 1e-5


def test_omnisr_torchscript_export_is_refused_naming_its_python_function(tmp_path):
    _, checkpoint, _ = write_student(tmp_path, exportable('OmniSR'))
    with pytest.raises(OptionError, match=r"OmniSR cannot be exported to TorchScript: .*'LayerNormFunction'"):
        export(checkpoint, None, tmp_path / 'omnisr.pt', 'torchscript')
    assert not (tmp_path / 'omnisr.pt').exists()


def test_onnx_export_of_a_span_student(tmp_path):
    """SPAN exports as its deployed network (the fused convolutions alone: the re-fusion of spandrel's eval forward
    cannot be traced) and onnxruntime gives its output at every size checked."""
    pytest.importorskip('onnxruntime')
    _, checkpoint, _ = write_student(tmp_path, exportable('SPAN'))
    result = export(checkpoint, None, tmp_path / 'span.onnx', 'onnx', '--atol', '1e-4')
    assert (tmp_path / 'span.onnx').exists() and max(result['max_abs_diff']) <= 1e-4
