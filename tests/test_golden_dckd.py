"""One DCKD training step against the authors' code (golden fixtures from ``tests/golden/make_dckd_golden.py``).

Each fixture holds a step of the authors' ``DCKDModel`` on tiny networks with deterministic weights: its random draws
(LCR masks, per-copy blur/resize/noise choices), the negatives, the loss terms, the student's gradients and the
student and history weights after the step (the history update reads the EMA weights, so those are covered too).
Our ``DCKDModel`` is built from the same options through BasicSR's ``build_model``, replays those draws (through
:meth:`NegativeGenerator.apply` and the LCR masks of :mod:`dckd_basicsr.distill.invertible_ops`) and must agree: loss terms
within 1e-5 relative, tensors within 1e-5 relative plus a small fraction of each tensor's largest entry (see RTOL).
"""
import copy
import math
from pathlib import Path
from typing import Dict

import pytest
import torch
from basicsr.archs import build_network
from basicsr.models import build_model

import dckd_basicsr  # noqa: F401
from dckd_basicsr.distill.negatives import CopyDraws

GOLDEN = Path(__file__).resolve().parent / 'data' / 'golden'
FIXTURES = sorted(GOLDEN.glob('dckd_*.pt'))
# the authors' log names -> ours
LOSS_NAMES = {'l_pix': 'l_pix', 'l_ts': 'l_kd', 'l_lcr': 'l_lcr', 'l_cl': 'l_dcl', 'l_ce': 'l_dmm'}
# Element-wise 1e-5 relative, plus an absolute term of 1e-5 (gradients) or 1e-6 (weights) of the tensor's largest
# entry: float32 rounding differs between the two codebases (batched vs per-list encoder passes, fused attention,
# separable vs 2-D blur), and an entry that is a near-cancelling sum (a gradient that is mathematically ~0, such
# as the attention key biases') keeps only that absolute error. Measured: at most 3.2e-6 (gradients) and 1.2e-7
# (weights) of the largest entry. A real difference (e.g. the Eq. 5 tap after the attention) is far above it.
RTOL, GRAD_ATOL, WEIGHT_ATOL = 1e-5, 1e-5, 1e-6


def seeded_parameters(net: torch.nn.Module, seed: int) -> Dict[str, torch.Tensor]:
    """The fixture script's deterministic weights (independent of module construction order)."""
    state = {}
    for index, (name, param) in enumerate(sorted(net.named_parameters())):
        noise = torch.randn(param.shape, generator=torch.Generator().manual_seed(seed * 100003 + index))
        if param.dim() > 1:
            state[name] = noise / math.sqrt(param[0].numel())
        elif name.endswith('weight'):
            state[name] = 1 + 0.1 * noise
        else:
            state[name] = 0.1 * noise
    return state


def build_our_model(fixture: dict, root: Path):
    options = fixture['options']
    # the EMA student (so the history model) has its own weights, as in the fixture script
    nets = {'g': options['network_g'], 't': options['network_t'], 'vqgan': options['network_vqgan'],
            'g_ema': options['network_g']}
    states = {}
    for offset, (key, net_opt) in enumerate(nets.items()):
        net = build_network(copy.deepcopy(net_opt))
        state = seeded_parameters(net, 10 * offset + 1)
        assert {k: float(v.double().sum()) for k, v in state.items()} == fixture['checksums'][key], \
            f'{key}: the regenerated weights differ from the fixture script\'s (parameter names or torch.randn changed)'
        net.load_state_dict(state, strict=False)
        states[key] = net.state_dict()
    files = {key: str(root / f'{key}.pth') for key in ('g', 't', 'vqgan')}
    torch.save({'params': states['g'], 'params_ema': states['g_ema']}, files['g'])
    torch.save({'params': states['t']}, files['t'])
    torch.save({'params': states['vqgan']}, files['vqgan'])
    (root / 'models').mkdir()
    (root / 'states').mkdir()
    opt = dict(is_train=True, dist=False, num_gpu=0, rank=0, world_size=1, manual_seed=0, scale=options['scale'],
               model_type='DCKDModel', network_g=copy.deepcopy(nets['g']), network_t=copy.deepcopy(nets['t']),
               network_his=True, network_vqgan=copy.deepcopy(nets['vqgan']),
               path=dict(models=str(root / 'models'), training_states=str(root / 'states'),
                         pretrain_network_g=files['g'], param_key_g='params', strict_load_g=True,
                         pretrain_network_t=files['t'], param_key_t='params', strict_load_t=True,
                         pretrain_network_vqgan=files['vqgan'], param_key_vqgan='params', strict_load_vqgan=True),
               train=copy.deepcopy(options['train']), val=dict(metrics={}))
    return build_model(opt)


