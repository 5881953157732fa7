"""DCKDModel built in-process with tiny networks: gradients, history schedule, option errors, validation padding."""
import copy
from pathlib import Path

import pytest
import torch
from basicsr.archs import build_network
from basicsr.models import build_model

import dckd_basicsr  # noqa: F401
from dckd_basicsr.archs.vqgan_arch import VQGANEncoder
from dckd_basicsr.errors import OptionError

TINY_VQGAN = dict(type='VQGAN', embed_dim=8, n_embed=16,
                  ddconfig=dict(ch=32, ch_mult=[1, 1, 2], num_res_blocks=1, attn_resolutions=[4], z_channels=16,
                                resolution=16))


def tiny_swinir(dim: int, upscale: int = 2) -> dict:
    return dict(type='SwinIR', upscale=upscale, in_chans=3, img_size=16, window_size=4, img_range=1., depths=[1],
                embed_dim=dim, num_heads=[2], mlp_ratio=2, upsampler='pixelshuffle', resi_connection='1conv')


def write_checkpoints(root: Path, teacher_upscale: int = 2, vq_state=None) -> dict:
    torch.manual_seed(123)
    teacher = build_network(tiny_swinir(16, teacher_upscale))
    torch.save({'params': teacher.state_dict()}, root / 'teacher.pth')
    if vq_state is None:
        vq_opt = {k: v for k, v in TINY_VQGAN.items() if k != 'type'}
        vq_state = dict(VQGANEncoder(**vq_opt).state_dict())
        # what else a taming Lightning checkpoint holds: decoder and training-loss weights
        vq_state.update({'decoder.conv_in.weight': torch.zeros(4, 16, 3, 3), 'post_quant_conv.bias': torch.zeros(16),
                         'loss.discriminator.main.0.weight': torch.zeros(2)})
    torch.save({'state_dict': vq_state, 'global_step': 7}, root / 'vqgan.ckpt')
    return {'teacher': str(root / 'teacher.pth'), 'vqgan': str(root / 'vqgan.ckpt')}


def dckd_options(root: Path, files: dict, **train_updates) -> dict:
    (root / 'models').mkdir(exist_ok=True)
    (root / 'states').mkdir(exist_ok=True)
    train = dict(ema_decay=0.5, optim_g=dict(type='Adam', lr=1e-3, betas=[0.9, 0.99]),
                 scheduler=dict(type='MultiStepLR', milestones=[100], gamma=0.5),
                 pixel_opt=dict(type='L1Loss'), logits_opt=dict(type='L1Loss'),
                 lcr_opt=dict(type='L1Loss'), noisy=dict(prob=0.5),
                 cl_opt=dict(type='ContrasLoss', d_func='L1', loss_weight=0.1, weights=[0.25, 0.5, 1.0]),
                 ce_opt=dict(type='CELoss', loss_weight=0.001),
                 num_neg=2, update_decay=0.1, step=[2], gaussian_noise_prob=1, gray_noise_prob=0.5)
    for key, value in train_updates.items():
        if value is None:
            train.pop(key, None)
        else:
            train[key] = value
    return dict(is_train=True, dist=False, num_gpu=0, rank=0, world_size=1, manual_seed=0, scale=2,
                model_type='DCKDModel', network_g=tiny_swinir(8), network_t=tiny_swinir(16), network_his=True,
                network_vqgan=copy.deepcopy(TINY_VQGAN),
                path=dict(models=str(root / 'models'), training_states=str(root / 'states'),
                          pretrain_network_t=files['teacher'], pretrain_network_vqgan=files['vqgan'],
                          param_key_vqgan='state_dict', strict_load_vqgan=False),
                train=train, val=dict(metrics={}))


@pytest.fixture
def files(tmp_path):
    return write_checkpoints(tmp_path)


