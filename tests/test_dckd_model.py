"""DCKDModel built in-process with tiny networks: gradients, the history model's updates, option errors, validation
padding, LCR targets."""
import copy

import pytest
import torch
import torch.distributed as dist
from basicsr.archs import build_network
from basicsr.models import build_model
from torch.nn.parallel import DistributedDataParallel

from helpers import batch, dckd_options, free_port, tiny_network, write_checkpoints

import dckd_basicsr  # noqa: F401
from dckd_basicsr.errors import OptionError
from dckd_basicsr.distill.history import update_history


@pytest.fixture
def files(tmp_path):
    return write_checkpoints(tmp_path)


def params(net):
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def test_gradients_reach_only_the_student(tmp_path, files):
    model = build_model(dckd_options(tmp_path, files))
    model.feed_data(batch())
    model.optimize_parameters(1)
    assert set(model.log_dict) == {'l_pix', 'l_kd', 'l_lcr', 'l_dcl', 'l_dmm'}
    assert all(v > 0 for v in model.log_dict.values())
    student = list(model.net_g.parameters())
    assert all(p.grad is not None for p in student) and sum(p.grad.abs().sum() for p in student) > 0
    optimized = {id(p) for group in model.optimizer_g.param_groups for p in group['params']}
    assert optimized == {id(p) for p in student}
    for name in ('net_t', 'net_his', 'net_vqgan', 'net_g_ema'):
        net = getattr(model, name)
        assert not net.training, name
        assert all(p.grad is None and not p.requires_grad for p in net.parameters()), name
    # the VQGAN weights are the checkpoint's (decoder and loss keys ignored), the teacher's too
    saved = torch.load(files['vqgan'])['state_dict']
    assert torch.equal(model.net_vqgan.quantize.embedding.weight, saved['quantize.embedding.weight'])
    assert torch.equal(model.net_vqgan.encoder.down[2].attn[0].q.weight, saved['encoder.down.2.attn.0.q.weight'])
    teacher = torch.load(files['teacher'])['params']
    assert torch.equal(model.net_t.conv_first.weight, teacher['conv_first.weight'])


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason='this torch build has no gloo')
def test_under_ddp_only_the_student_is_wrapped(tmp_path, files):
    """With ``dist`` (a one-process gloo group here) BasicSR wraps the student in DistributedDataParallel; the frozen
    networks and the EMA have no gradients to all-reduce and stay unwrapped."""
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{free_port()}', rank=0, world_size=1)
    try:
        model = build_model(dict(dckd_options(tmp_path, files), dist=True))
    finally:
        dist.destroy_process_group()
    assert isinstance(model.net_g, DistributedDataParallel)
    for name in ('net_t', 'net_his', 'net_vqgan', 'net_g_ema'):
        assert not isinstance(getattr(model, name), DistributedDataParallel), name


def test_history_starts_at_the_ema_and_follows_it_on_schedule(tmp_path, files):
    model = build_model(dckd_options(tmp_path, files, step=[2]))
    initial = params(model.net_his)
    assert all(torch.equal(initial[k], v) for k, v in params(model.net_g_ema).items())
    model.feed_data(batch(0))
    model.optimize_parameters(1)
    assert all(torch.equal(initial[k], v) for k, v in params(model.net_his).items())  # no update at iter 1
    model.feed_data(batch(1))
    model.optimize_parameters(2)
    # the rule itself (0.1 history + 0.9 EMA) is pinned by test_dckd_history: here it must be applied to the EMA
    expected = copy.deepcopy(model.net_his)
    expected.load_state_dict(initial)
    update_history(expected, model.net_g_ema, decay=0.1)
    his = params(model.net_his)
    for key, value in his.items():
        assert torch.equal(value, expected.state_dict()[key]), key
    moved = his['conv_first.weight'] - initial['conv_first.weight']
    assert moved.abs().max() > 0


def test_history_without_ema_copies_the_student(tmp_path, files):
    model = build_model(dckd_options(tmp_path, files, ema_decay=0))  # update_decay 0.1, an update every 2 iterations
    assert not hasattr(model, 'net_g_ema')
    initial = params(model.net_his)
    for key, value in params(model.net_g).items():
        assert torch.equal(initial[key], value)
    model.feed_data(batch())
    model.optimize_parameters(1)
    assert all(torch.equal(initial[k], v) for k, v in params(model.net_his).items())  # no update at iter 1
    assert any(not torch.equal(initial[k], v) for k, v in params(model.net_g).items())
    model.optimize_parameters(2)
    # after the step of iteration 2: theta_his <- 0.1 * theta_his + 0.9 * theta_student, from the student itself
    student, his = params(model.net_g), params(model.net_his)
    for key, old in initial.items():
        if old.is_floating_point():
            assert torch.allclose(his[key], 0.1 * old + 0.9 * student[key], rtol=0, atol=1e-6), key
        else:
            assert torch.equal(his[key], student[key]), key
    moved = (his['conv_first.weight'] - initial['conv_first.weight']).abs().max()
    assert moved > 1e-4  # far above the tolerance: the update is checked, not rounding


def test_terms_follow_the_options(tmp_path, files):
    model = build_model(dckd_options(tmp_path, files, cl_opt=None, lcr_opt=None, logits_opt=None,
                                     ce_opt=dict(type='DistributionMappingLoss', loss_weight=0.001)))
    assert not hasattr(model, 'net_his')  # DMM only: no history model, no negatives
    model.feed_data(batch())
    model.optimize_parameters(1)
    assert list(model.log_dict) == ['l_pix', 'l_dmm']
    model = build_model(dckd_options(tmp_path, files, ce_opt=None, lcr_opt=None))
    model.feed_data(batch())
    model.optimize_parameters(1)
    assert list(model.log_dict) == ['l_pix', 'l_kd', 'l_dcl']


