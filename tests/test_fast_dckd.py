"""Fast DCKD step (issue 9): streamed Eq. 5 denominators, negatives encoded a few at a time, ``train.fast``.

Correctness only (speed is measured by benchmarks/bench_step.py): the encoder terms of a step against every sample
encoded on its own (values, the negatives' features, the gradient reaching the student output) for every
``negatives_per_pass`` (1, the default, included); the store-less anchor pass against the plain modules.
"""
import pytest
import torch
from basicsr.models import build_model

from helpers import arch_args, batch, dckd_options, tiny_network, write_checkpoints

import dckd_basicsr  # noqa: F401
from dckd_basicsr.archs import vqgan_arch
from dckd_basicsr.archs.vqgan_arch import VQGANEncoder
from dckd_basicsr.errors import OptionError
from dckd_basicsr.losses.dcl_loss import DynamicContrastiveLoss

WEIGHTS, BATCH, NUM_NEGATIVES = [0.25, 0.5, 1.0], 2, 3  # num_neg 2 degraded copies + the LQ input

# Autocast of the frozen networks against fp32 (documented in README, train.fast): relative difference allowed per
# loss term on these tiny networks. bf16 keeps 8 bits of mantissa (rounding 2**-9 = 0.2 %), fp16 11 bits; errors add
# up over the layers, and Eq. 5's denominators are differences of close features, so l_dcl moves most (here 0.8 % in
# bf16; benchmarks/RESULTS.md has the full-size figures: up to 14 % in bf16, under 1 % in fp16).
AUTOCAST_RTOL = {'bf16': 0.02, 'fp16': 0.005}


@pytest.fixture
def files(tmp_path):
    return write_checkpoints(tmp_path)


def encoder_terms(model) -> dict:
    """L_dcl and L_dmm on the model's current ``output`` and ``output_t``, through the encoder passes of a step."""
    anchor, anchor_codes = model.encode_student()
    positive, negatives, positive_codes = model.encode_targets(anchor)
    return {'l_dcl': model.cri_dcl(anchor, positive, negatives), 'l_dmm': model.cri_dmm(anchor_codes, positive_codes)}


def make_model(tmp_path, files, **fast):
    train = dict(ce_opt=dict(type='DistributionMappingLoss', loss_weight=0.5))
    if fast:
        train['fast'] = fast
    model = build_model(dckd_options(tmp_path, files, **train))
    model.feed_data(batch())
    return model


def record_negative_features(model) -> list:
    """Wrap the model's Eq. 5 accumulator so every (level, negatives' features) it is given is kept."""
    seen = []
    make = model.cri_dcl.negative_distances

    def recording(anchor):
        distances = make(anchor)
        add = distances.add

        def add_and_keep(level, negatives):
            seen.append((level, negatives.detach().clone()))
            add(level, negatives)

        distances.add = add_and_keep
        return distances

    model.cri_dcl.negative_distances = recording
    return seen


def per_sample_reference(model, output, output_t, negatives):
    """Every sample encoded alone by a full pass, the features stacked into a batch, then the model's Eq. 5 and Eq. 9
    losses with all negatives at once (their values are pinned by test_dckd_losses and the golden tests)."""
    encoder, anchors, anchor_codes, positives, positive_codes, features = model.net_vqgan, [], [], [], [], []
    for i in range(BATCH):
        anchor, logits = encoder.encode(output[i:i + 1])
        anchors.append(anchor)
        anchor_codes.append(logits)
        with torch.no_grad():
            positive, logits = encoder.encode(output_t[i:i + 1])
            positives.append(positive)
            positive_codes.append(logits)
            features.append([encoder.encode(negatives[j * BATCH + i][None])[0] for j in range(NUM_NEGATIVES)])
    levels = range(len(WEIGHTS))
    anchor = [torch.cat([a[level] for a in anchors]) for level in levels]
    positive = [torch.cat([p[level] for p in positives]) for level in levels]
    negative = [torch.stack([torch.cat([features[i][j][level] for i in range(BATCH)]) for j in range(NUM_NEGATIVES)])
                for level in levels]  # (num_neg + 1, B, C, H, W)
    dcl = model.cri_dcl(anchor, positive, negative)
    dmm = model.cri_dmm(torch.cat(anchor_codes), torch.cat(positive_codes))
    return dcl, dmm, features