def batch(seed=0):
    generator = torch.Generator().manual_seed(seed)
    return {'lq': torch.rand(2, 3, 8, 8, generator=generator), 'gt': torch.rand(2, 3, 16, 16, generator=generator)}


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
        assert not isinstance(net, torch.nn.parallel.DistributedDataParallel)
    # the VQGAN weights are the checkpoint's (decoder and loss keys ignored), the teacher's too
    saved = torch.load(files['vqgan'])['state_dict']
    assert torch.equal(model.net_vqgan.quantize.embedding.weight, saved['quantize.embedding.weight'])
    assert torch.equal(model.net_vqgan.encoder.down[2].attn[0].q.weight, saved['encoder.down.2.attn.0.q.weight'])
    teacher = torch.load(files['teacher'])['params']
    assert torch.equal(model.net_t.conv_first.weight, teacher['conv_first.weight'])


def test_history_starts_at_the_ema_and_follows_it_on_schedule(tmp_path, files):
    model = build_model(dckd_options(tmp_path, files, step=[2]))
    initial = params(model.net_his)
    assert all(torch.equal(initial[k], v) for k, v in params(model.net_g_ema).items())
    model.feed_data(batch(0))
    model.optimize_parameters(1)
    assert all(torch.equal(initial[k], v) for k, v in params(model.net_his).items())  # no update at iter 1
    model.feed_data(batch(1))
    model.optimize_parameters(2)
    ema, his = params(model.net_g_ema), params(model.net_his)
    for key, value in his.items():
        if value.is_floating_point():
            assert torch.allclose(value, 0.1 * initial[key] + 0.9 * ema[key], atol=1e-7), key
    moved = his['conv_first.weight'] - initial['conv_first.weight']
    assert moved.abs().max() > 0


def test_history_without_ema_copies_the_student(tmp_path, files):
    model = build_model(dckd_options(tmp_path, files, ema_decay=0))
    assert not hasattr(model, 'net_g_ema')
    for key, value in model.net_g.state_dict().items():
        assert torch.equal(model.net_his.state_dict()[key], value)
    model.feed_data(batch())
    model.optimize_parameters(1)
    model.optimize_parameters(2)  # history update from the student itself


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
    opt['network_t'] = tiny_swinir(16, upscale=4)
    with pytest.raises(OptionError, match=r'network_t .*the teacher outputs \(1, 3, 64, 64\) but the student '
                                          r'\(1, 3, 32, 32\)'):
        build_model(opt)


def test_vqgan_checkpoint_without_encoder_keys_is_an_error(tmp_path):
    files = write_checkpoints(tmp_path, vq_state={'decoder.conv_in.weight': torch.zeros(4, 16, 3, 3),
                                                  'post_quant_conv.weight': torch.zeros(16, 8, 1, 1)})
    with pytest.raises(OptionError, match='pretrain_network_vqgan: .*has no VQGAN encoder weights'):
        build_model(dckd_options(tmp_path, files))


def test_encoder_input_must_be_a_multiple_of_its_stride():
    encoder = VQGANEncoder(**{k: v for k, v in TINY_VQGAN.items() if k != 'type'})
    with pytest.raises(OptionError, match='multiples of 4'):
        encoder.features(torch.rand(1, 3, 12, 10))