def recorded_draws(fixture: dict):
    draws = []
    for recorded in fixture['copies']:
        draw = CopyDraws(noise=recorded.get('noise'))
        if 'blur_kernel' in recorded:  # kornia's gaussian_blur2d(x, kernel_size, sigma): (height, width), (y, x)
            draw.blur_kernel = tuple(recorded['blur_kernel'].tolist())
            draw.blur_sigma = tuple(recorded['blur_sigma'].tolist())
        if 'size' in recorded:
            draw.size = tuple(recorded['size'].tolist())
            draw.resize_mode, draw.restore_mode = recorded['resize_mode'], recorded['restore_mode']
        draws.append(draw)
    return draws


def recorded_lcr_masks(fixture: dict):
    """The authors' ops i (invert), h (flip dim -2), v (flip dim -1), t (transpose) as our masks."""
    lcr = fixture['lcr']
    batch = fixture['lq'].size(0)
    names = {'invert': 'i', 'vflip': 'h', 'hflip': 'v', 'transpose': 't'}
    return {ours: lcr[theirs].view(batch, 1, 1, 1) for ours, theirs in names.items()}


def assert_close(actual: torch.Tensor, expected: torch.Tensor, what: str, scaled_atol: float) -> None:
    atol = scaled_atol * float(expected.abs().max())
    torch.testing.assert_close(actual, expected, rtol=RTOL, atol=atol, msg=lambda m: f'{what}: {m}')


@pytest.fixture(params=FIXTURES, ids=lambda path: path.stem)
def golden(request):
    return torch.load(request.param, weights_only=True)


def test_fixtures_cover_the_released_setting_and_every_negative_path():
    cases = [torch.load(path, weights_only=True) for path in FIXTURES]
    assert {case['case'] for case in cases} == {'swinir', 'rcan', 'nafnet', 'restormer'}
    copies = [c for case in cases for c in case['copies']]
    assert any('blur_kernel' in c and c['blur_kernel'][0] != c['blur_kernel'][1] for c in copies)
    assert {bool(c['up']) for c in copies if 'up' in c} == {True, False}
    assert any('noise' in c and 'size' not in c for c in copies) and any('noise' in c and 'size' in c for c in copies)
    released = [case for case in cases if case['options']['train']['gaussian_blur_prob'] == 0]
    assert released and all(case['options']['train']['resize_prob'] == 0 for case in released)


def test_one_step_equals_the_authors(golden, tmp_path, monkeypatch):
    model = build_our_model(golden, tmp_path)
    masks = recorded_lcr_masks(golden)
    monkeypatch.setattr('dckd_basicsr.models.kd_model.random_invertible_ops', lambda x, prob, generator=None: masks)
    draws = recorded_draws(golden)
    model.negatives.draw = lambda lq: draws
    negatives = []
    model.net_his.register_forward_pre_hook(lambda module, args: negatives.append(args[0].detach().clone()))
    grads = {}
    step = model.optimizer_g.step

    def recording_step(*args, **kwargs):
        grads.update({k: p.grad.detach().clone() for k, p in model.net_g.named_parameters()})
        return step(*args, **kwargs)

    model.optimizer_g.step = recording_step
    model.feed_data({'lq': golden['lq'], 'gt': golden['gt']})
    model.optimize_parameters(1)

    assert len(negatives) == 1
    assert_close(negatives[0], golden['negatives'], 'negatives', WEIGHT_ATOL)
    assert set(model.log_dict) == {LOSS_NAMES[name] for name in golden['losses']}
    for theirs, value in golden['losses'].items():
        assert model.log_dict[LOSS_NAMES[theirs]] == pytest.approx(value, rel=RTOL), theirs
    assert grads.keys() == golden['grads'].keys()
    for name, grad in golden['grads'].items():
        assert_close(grads[name], grad, f'gradient of {name}', GRAD_ATOL)
    for label, net in (('net_g', model.net_g), ('net_his', model.net_his)):
        params = dict(net.named_parameters())
        for name, value in golden[label].items():
            assert_close(params[name].detach(), value, f'{label}.{name} after the step', WEIGHT_ATOL)