@pytest.mark.parametrize('per_pass', [1, 2, 3])  # 1: the default
def test_streamed_encoder_path_equals_a_per_sample_reference(tmp_path, files, per_pass):
    """Features of every negative, both loss values and the gradient on the student output, within 1e-5."""
    model = make_model(tmp_path, files, negatives_per_pass=per_pass)
    negatives = torch.rand(NUM_NEGATIVES * BATCH, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    model.restore_negatives = lambda: negatives
    seen = record_negative_features(model)
    with torch.no_grad():
        output, output_t = model.net_g(model.lq), model.net_t(model.lq)
    model.output, model.output_t = output.clone().requires_grad_(True), output_t
    terms = encoder_terms(model)
    (terms['l_dcl'] + terms['l_dmm']).backward()
    reference_input = output.clone().requires_grad_(True)
    dcl, dmm, reference_features = per_sample_reference(model, reference_input, output_t, negatives)
    (dcl + dmm).backward()

    # one add per level (3) and pass: 3 negatives one, two (2 + 1) or three at a time
    assert len(seen) == {1: 9, 2: 6, 3: 3}[per_pass]
    for level in range(3):
        streamed = torch.cat([features for lvl, features in seen if lvl == level])  # (num_neg + 1, B, C, H, W)
        expected = torch.stack([torch.cat([reference_features[i][j][level] for i in range(BATCH)])
                                for j in range(NUM_NEGATIVES)])
        assert streamed.shape == expected.shape
        assert torch.allclose(streamed, expected, atol=1e-5, rtol=1e-5)
    assert terms['l_dcl'].item() == pytest.approx(dcl.item(), rel=1e-5)
    assert terms['l_dmm'].item() == pytest.approx(dmm.item(), rel=1e-5)
    assert model.output.grad.abs().max() > 0
    # Both float32 results lie about 1.4e-5 of the largest entry from a float64 reference (measured with the Eq. 5 tap
    # before the attention block; 1e-5 sufficed when it was after it), so allow 3e-5.
    assert torch.allclose(model.output.grad, reference_input.grad, atol=3e-5 * reference_input.grad.abs().max())


@pytest.mark.parametrize('d_func', ['L1', 'L2'])
def test_level_by_level_accumulation_equals_all_at_once(d_func):
    """NegativeDistances (negatives added one, then two at a time) gives Eq. 5's value and gradient of forward()."""
    generator = torch.Generator().manual_seed(0)
    shapes = [(2, 4, 8, 8), (2, 8, 4, 4), (2, 16, 2, 2)]
    loss = DynamicContrastiveLoss(loss_weight=0.1, weights=[0.25, 0.5, 1.0], d_func=d_func)
    anchor = [torch.randn(s, generator=generator, dtype=torch.float64, requires_grad=True) for s in shapes]
    positive = [torch.randn(s, generator=generator, dtype=torch.float64) for s in shapes]
    negatives = [torch.randn((3, ) + s, generator=generator, dtype=torch.float64) for s in shapes]
    anchor[0].data[:, :, 0, 0] = negatives[0][0, :, :, 0, 0]  # |a - n| at 0: both must take sign(0) = 0

    at_once = loss(anchor, positive, negatives)
    grads_at_once = torch.autograd.grad(at_once, anchor)
    distances = loss.negative_distances(anchor)
    for level, features in enumerate(negatives):
        distances.add(level, features[0])
        distances.add(level, features[1:])
    streamed = loss(anchor, positive, distances)
    grads_streamed = torch.autograd.grad(streamed, anchor)

    assert streamed.item() == pytest.approx(at_once.item(), rel=1e-12)
    for a, b in zip(grads_streamed, grads_at_once):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-14)


def test_autograd_memory_does_not_grow_with_the_number_of_negatives(tmp_path, files):
    """What autograd keeps for the backward pass of the encoder terms is the same for 1 and 5 negatives."""

    def saved_bytes(num_neg):
        model = build_model(dckd_options(tmp_path, files, num_neg=num_neg))
        model.feed_data(batch())
        total = []

        def pack(tensor):
            total.append(tensor.numel() * tensor.element_size())
            return tensor

        with torch.no_grad():
            model.output_t = model.net_t(model.lq)
        model.output = model.net_g(model.lq)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            encoder_terms(model)
        return sum(total)

    assert saved_bytes(1) == saved_bytes(4)


