"""Whole-step mixed precision (``train.fast.amp``, issue 16): loss drift against fp32, training, saving and resuming
through the real model, the GradScaler of fp16 and its interplay with the non-finite step skipping, DUKD's two steps.

Everything runs on CPU (torch >= 2.3 has fp16 autocast and a GradScaler there; where a torch lacks fp16 autocast,
``amp: fp16`` is one OptionError, checked by :func:`test_fp16_without_support_is_one_clear_message`).
"""
import copy

import pytest
import torch
from basicsr.models import build_model

from helpers import basicsr_messages, batch, dckd_options, kd_options, tiny_network, write_checkpoints

import dckd_basicsr  # noqa: F401
from dckd_basicsr.training import precision
from dckd_basicsr.errors import OptionError
from dckd_basicsr.training.resume import check_resume

# train.fast.amp against fp32 (documented in README, train.fast): relative difference allowed per loss term, the same
# weights and inputs, on the tiny DCKD* model of helpers.dckd_options (three batches measured). bf16 keeps 8 bits of
# mantissa, fp16 11. Measured: bf16 moves L_dcl by 5.7-7.1 % (Eq. 5's denominators are differences of close
# features; frozen-only autocast: bf16 moves it by 14-15 % here) and the other terms by at most 5.4e-4; fp16 moves
# L_dcl by 0.37-0.50 % and the others by at most 6.9e-5. Allowed: about twice (L_dcl) to four times those.
AMP_RTOL = {'bf16': {'l_dcl': 0.15, 'other': 2e-3}, 'fp16': {'l_dcl': 0.015, 'other': 5e-4}}


@pytest.fixture
def files(tmp_path):
    return write_checkpoints(tmp_path)


def loss_values(tmp_path, files, seed, **fast):
    """One step's loss terms (no update) of the DCKD* model built from seed 0, on ``batch(seed)``."""
    torch.manual_seed(0)
    model = build_model(dckd_options(tmp_path, files, fast=fast))
    model.feed_data(batch(seed))
    with model.model_random_stream(), torch.no_grad(), model.precision.step_autocast():
        model.output = model.net_g(model.lq).float()
        model.run_teacher()
        return {key: value.item() for key, value in model.compute_losses(1).items()}


@pytest.mark.parametrize('amp', ['bf16', 'fp16'])
def test_amp_loss_terms_stay_within_the_documented_tolerance(tmp_path, files, amp):
    for seed in (0, 1):
        exact, fast = loss_values(tmp_path, files, seed), loss_values(tmp_path, files, seed, amp=amp)
        assert exact.keys() == fast.keys() == {'l_pix', 'l_kd', 'l_lcr', 'l_dcl', 'l_dmm'}
        assert fast != exact  # autocast really ran
        for key, value in exact.items():
            rtol = AMP_RTOL[amp].get(key, AMP_RTOL[amp]['other'])
            assert fast[key] == pytest.approx(value, rel=rtol), (seed, key)


def test_amp_runs_the_student_in_low_precision_and_keeps_fp32_state(tmp_path, files):
    model = build_model(dckd_options(tmp_path, files, fast=dict(amp='bf16')))
    dtypes = []
    hook = model.net_g.conv_first.register_forward_hook(lambda module, args, out: dtypes.append(out.dtype))
    model.feed_data(batch(0))
    model.optimize_parameters(1)
    hook.remove()
    assert dtypes == [torch.bfloat16]
    assert model.output.dtype == torch.float32
    for net in (model.net_g, model.net_g_ema, model.net_his):
        assert all(p.dtype == torch.float32 for p in net.state_dict().values() if p.is_floating_point())
    state = next(iter(model.optimizer_g.state.values()))
    assert state['exp_avg'].dtype == state['exp_avg_sq'].dtype == torch.float32
    assert model.precision.autocast == 'bf16'  # amp implies autocast of the frozen networks


def test_amp_with_autocast_false_keeps_the_frozen_networks_in_fp32(tmp_path, files):
    model = build_model(dckd_options(tmp_path, files, fast=dict(amp='bf16', autocast=False)))
    dtypes = []
    model.net_t.conv_first.register_forward_hook(lambda module, args, out: dtypes.append(out.dtype))
    model.feed_data(batch(0))
    with model.precision.step_autocast():
        model.run_teacher()
    assert dtypes == [torch.float32]


def train(model, iters):
    for current_iter in iters:
        model.feed_data(batch(current_iter))
        model.optimize_parameters(current_iter)
        model.update_learning_rate(current_iter, warmup_iter=-1)


def resumed(opt, at):
    """A fresh model resumed from the checkpoint of iteration ``at``, as ``train_pipeline`` does."""
    opt = copy.deepcopy(opt)
    opt['path']['resume_state'] = f"{opt['path']['training_states']}/{at}.state"
    check_resume(opt, at)
    model = build_model(opt)
    model.resume_training(torch.load(opt['path']['resume_state'], weights_only=True))
    return model


def assert_same_networks(a, b):
    for name in ('net_g', 'net_g_ema', 'net_his'):
        sa, sb = getattr(a, name).state_dict(), getattr(b, name).state_dict()
        assert all(torch.equal(sa[key], sb[key]) for key in sa), name


