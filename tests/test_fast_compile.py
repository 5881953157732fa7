"""Compiled networks (``train.fast.compile``, issue 16): a compiled KD run trains, validates, saves and resumes on CPU,
its checkpoints load into uncompiled networks strictly, and where compilation is unavailable or fails the run goes on
uncompiled after one warning (or stops with ``compile_strict``).

Compiling costs seconds per network on a 2-core CPU, so the real compilation runs on one tiny pair (MSRResNet x2);
the DCKD encoder's blocks compile the same way (``Compiler.compile(..., blocks=...)``, exercised by
benchmarks/bench_step.py).
"""
import copy

import pytest
import torch
from basicsr.archs import build_network
from basicsr.models import build_model

from helpers import basicsr_messages, batch, kd_options, tiny_network

import dckd_basicsr  # noqa: F401
from dckd_basicsr.training import compilation
from dckd_basicsr.errors import OptionError
from dckd_basicsr.training.resume import check_resume


def kd_model(root, **fast):
    opt = kd_options(root, tiny_network('msrresnet'), tiny_network('msrresnet_teacher'), logits_opt=dict(type='L1Loss'),
                     fast=fast)
    torch.manual_seed(0)
    return build_model(opt), opt


def train(model, iters):
    for current_iter in iters:
        model.feed_data(batch(current_iter))
        model.optimize_parameters(current_iter)


@pytest.mark.slow
def test_a_compiled_run_trains_validates_saves_and_resumes(tmp_path):
    exact, _ = kd_model(tmp_path / 'exact')
    model, opt = kd_model(tmp_path / 'compiled', compile=True, compile_strict=True)  # strict: a failure is an error
    assert model.net_g._compiled_call_impl is not None and model.net_t._compiled_call_impl is not None
    train(exact, (1, 2))
    train(model, (1, 2))
    for key, value in exact.log_dict.items():  # inductor reorders float sums: not bit-identical
        assert model.log_dict[key] == pytest.approx(value, rel=1e-4), key
    model.feed_data(batch(9, size=12))  # validation: another size, eval mode, no gradient
    model.test()
    assert model.output.shape == (2, 3, 24, 24)
    model.save(0, 2)

    saved = torch.load(tmp_path / 'compiled/models/net_g_2.pth', weights_only=True)
    assert not any('_orig_mod' in key for state in saved.values() for key in state)
    plain = build_network(tiny_network('msrresnet'))
    plain.load_state_dict(saved['params'], strict=True)
    assert all(torch.equal(value, model.net_g.state_dict()[key]) for key, value in plain.state_dict().items())
    plain.load_state_dict(saved['params_ema'], strict=True)

    train(model, (3, ))
    opt = copy.deepcopy(opt)
    opt['path']['resume_state'] = f"{opt['path']['training_states']}/2.state"
    check_resume(opt, 2)
    torch.manual_seed(0)
    again = build_model(opt)
    again.resume_training(torch.load(opt['path']['resume_state'], weights_only=True))
    assert again.net_g._compiled_call_impl is not None
    train(again, (3, ))
    for key, value in model.net_g.state_dict().items():
        assert torch.allclose(value, again.net_g.state_dict()[key], rtol=1e-5, atol=1e-7), key


def test_unavailable_compilation_warns_once_and_trains_uncompiled(tmp_path, monkeypatch):
    monkeypatch.setattr(compilation, 'compile_unavailable', lambda device: 'no C++ compiler for inductor (test)')
    exact, _ = kd_model(tmp_path / 'exact')
    with basicsr_messages() as messages:
        model, _ = kd_model(tmp_path / 'compiled', compile=True)
    warnings = [m for m in messages if m.startswith('train.fast.compile')]
    assert warnings == ['train.fast.compile: network_g cannot be compiled (no C++ compiler for inductor (test)); '
                        'training goes on uncompiled where compilation fails (compile_strict: true makes this an '
                        'error).']
    assert model.net_g._compiled_call_impl is None
    train(exact, (1, ))
    train(model, (1, ))
    assert model.log_dict == exact.log_dict


def test_unavailable_compilation_is_an_error_with_compile_strict(tmp_path, monkeypatch):
    monkeypatch.setattr(compilation, 'compile_unavailable', lambda device: 'no C++ compiler for inductor (test)')
    with pytest.raises(OptionError, match=r'train.fast.compile: network_g cannot be compiled: no C\+\+ compiler'):
        kd_model(tmp_path, compile=True, compile_strict=True)


def failing_compile(fn, **kwargs):
    from torch._inductor.exc import InductorError

    def compiled(*args, **kw):
        raise InductorError(RuntimeError('C++ compile error (test)'), 'g++ ...')

    return compiled


def test_a_compilation_failing_at_the_first_call_falls_back_to_the_plain_forward(tmp_path, monkeypatch):
    monkeypatch.setattr(torch, 'compile', failing_compile)
    exact, _ = kd_model(tmp_path / 'exact')
    model, _ = kd_model(tmp_path / 'compiled', compile='max-autotune-no-cudagraphs')
    with basicsr_messages() as messages:
        train(model, (1, 2))
    assert len([m for m in messages if m.startswith('train.fast.compile')]) == 1  # one warning for the run
    assert model.net_g._compiled_call_impl is None and model.net_t._compiled_call_impl is None
    train(exact, (1, 2))
    assert model.log_dict == exact.log_dict
    strict, _ = kd_model(tmp_path / 'strict', compile=True, compile_strict=True)
    with pytest.raises(OptionError, match='train.fast.compile: network_g cannot be compiled: InductorError'):
        train(strict, (1, ))


def test_dckd_compiles_student_teacher_history_and_the_encoder_blocks_in_place(tmp_path):
    """Which modules DCKD compiles (compilation itself is lazy: nothing is called here), and that compiling in place
    leaves every state_dict key as it was."""
    from helpers import dckd_options, write_checkpoints

    from dckd_basicsr.archs.vqgan_arch import AttnBlock, Downsample, ResnetBlock
    model = build_model(dckd_options(tmp_path, write_checkpoints(tmp_path), fast=dict(compile=True)))
    for net in (model.net_g, model.net_t, model.net_his):
        assert net._compiled_call_impl is not None
    blocks = [m for m in model.net_vqgan.modules() if isinstance(m, (ResnetBlock, AttnBlock, Downsample))]
    assert len(blocks) == 9  # 3 levels x 1 block, 2 downsamplings, 1 attention, the middle 2 + 1
    assert all(block._compiled_call_impl is not None for block in blocks)
    assert model.net_vqgan._compiled_call_impl is None  # its passes stream taps to callbacks: compiled per block
    assert model.net_g_ema._compiled_call_impl is None
    for net in (model.net_g, model.net_t, model.net_his, model.net_vqgan):
        assert not any('_orig_mod' in key for key in net.state_dict())