@pytest.mark.parametrize('dtype', ['bf16', 'fp16'])
def test_autocast_and_channels_last_stay_within_the_documented_tolerance(tmp_path, files, dtype):
    exact = make_model(tmp_path, files)
    fast = make_model(tmp_path, files, autocast=dtype, channels_last=True)
    for net in ('net_g', 'net_his'):
        getattr(fast, net).load_state_dict(getattr(exact, net).state_dict())
    assert fast.net_vqgan.encoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert fast.net_his.conv_first.weight.is_contiguous(memory_format=torch.channels_last)
    assert exact.net_vqgan.encoder.conv_in.weight.is_contiguous()
    terms = {}
    noisy = exact.lq.repeat(NUM_NEGATIVES, 1, 1, 1)
    noisy = (noisy + 0.1 * torch.randn(noisy.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    for name, model in (('exact', exact), ('fast', fast)):
        with torch.no_grad():
            model.output = model.net_g(model.lq)
            model.run_teacher()
            model.restore_negatives = (lambda m: lambda: m.frozen.run(m.net_his, noisy))(model)
            terms[name] = encoder_terms(model)
            terms[name]['teacher'] = model.output_t
    assert terms['fast']['teacher'].dtype == torch.float32 and terms['fast']['teacher'].is_contiguous()
    assert not torch.equal(terms['fast']['teacher'], terms['exact']['teacher'])  # autocast really ran
    assert torch.allclose(terms['fast']['teacher'], terms['exact']['teacher'], atol=0.02)
    for key in ('l_dcl', 'l_dmm'):
        assert terms['fast'][key].item() == pytest.approx(terms['exact'][key].item(), rel=AUTOCAST_RTOL[dtype])


def test_a_fast_training_step_updates_the_student(tmp_path, files):
    model = make_model(tmp_path, files, autocast='bf16', channels_last=True, negatives_per_pass=2)
    before = {k: v.clone() for k, v in model.net_g.state_dict().items()}
    model.optimize_parameters(1)
    assert set(model.log_dict) >= {'l_pix', 'l_kd', 'l_dcl', 'l_dmm'}
    assert all(torch.isfinite(torch.tensor(value)) for value in model.log_dict.values())
    assert any(not torch.equal(before[k], v) for k, v in model.net_g.state_dict().items())


@pytest.mark.parametrize('fast, message', [
    (dict(autocast='fp8'), 'train.fast.autocast'),
    (dict(chanels_last=True), 'train.fast.chanels_last'),
    (dict(negatives_per_pass=0), 'train.fast.negatives_per_pass'),
    ('bf16', 'train.fast'),
])
def test_fast_option_errors(tmp_path, files, fast, message):
    with pytest.raises(OptionError, match=message):
        build_model(dckd_options(tmp_path, files, fast=fast))


def test_logits_kd_rejects_dckd_only_fast_keys(tmp_path, files):
    opt = dckd_options(tmp_path, files, cl_opt=None, ce_opt=None, fast=dict(negatives_per_pass=2))
    opt['model_type'] = 'KDModel'
    with pytest.raises(OptionError, match='train.fast.negatives_per_pass'):  # at set-up or, at the latest, step 1
        model = build_model(opt)
        model.feed_data(batch())
        model.optimize_parameters(1)


# ---------------------------------------------------------------- the anchor's pass through the frozen encoder
def small_encoder(trainable: bool = False) -> VQGANEncoder:
    """Two levels of two residual blocks (the second level widens: a 1x1 shortcut), attention at the second level."""
    torch.manual_seed(0)
    return VQGANEncoder(**arch_args(tiny_network('vqgan_two_blocks'))).eval().requires_grad_(trainable)


def encoder_input(channels_last: bool = False) -> torch.Tensor:
    x = torch.rand(2, 3, 16, 24, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    return (x.contiguous(memory_format=torch.channels_last) if channels_last else x).requires_grad_(True)


def anchor_loss(encoder, x):
    taps, logits = encoder.encode(x)
    return sum(tap.sin().sum() for tap in taps) + logits.log_softmax(-1).sum()


@pytest.mark.parametrize('channels_last', [False, True])
def test_store_less_encoder_pass_has_the_gradient_of_the_plain_one(monkeypatch, channels_last):
    """The frozen-encoder path (recomputed GroupNorm + swish, weight-only convolutions) changes no value or gradient:
    compared in float64 with the plain modules' autograd."""
    encoder = small_encoder().double()
    if channels_last:
        encoder.to(memory_format=torch.channels_last)
    x = encoder_input(channels_last)
    grad = torch.autograd.grad(anchor_loss(encoder, x), x)[0]
    monkeypatch.setattr(vqgan_arch, '_store_less', lambda module, x: False)
    x_plain = encoder_input(channels_last)
    grad_plain = torch.autograd.grad(anchor_loss(encoder, x_plain), x_plain)[0]
    assert grad.abs().max() > 0
    assert torch.allclose(grad, grad_plain, rtol=1e-10, atol=1e-12)


def full_resolution_activations_kept(encoder, x) -> int:
    """Distinct (B, ch, H, W) float tensors autograd keeps for the backward pass of one encoder pass."""
    kept = set()

    def pack(tensor):
        if tensor.shape == (x.size(0), encoder.encoder.tap_channels[0]) + x.shape[-2:]:
            kept.add(tensor.untyped_storage().data_ptr())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        encoder.encode(x)
    return len(kept)


def test_store_less_encoder_pass_keeps_only_the_group_norm_inputs(monkeypatch):
    """At the first level (two blocks), plain autograd keeps 6 tensors per block (the block input, both GroupNorm
    outputs, both swish outputs, the first convolution's output); the frozen path keeps only the 2 GroupNorm inputs."""
    encoder = small_encoder()
    assert full_resolution_activations_kept(encoder, encoder_input().float()) == 2 * 2
    monkeypatch.setattr(vqgan_arch, '_store_less', lambda module, x: False)
    assert full_resolution_activations_kept(encoder, encoder_input().float()) == 2 * 6


def test_store_less_path_is_off_for_trainable_weights():
    """A trainable encoder runs the plain modules, so its weights get gradients."""
    encoder = small_encoder(trainable=True)
    anchor_loss(encoder, encoder_input().float()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in encoder.encoder.parameters())


def test_store_less_path_under_autocast_recomputes_in_the_forward_precision(monkeypatch):
    """Under bf16 autocast the recomputed GroupNorm + swish and the transposed convolutions run as autocast ran the
    forward pass, so the input gradient is that of the plain modules under autocast."""
    encoder = small_encoder()
    grads = []
    for store_less in (True, False):
        if not store_less:
            monkeypatch.setattr(vqgan_arch, '_store_less', lambda module, x: False)
        x = encoder_input().float()
        with torch.autocast('cpu', dtype=torch.bfloat16):
            loss = anchor_loss(encoder, x)
            assert full_resolution_activations_kept(encoder, x.detach().requires_grad_()) == (4 if store_less else 12)
        grads.append(torch.autograd.grad(loss, x)[0])
    assert grads[0].dtype == torch.float32
    assert torch.allclose(grads[0], grads[1], rtol=0, atol=1e-3 * grads[1].abs().max())


def test_store_less_backward_does_the_plain_backward_work(monkeypatch):
    """torch's FLOP counter follows the anchor's backward pass (no nested autograd call), and it counts the same
    matrix work as the plain modules: the transposed convolutions are the input gradients autograd computes."""
    from torch.utils.flop_counter import FlopCounterMode
    encoder, counts = small_encoder(), []
    for store_less in (True, False):
        if not store_less:
            monkeypatch.setattr(vqgan_arch, '_store_less', lambda module, x: False)
        with FlopCounterMode(display=False) as counter:
            anchor_loss(encoder, encoder_input().float()).backward()
        counts.append(counter.get_total_flops())
    assert counts[0] == counts[1] > 0


@pytest.mark.parametrize('autocast', [False, True])
def test_no_grad_encoder_pass_equals_the_recorded_one(autocast):
    """The no-grad passes (teacher output, negatives) work in place; their taps and code logits are those of the
    plain modules bit for bit, also in dtype under bf16 autocast."""
    encoder, x = small_encoder(), encoder_input().float().detach()
    with torch.autocast('cpu', dtype=torch.bfloat16, enabled=autocast):
        recorded = encoder.encode(x)  # grad mode on, input without gradient: the plain modules
        with torch.no_grad():
            in_place = encoder.encode(x)
    for a, b in zip(recorded[0] + [recorded[1]], in_place[0] + [in_place[1]]):
        assert a.dtype == b.dtype and torch.equal(a, b)