def break_option(opt, what):
    if what == 'no network_t':
        del opt['network_t']
    elif what == 'no teacher path':
        opt['path']['pretrain_network_t'] = None
    elif what == 'missing teacher file':
        opt['path']['pretrain_network_t'] = opt['path']['pretrain_network_t'] + '.missing'
    elif what == 'num_neg 0':
        opt['train']['num_neg'] = 0
    elif what == 'weights length':
        opt['train']['cl_opt']['weights'] = [1 / 32, 1 / 16, 1 / 8, 1 / 4, 1]
    elif what == 'no vqgan path':
        del opt['path']['pretrain_network_vqgan']
    elif what == 'data scale':
        opt['scale'] = 4
    elif what == 'no loss':
        for key in ('pixel_opt', 'logits_opt', 'lcr_opt', 'cl_opt', 'ce_opt'):
            del opt['train'][key]
    return opt


@pytest.mark.parametrize('what, message', [
    ('no network_t', 'network_t: missing'),
    ('no teacher path', 'path.pretrain_network_t: missing'),
    ('missing teacher file', 'path.pretrain_network_t: .*no such checkpoint file'),
    ('num_neg 0', 'train.num_neg: 0'),
    ('weights length', 'train.cl_opt.weights has 5 entries but the encoder gives 3 feature levels'),
    ('no vqgan path', 'path.pretrain_network_vqgan: missing'),
    ('no loss', 'no loss term is configured'),
    ('data scale', 'scale: 4, but network_g and network_t turn a 16x16 input into 32x32'),
])
def test_option_errors(tmp_path, files, what, message):
    with pytest.raises(OptionError, match=message):
        build_model(break_option(dckd_options(tmp_path, files), what))


def test_teacher_scale_mismatch_is_an_error(tmp_path):
    files = write_checkpoints(tmp_path, teacher_upscale=4)
    opt = dckd_options(tmp_path, files)
    opt['network_t'] = tiny_network('swinir_teacher', upscale=4)
    with pytest.raises(OptionError, match=r'network_t .*the teacher outputs \(1, 3, 64, 64\) but the student '
                                          r'\(1, 3, 32, 32\)'):
        build_model(opt)


def test_vqgan_checkpoint_without_encoder_keys_is_an_error(tmp_path):
    files = write_checkpoints(tmp_path, vq_state={'decoder.conv_in.weight': torch.zeros(4, 16, 3, 3),
                                                  'post_quant_conv.weight': torch.zeros(16, 8, 1, 1)})
    with pytest.raises(OptionError, match='pretrain_network_vqgan: .*has no VQGAN encoder weights'):
        build_model(dckd_options(tmp_path, files))


def test_validation_pads_window_students(tmp_path, files):
    model = build_model(dckd_options(tmp_path, files))
    assert model.pad_multiple == 4
    lq = torch.rand(1, 3, 10, 9)
    model.feed_data({'lq': lq})
    model.test()
    assert model.output.shape == (1, 3, 20, 18)
    with torch.no_grad():
        padded = torch.nn.functional.pad(lq, (0, 3, 0, 2), mode='reflect')
        assert torch.allclose(model.output, model.net_g_ema(padded)[..., :20, :18])
    assert model.net_g.training  # test() leaves the student in training mode


def test_test_mode_needs_only_the_student(tmp_path, files):
    student = build_network(tiny_network('swinir_student'))
    torch.save({'params': student.state_dict(), 'params_ema': student.state_dict()}, tmp_path / 'student.pth')
    opt = dict(is_train=False, dist=False, num_gpu=0, rank=0, world_size=1, scale=2, model_type='DCKDModel',
               network_g=tiny_network('swinir_student'), path=dict(pretrain_network_g=str(tmp_path / 'student.pth'),
                                                   param_key_g='params_ema'), val=dict(metrics={}))
    model = build_model(opt)
    assert not hasattr(model, 'net_t') and not hasattr(model, 'net_vqgan')
    model.feed_data({'lq': torch.rand(1, 3, 7, 5)})
    model.test()
    assert model.output.shape == (1, 3, 14, 10)


def test_lcr_target_is_the_teacher_on_transformed_inputs_mapped_back(tmp_path, files):
    from dckd_basicsr.distill.invertible_ops import apply_invertible_ops, undo_invertible_ops
    model = build_model(dckd_options(tmp_path, files, noisy=dict(prob=1.0)))
    model.feed_data(batch())
    model.run_teacher()
    every = {name: torch.ones(2, 1, 1, 1, dtype=torch.bool) for name in ('invert', 'vflip', 'hflip', 'transpose')}
    with torch.no_grad():
        expected = undo_invertible_ops(model.net_t(apply_invertible_ops(model.lq, every)), every)
        assert torch.allclose(model.lcr_target, expected, atol=1e-5)
        assert torch.allclose(model.output_t, model.net_t(model.lq), atol=1e-5)
        assert not torch.allclose(model.lcr_target, model.output_t, atol=1e-3)
    model.lcr_prob = 0.0
    model.run_teacher()
    assert torch.allclose(model.lcr_target, model.output_t, atol=1e-6)
