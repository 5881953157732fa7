"""Teachers loaded by spandrel (``network_t: {type: SpandrelTeacher}``, dckd_basicsr/archs/spandrel_arch.py).

Each test builds a tiny network with spandrel's own arch class, saves its state dict in the release's layout (a raw
official RCAN state dict ``.pt``, a SwinIR ``{'params_ema': ...}`` ``.pth``, a SPAN ``.safetensors``, a NAFNet
``{'params': ...}``) into a tmp dir, and loads it with no architecture options; the same network object is the
reference the teacher's output and weights are compared with.
"""
import pytest
import torch
from basicsr.archs import build_network
from basicsr.models import build_model
from helpers import batch, dckd_options, kd_options, tiny_network, write_checkpoints
from safetensors.torch import save_file
from spandrel.architectures.NAFNet import NAFNet
from spandrel.architectures.RCAN import RCAN
from spandrel.architectures.SPAN import SPAN
from spandrel.architectures.SwinIR import SwinIR
from torch.nn import functional as F

import dckd_basicsr  # noqa: F401
from dckd_basicsr.archs.spandrel_arch import SpandrelTeacher
from dckd_basicsr.checkpoints import load_pretrained
from dckd_basicsr.errors import OptionError
from dckd_basicsr.distill.feature_taps import FeatureRecorder

FAMILIES = {
    # spandrel id: (its arch class and tiny options, file name, wrapper: None raw, 'safetensors', or the BasicSR key)
    'RCAN': (lambda: RCAN(scale=2, n_resgroups=4, n_resblocks=1, n_feats=16, reduction=4), 'RCAN_BIX2.pt', None),
    'SwinIR': (lambda: SwinIR(upscale=2, in_chans=3, img_size=16, window_size=4, img_range=1., depths=[2, 2],
                              embed_dim=8, num_heads=[2, 2], mlp_ratio=2, upsampler='pixelshuffle',
                              resi_connection='1conv'), 'swinir_x2.pth', 'params_ema'),
    'SPAN': (lambda: SPAN(num_in_ch=3, num_out_ch=3, feature_channels=8, upscale=2), 'span_x2.safetensors',
             'safetensors'),
    'SPAN_gray': (lambda: SPAN(num_in_ch=1, num_out_ch=1, feature_channels=8, upscale=2), 'span_gray.safetensors',
                  'safetensors'),
    'NAFNet': (lambda: NAFNet(img_channel=3, width=8, middle_blk_num=1, enc_blk_nums=[1], dec_blk_nums=[1]),
               'NAFNet-width8.pth', 'params'),
}


def save_release(root, family: str, seed: int = 0):
    """A tiny spandrel network of ``family`` with random weights, saved in its release layout; returns
    (path, network in eval mode)."""
    make, name, wrapper = FAMILIES[family]
    torch.manual_seed(seed)
    net = make().eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in net.parameters():
            param.copy_(torch.rand(param.shape, generator=generator) * 0.2 - 0.1)
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    path = root / name
    if wrapper == 'safetensors':
        save_file(state, str(path))
    else:
        torch.save(state if wrapper is None else {wrapper: state}, path)
    return str(path), net


def reference(net, lq):
    with torch.no_grad():
        return net(lq.clone())


def params(net):
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


# ---------------------------------------------------------------- every method with a spandrel teacher
@pytest.mark.parametrize('family', ['RCAN', 'SwinIR', 'SPAN'])
def test_spandrel_teacher_drives_dckd(tmp_path, family):
    path, source = save_release(tmp_path, family)
    opt = dckd_options(tmp_path, write_checkpoints(tmp_path))
    opt['network_t'] = {'type': 'SpandrelTeacher'}
    opt['path']['pretrain_network_t'] = path
    model = build_model(opt)
    teacher = model.net_t
    assert isinstance(teacher, SpandrelTeacher) and (teacher.architecture, teacher.scale) == (family, 2)
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    assert {id(p) for g in model.optimizer_g.param_groups for p in g['params']}.isdisjoint(
        id(p) for p in teacher.parameters())
    data = batch(size=16)
    lq = data['lq'].clone()
    expected = reference(source, lq)  # (SPAN's eval forward derives its eval_conv weights: do it before comparing)
    for key, value in source.state_dict().items():
        assert torch.equal(teacher.model.state_dict()[key], value), key
    student, frozen = params(model.net_g), params(teacher)
    for step in (1, 2):
        model.feed_data(data)
        model.optimize_parameters(step)
        assert {'l_pix', 'l_kd', 'l_lcr', 'l_dcl', 'l_dmm'} <= set(model.log_dict), model.log_dict
        assert all(torch.isfinite(torch.tensor(v)) for v in model.log_dict.values())
    assert torch.equal(model.lq, lq)  # the teacher copies its input (spandrel's RCAN scales it in place)
    # the teacher's output in the model is the spandrel network's own output on the LQ batch
    assert torch.allclose(model.output_t, expected, rtol=0, atol=1e-5)
    assert all(torch.equal(v, frozen[k]) for k, v in params(teacher).items())
    assert any(not torch.equal(v, student[k]) for k, v in params(model.net_g).items())