def test_encoder_truncated_and_full_passes_agree():
    torch.manual_seed(0)
    encoder = VQGANEncoder(**{k: v for k, v in TINY_VQGAN.items() if k != 'type'}).eval()
    x = torch.rand(3, 3, 16, 16)
    with torch.no_grad():
        taps, logits = encoder.encode(x, full_rows=1)
        assert [f.shape[1:] for f in taps] == [(32, 16, 16), (32, 8, 8), (64, 4, 4)]
        assert logits.shape == (1, 4, 4, 16)
        reference = [encoder.features(x[i:i + 1]) for i in range(3)]
        for level, tap in enumerate(taps):
            assert torch.allclose(tap, torch.cat([r[level] for r in reference]), atol=1e-5)
        assert torch.allclose(logits, encoder.encode(x[:1], taps=False)[1], atol=1e-4)
        dist = encoder.code_distribution(x[:1])
        assert torch.allclose(dist.sum(-1), torch.ones(1, 4, 4))
        minus_one = VQGANEncoder(input_range=[-1, 1], **{k: v for k, v in TINY_VQGAN.items() if k != 'type'})
        minus_one.load_state_dict(encoder.state_dict())
        assert torch.allclose(minus_one.eval().features(x)[0], encoder.features(x * 2 - 1)[0])


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
    student = build_network(tiny_swinir(8))
    torch.save({'params': student.state_dict(), 'params_ema': student.state_dict()}, tmp_path / 'student.pth')
    opt = dict(is_train=False, dist=False, num_gpu=0, rank=0, world_size=1, scale=2, model_type='DCKDModel',
               network_g=tiny_swinir(8), path=dict(pretrain_network_g=str(tmp_path / 'student.pth'),
                                                   param_key_g='params_ema'), val=dict(metrics={}))
    model = build_model(opt)
    assert not hasattr(model, 'net_t') and not hasattr(model, 'net_vqgan')
    model.feed_data({'lq': torch.rand(1, 3, 7, 5)})
    model.test()
    assert model.output.shape == (1, 3, 14, 10)


def test_lcr_target_is_the_teacher_on_transformed_inputs_mapped_back(tmp_path, files):
    from dckd_basicsr.invertible_ops import apply_invertible_ops, undo_invertible_ops
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


def encoder_terms(model) -> dict:
    """L_dcl and L_dmm on the model's current ``output`` and ``output_t``, through the encoder passes of a step."""
    anchor, anchor_codes = model.encode_student()
    positive, negatives, positive_codes = model.encode_targets(anchor)
    return {'l_dcl': model.cri_dcl(anchor, positive, negatives), 'l_dmm': model.cri_dmm(anchor_codes, positive_codes)}


def test_batched_encoder_terms_equal_a_per_sample_reference(tmp_path, files):
    """The two-pass encoder path (anchor; positive + negatives, negatives truncated) against encoding every sample
    on its own with full passes, then Eq. 5 and Eq. 9 by hand (Eq. 5 means rebuilt from per-sample sums)."""
    model = build_model(dckd_options(tmp_path, files, ce_opt=dict(type='DistributionMappingLoss', loss_weight=0.5)))
    model.feed_data(batch())
    negatives = torch.rand(3 * 2, 3, 16, 16, generator=torch.Generator().manual_seed(4))  # (num_neg + 1) * B
    model.restore_negatives = lambda: negatives
    weights, batch_size, num_negatives = [0.25, 0.5, 1.0], 2, 3
    with torch.no_grad():
        model.output = model.net_g(model.lq)
        model.output_t = model.net_t(model.lq)
        terms = encoder_terms(model)
        encoder = model.net_vqgan
        numerators, denominators, elements, dmm = [0.0] * 3, [0.0] * 3, [0] * 3, 0.0
        for i in range(batch_size):
            anchor, anchor_logits = encoder.encode(model.output[i:i + 1])
            positive, positive_logits = encoder.encode(model.output_t[i:i + 1])
            negs = [encoder.encode(negatives[j * batch_size + i][None])[0] for j in range(num_negatives)]
            dmm += -(positive_logits.softmax(-1) * anchor_logits.log_softmax(-1)).sum(-1).mean() / batch_size
            for level in range(3):
                numerators[level] += (anchor[level] - positive[level]).abs().sum()
                denominators[level] += sum((anchor[level] - n[level]).abs().sum() for n in negs)
                elements[level] += anchor[level].numel()
    dcl = sum(w * (n / e) / (d / e + 1e-7) for w, n, d, e in zip(weights, numerators, denominators, elements))
    assert terms['l_dcl'].item() == pytest.approx(0.1 * dcl.item(), rel=1e-5)
    assert terms['l_dmm'].item() == pytest.approx(0.5 * dmm.item(), rel=1e-5)