@pytest.mark.parametrize('amp', ['bf16', 'fp16'])
def test_amp_trains_saves_and_resumes_exactly(tmp_path, files, amp):
    opt = dckd_options(tmp_path, files, fast=dict(amp=amp), step=[1])
    torch.manual_seed(0)
    model = build_model(copy.deepcopy(opt))
    train(model, (1, 2))
    model.save(0, 2)
    train(model, (3, 4))
    again = resumed(opt, 2)
    if amp == 'fp16':
        assert again.precision.scaler.state_dict() == torch.load(f"{opt['path']['training_states']}/2.state",
                                                            weights_only=True)['scaler']
    train(again, (3, 4))
    assert all(abs(value) < 10 for value in model.log_dict.values())
    assert_same_networks(model, again)
    if amp == 'fp16':
        assert again.precision.scaler.state_dict() == model.precision.scaler.state_dict()


def set_scale(model, scale, growth_tracker=0):
    scaler = model.precision.scaler
    scaler.load_state_dict(dict(scaler.state_dict(), scale=scale, _growth_tracker=growth_tracker))


def test_grad_scaler_state_survives_a_resume(tmp_path, files):
    opt = dckd_options(tmp_path, files, fast=dict(amp='fp16'))
    model = build_model(copy.deepcopy(opt))
    set_scale(model, 1024.0, growth_tracker=7)  # as after overflows and 7 good steps
    model.save(0, 1)
    state = resumed(opt, 1).precision.scaler.state_dict()
    assert state['scale'] == 1024.0 and state['_growth_tracker'] == 7


def snapshot(model):
    return {key: value.clone() for key, value in model.net_g.state_dict().items()}


def test_scaler_overflow_is_not_a_bad_step_but_a_nan_loss_is(tmp_path, files):
    model = build_model(dckd_options(tmp_path, files, fast=dict(amp='fp16'), max_nonfinite_steps=3))
    train(model, (1, ))
    before = snapshot(model)
    set_scale(model, 2.0**127)  # the scaled loss overflows even in fp32: every gradient is inf
    train(model, (2, ))
    # skipped by the scaler, its scale halved
    assert model.precision.overflow and model.precision.scaler.get_scale() == 2.0**126
    assert all(torch.isfinite(torch.tensor(value)) for value in model.log_dict.values())
    assert model.nonfinite.in_a_row == 0  # not counted towards train.max_nonfinite_steps
    assert all(torch.equal(before[key], value) for key, value in snapshot(model).items())

    set_scale(model, 256.0)
    original = model.compute_losses

    def poisoned(current_iter):
        losses = original(current_iter)
        losses['l_kd'] = losses['l_kd'] * float('nan')
        return losses

    model.compute_losses = poisoned
    with basicsr_messages() as records:
        train(model, (3, ))
    assert model.nonfinite.in_a_row == 1  # a real NaN still counts
    assert any(record.startswith('iter 3: non-finite loss (l_kd = nan)') for record in records)
    assert model.precision.scaler.get_scale() == 256.0  # the scaler saw no step
    assert all(torch.equal(before[key], value) for key, value in snapshot(model).items())
    model.compute_losses = original
    train(model, (4, ))
    assert model.nonfinite.in_a_row == 0 and not model.precision.overflow
    assert any(not torch.equal(before[key], value) for key, value in snapshot(model).items())


def dukd_model(tmp_path, optimizer=None, **fast):
    opt = kd_options(tmp_path, tiny_network('swinir_student'), tiny_network('swinir_teacher'), model_type='DUKDModel',
                     kd_opt=dict(type='L1Loss'), noisy=dict(prob=0.5), dukd_opt=dict(n_gt_sub=2, zoom_out=True),
                     fast=fast)
    if optimizer:
        opt['train']['optim_g'] = optimizer
    torch.manual_seed(0)
    return build_model(opt)


@pytest.mark.parametrize('amp', ['bf16', 'fp16'])
def test_dukd_two_steps_under_amp(tmp_path, amp):
    exact, fast = dukd_model(tmp_path), dukd_model(tmp_path, amp=amp)
    for model in (exact, fast):
        train(model, (1, 2))
    assert fast.log_dict.keys() == exact.log_dict.keys() >= {'l_zoom_in', 'l_zoom_out_kd'}
    for key, value in exact.log_dict.items():  # two Adam steps of 1e-3 on the same data: close to the fp32 run
        assert fast.log_dict[key] == pytest.approx(value, rel=0.05), key


def test_dukd_carries_step_1_gradients_at_the_right_scale(tmp_path):
    """Step 2 adds its scaled gradients to step 1's, which step 1 already unscaled: they must be scaled again, not
    divided by the scale twice. With SGD (the update is the gradient), loss scales 1 and 2**10 give the same weights
    after both steps, up to fp16 rounding."""
    runs = []
    for scale in (1.0, 1024.0):
        model = dukd_model(tmp_path, optimizer=dict(type='SGD', lr=0.1), amp='fp16')
        set_scale(model, scale)
        train(model, (1, ))
        runs.append(snapshot(model))
    for key, value in runs[0].items():
        assert torch.allclose(value, runs[1][key], rtol=1e-3, atol=1e-5), key


def test_fp16_without_support_is_one_clear_message(tmp_path, files, monkeypatch):
    monkeypatch.setattr(precision, 'fp16_supported', lambda device: False)
    with pytest.raises(OptionError, match=r'train.fast.amp: fp16; torch .* has no fp16 autocast on cpu; use bf16'):
        build_model(dckd_options(tmp_path, files, fast=dict(amp='fp16')))


@pytest.mark.parametrize('fast, message', [
    (dict(amp='fp8'), 'train.fast.amp'),
    (dict(amp=True), 'train.fast.amp'),
    (dict(compile='fastest'), 'train.fast.compile'),
])
def test_amp_and_compile_option_errors(tmp_path, files, fast, message):
    with pytest.raises(OptionError, match=message):
        build_model(dckd_options(tmp_path, files, fast=fast))