@pytest.mark.parametrize('model_type,fast', [('KDModel', None), ('KDModel', dict(autocast='bf16', channels_last=True)),
                                             ('DUKDModel', None)])
def test_spandrel_teacher_with_kd_and_dukd(tmp_path, model_type, fast):
    path, source = save_release(tmp_path, 'SPAN')
    train = dict(logits_opt=dict(type='L1Loss'), fast=fast)
    if model_type == 'DUKDModel':
        train = dict(kd_opt=dict(type='L1Loss'), noisy=dict(prob=0.5), dukd_opt=dict(n_gt_sub=[2], zoom_out=True))
    opt = kd_options(tmp_path, tiny_network('rcan_student'), {'type': 'SpandrelTeacher', 'architecture': 'SPAN'},
                     teacher_file=path, model_type=model_type, **train)
    model = build_model(opt)
    data = batch(size=8)
    model.feed_data(data)
    model.optimize_parameters(1)
    expected = {'KDModel': ['l_pix', 'l_kd'],
                'DUKDModel': ['l_pix', 'l_kd', 'l_zoom_in', 'l_zoom_out_pix', 'l_zoom_out_kd']}[model_type]
    assert list(model.log_dict) == expected
    assert all(torch.isfinite(torch.tensor(v)) for v in model.log_dict.values())
    if fast:  # the teacher ran in bf16: its output is the fp32 one within bf16's precision
        assert model.output_t.dtype == torch.float32
        expected = reference(source, data['lq'])
        assert torch.allclose(model.output_t, expected, rtol=0, atol=0.05) and not torch.equal(model.output_t, expected)


def test_fakd_names_the_loaded_networks_own_modules(tmp_path):
    """FAKD taps the spandrel RCAN by the official names (body.<g>, tail:input): lr 0 keeps the student fixed, so
    the term is recomputed from hooks on the reference network."""
    path, source = save_release(tmp_path, 'RCAN')
    student_layers, teacher_layers = ['body.0', 'upsample:input'], ['body.2', 'tail:input']
    opt = kd_options(tmp_path, tiny_network('rcan_student'), {'type': 'SpandrelTeacher'}, teacher_file=path,
                     logits_opt=dict(type='L1Loss'),
                     fakd_opt=dict(type='FAKDLoss', loss_weight=1.0, student_layers=student_layers,
                                   teacher_layers=teacher_layers))
    opt['train']['optim_g']['lr'] = 0.0
    model = build_model(opt)
    assert model.fakd_pairs.teacher.layers == teacher_layers
    data = batch(size=8)
    student_recorder = FeatureRecorder(model.net_g, student_layers, 'student')
    teacher_recorder = FeatureRecorder(source, teacher_layers, 'teacher')
    with torch.no_grad(), model.fakd_pairs.paused():
        model.net_g(data['lq'])
        reference(source, data['lq'])
        expected = model.cri_fakd(student_recorder.first(), teacher_recorder.first()).item()
    student_recorder.remove()
    model.feed_data(data)
    model.optimize_parameters(1)
    assert model.log_dict['l_fakd'] == pytest.approx(expected, rel=1e-5)
    assert expected > 0


def test_fakd_default_and_missing_teacher_layers(tmp_path):
    path, _ = save_release(tmp_path, 'RCAN')
    fakd = dict(type='FAKDLoss', student_layers=['body.0', 'body.0', 'upsample:input'])
    model = build_model(kd_options(tmp_path, tiny_network('rcan_student'), {'type': 'SpandrelTeacher'},
                                   teacher_file=path, fakd_opt=fakd))
    # the FAKD authors' rule on the spandrel RCAN's 4 groups: stages at 0.3 and 0.7, and the map the tail receives
    assert model.fakd_pairs.teacher.layers == ['body.0', 'body.2', 'tail:input']
    path, _ = save_release(tmp_path, 'SPAN')
    with pytest.raises(OptionError) as error:
        build_model(kd_options(tmp_path, tiny_network('rcan_student'), {'type': 'SpandrelTeacher'},
                               teacher_file=path, fakd_opt=fakd))
    message = str(error.value)
    assert 'train.fakd_opt.teacher_layers: missing' in message and 'spandrel detected SPAN' in message
    assert 'conv_1, conv_1.sk' in message and 'block_1.c1_r' in message and 'model.' not in message


# ---------------------------------------------------------------- checks before training
def build_with_teacher(tmp_path, family, network_t=None, **opt_updates):
    path, _ = save_release(tmp_path, family)
    opt = kd_options(tmp_path, tiny_network('rcan_student'), network_t or {'type': 'SpandrelTeacher'},
                     teacher_file=path, logits_opt=dict(type='L1Loss'))
    for key, value in opt_updates.items():
        opt['train'][key] = value
    return path, lambda: build_model(opt)


def test_scale_channel_and_architecture_mismatches_name_the_option_and_file(tmp_path):
    path, build = build_with_teacher(tmp_path, 'NAFNet')
    with pytest.raises(OptionError) as error:
        build()
    message = str(error.value)
    assert message.startswith('scale: 2, but network_t (SpandrelTeacher, path.pretrain_network_t: ')
    assert path in message and 'spandrel detected NAFNet (8w): x1, 3 -> 3 channels' in message

    path, build = build_with_teacher(tmp_path, 'SPAN_gray')
    with pytest.raises(OptionError) as error:
        build()
    message = str(error.value)
    assert message.startswith('network_g takes 3 input channels, but network_t (SpandrelTeacher, '
                              'path.pretrain_network_t: ')
    assert path in message and 'spandrel detected SPAN (8nf): x2, 1 -> 1 channels' in message

    path, build = build_with_teacher(tmp_path, 'SPAN', {'type': 'SpandrelTeacher', 'architecture': 'HAT'})
    with pytest.raises(OptionError, match=r'path.pretrain_network_t: .*span_x2.safetensors \(format spandrel\): '
                       r'spandrel detects a SPAN checkpoint, but network_t.architecture is HAT'):
        build()

    _, build = build_with_teacher(tmp_path, 'SwinIR', fast=dict(autocast='fp16'))
    with pytest.raises(OptionError, match=r'train.fast.autocast: fp16, but network_t .*spandrel detected SwinIR.* '
                       r'not supporting fp16; use bf16'):
        build()


def test_unknown_checkpoint_and_wrong_format(tmp_path):
    torch.save({'params': {'backbone.0.weight': torch.zeros(4, 3, 3, 3)}}, tmp_path / 'mystery.pth')
    opt = kd_options(tmp_path, tiny_network('rcan_student'), {'type': 'SpandrelTeacher'},
                     teacher_file=str(tmp_path / 'mystery.pth'))
    with pytest.raises(OptionError, match=r'path.pretrain_network_t: .*mystery.pth \(format spandrel\): spandrel '
                       r'[\d.]+ detects none of its \d+ architectures from these keys \(backbone.0.weight\)'):
        build_model(opt)
    path, _ = save_release(tmp_path, 'SPAN')
    with pytest.raises(OptionError, match="format 'spandrel' .* needs network type SpandrelTeacher, but the network "
                       'is RCAN'):
        load_pretrained(build_network(tiny_network('rcan_student')), path, fmt='spandrel')
    with pytest.raises(RuntimeError, match='no network loaded yet'):
        SpandrelTeacher()(torch.zeros(1, 3, 8, 8))


# ---------------------------------------------------------------- forward: size requirements, input untouched
def test_teacher_pads_to_spandrels_size_requirements_and_crops_back(tmp_path):
    path, source = save_release(tmp_path, 'SwinIR')
    teacher = SpandrelTeacher().eval()
    report = load_pretrained(teacher, path)
    assert (report['format'], report['layout'], report['param_key']) == ('spandrel', 'BasicSR file (params_ema)',
                                                                          'params_ema')
    assert teacher.size_requirements.minimum == 16 and 'input at least 16 px' in teacher.describe()
    for size, mode in (((12, 10), 'reflect'), ((8, 8), 'replicate')):  # replicate where reflection cannot pad enough
        lq = torch.rand(1, 3, *size)
        padded = F.pad(lq, (0, 16 - size[1], 0, 16 - size[0]), mode=mode)
        with torch.no_grad():
            out = teacher(lq)
        assert out.shape == (1, 3, 2 * size[0], 2 * size[1])
        assert torch.allclose(out, reference(source, padded)[..., :2 * size[0], :2 * size[1]], rtol=0, atol=1e-6)
    lq = torch.rand(1, 3, 16, 20)
    with torch.no_grad():
        assert torch.allclose(teacher(lq), reference(source, lq), rtol=0, atol=1e-6)

    path, source = save_release(tmp_path, 'RCAN')
    teacher = SpandrelTeacher().eval()
    assert load_pretrained(teacher, path)['layout'] == 'raw state dict'
    lq = torch.rand(2, 3, 6, 7)
    kept = lq.clone()
    with torch.no_grad():
        out = teacher(lq)
    assert torch.equal(lq, kept) and torch.allclose(out, reference(source, kept), rtol=0, atol=1e-6)
