"""DUKD (Table 2's DUKD row on the KD base): the upcycling pieces (dckd_basicsr/distill/upcycling.py: MATLAB-bicubic
zoom-out, zoom-in tiles of the GT) and DUKDModel's terms, draws, two optimizer steps and option errors. The model is
pinned against the authors' code by test_golden_dukd."""
import pytest
import torch
from basicsr.models import build_model
from basicsr.utils.matlab_functions import imresize
from torch.nn import functional as F

from helpers import batch, kd_options, tiny_rcan, tiny_swinir

import dckd_basicsr  # noqa: F401
from dckd_basicsr.archs.padding import padded_forward
from dckd_basicsr.distill.upcycling import matlab_bicubic_downscale, random_grid_positions, zoom_in_tiles
from dckd_basicsr.errors import OptionError


@pytest.mark.parametrize('scale,size', [(4, (48, 48)), (3, (48, 36)), (2, (10, 14)), (4, (9, 13))])
def test_zoom_out_is_basicsr_matlab_imresize(scale, size):
    x = torch.rand(3, 3, *size, generator=torch.Generator().manual_seed(scale))
    expected = torch.stack([imresize(image, 1 / scale) for image in x])
    assert torch.allclose(matlab_bicubic_downscale(x, scale), expected, atol=1e-6)


def test_zoom_in_tiles_are_grid_cells_of_the_gt_drawn_once_per_batch():
    gt = torch.arange(2 * 16 * 16, dtype=torch.float32).view(2, 1, 16, 16)
    tiles = zoom_in_tiles(gt, (8, 8), [(1, 0), (0, 1)])
    assert tiles.shape == (4, 1, 8, 8)  # tile-major: both samples' first tile, then their second
    assert torch.equal(tiles[:2], gt[..., 8:16, 0:8]) and torch.equal(tiles[2:], gt[..., 0:8, 8:16])
    cells = random_grid_positions(3, 4, torch.Generator().manual_seed(0))
    assert len(set(cells)) == 4 and all(0 <= i < 3 and 0 <= j < 3 for i, j in cells)  # distinct cells of the grid
    assert random_grid_positions(3, 4, torch.Generator().manual_seed(0)) == cells  # drawn from the given stream only
    reached = {cell for seed in range(40) for cell in random_grid_positions(3, 1, torch.Generator().manual_seed(seed))}
    assert reached == {(i, j) for i in range(3) for j in range(3)}  # every cell can be drawn
    with pytest.raises(ValueError, match='1 to 4'):
        random_grid_positions(2, 5)
    with pytest.raises(ValueError, match='do not fit'):
        zoom_in_tiles(gt, (8, 8), [(2, 0)])


def dukd_options(tmp_path, student=None, teacher=None, **train):
    train = dict(dict(kd_opt=dict(type='L1Loss'), noisy=dict(prob=0.5), dukd_opt=dict(n_gt_sub=[2], zoom_out=True)),
                 **train)
    opt = kd_options(tmp_path, student or tiny_rcan(1), teacher or tiny_rcan(2), **train)
    opt['model_type'] = 'DUKDModel'
    return opt


def recorded_draws(model):
    """Wrap the model's draws so that a test can recompute the terms."""
    draws = {}
    cells, masks = model.draw_zoom_in_cells, model.draw_label_masks
    model.draw_zoom_in_cells = lambda: draws.setdefault('cells', cells())
    model.draw_label_masks = lambda tiles: draws.setdefault('masks', masks(tiles))
    return draws


def test_dukd_terms_by_hand_on_swinir_with_a_padded_zoom_out(tmp_path):
    """lr 0 keeps the student fixed over both steps, so every term can be recomputed from it. The 12x12 LQ zooms out
    to 6x6, no multiple of the window (4): padded and cropped back (the authors' code would crash there)."""
    opt = dukd_options(tmp_path, tiny_swinir('student'), tiny_swinir('teacher'),
                       pixel_opt=dict(type='L1Loss', loss_weight=5.0), noisy=dict(prob=1.0))
    opt['train']['optim_g']['lr'] = 0.0
    model = build_model(opt)
    draws = recorded_draws(model)
    data = batch(size=12)
    model.feed_data(data)
    model.optimize_parameters(1)
    assert list(model.log_dict) == model.loss_names == ['l_pix', 'l_kd', 'l_zoom_in', 'l_zoom_out_pix',
                                                          'l_zoom_out_kd']
    masks = draws['masks']
    assert all(mask.all() for mask in masks.values()) and len(draws['cells']) == 2
    student, teacher = model.net_g, model.net_t
    with torch.no_grad():
        output = student(data['lq'])
        tiles = torch.cat([data['gt'][..., 12 * i:12 * (i + 1), 12 * j:12 * (j + 1)] for i, j in draws['cells']])
        # every op applied: the input inverted, flipped both ways and transposed; the output mapped back in reverse
        transformed = (1 - tiles).flip(-2).flip(-1).transpose(-1, -2)
        mapped_back = 1 - student(transformed).transpose(-1, -2).flip(-1).flip(-2)
        small = torch.stack([imresize(image, 1 / 2) for image in data['lq']])
        zoomed_out = padded_forward(student, small, 4)
        expected = {'l_pix': 5 * F.l1_loss(output, data['gt']), 'l_kd': F.l1_loss(output, teacher(data['lq'])),
                    'l_zoom_in': F.l1_loss(mapped_back, teacher(tiles)),
                    'l_zoom_out_pix': 5 * F.l1_loss(zoomed_out, data['lq']),
                    'l_zoom_out_kd': F.l1_loss(zoomed_out, padded_forward(teacher, small, 4))}
    for name, value in expected.items():
        assert model.log_dict[name] == pytest.approx(value.item(), rel=1e-5), name


def test_dukd_draws_come_from_the_model_stream(tmp_path):
    model = build_model(dukd_options(tmp_path, dukd_opt=dict(n_gt_sub=[2])))
    model.feed_data(batch())
    state = {k: v.clone() for k, v in model.step_rng.items() if v is not None}
    draws = recorded_draws(model)
    global_state = torch.get_rng_state()
    model.optimize_parameters(1)
    assert torch.equal(torch.get_rng_state(), global_state)  # data loading's stream untouched
    first = draws.copy()
    model.step_rng.update(state)
    draws.clear()
    model.optimize_parameters(2)
    assert draws['cells'] == first['cells']
    assert all(torch.equal(draws['masks'][k], mask) for k, mask in first['masks'].items())


def test_dukd_model_makes_two_optimizer_steps_and_one_ema_update(tmp_path):
    model = build_model(dukd_options(tmp_path))
    steps, emas = [], []
    step, ema = model.optimizer_g.step, model.model_ema
    model.optimizer_g.step = lambda: (steps.append(len(emas)), step())
    model.model_ema = lambda decay: (emas.append(len(steps)), ema(decay))
    model.feed_data(batch())
    model.optimize_parameters(1)
    assert steps == [0, 0] and emas == [2]  # EMA once, after both steps
    assert not model.net_t.training and all(p.grad is None for p in model.net_t.parameters())


@pytest.mark.parametrize('bad,expected_steps', [('l_kd', 1), ('l_zoom_in', 1), ('both', 0)])
def test_a_non_finite_dukd_step_is_skipped_on_its_own(tmp_path, bad, expected_steps):
    model = build_model(dukd_options(tmp_path))
    steps = []
    step = model.optimizer_g.step
    model.optimizer_g.step = lambda: (steps.append([p.grad.clone() for p in model.net_g.parameters()]), step())
    first, second = model.compute_losses, model.upcycling_terms

    def poisoned(losses, name):
        if bad in (name, 'both'):
            losses[name] = losses[name] * float('nan')
        return losses

    model.compute_losses = lambda it: poisoned(first(it), 'l_kd')
    model.upcycling_terms = lambda: poisoned(second(), 'l_zoom_in')
    ema = {k: v.clone() for k, v in model.net_g_ema.state_dict().items()}
    model.feed_data(batch())
    model.optimize_parameters(1)
    assert len(steps) == expected_steps and model.nonfinite.in_a_row == 1
    assert all(torch.isfinite(g).all() for grads in steps for g in grads)  # a skipped step 1 leaves no NaN grads
    assert all(torch.isfinite(v).all() for v in model.net_g.state_dict().values())
    ema_moved = any(not torch.equal(ema[k], v) for k, v in model.net_g_ema.state_dict().items())
    assert ema_moved == (expected_steps > 0)


def test_dukd_option_errors(tmp_path):
    with pytest.raises(OptionError, match='train.zoom_in_opt: .*DUKDModel'):
        build_model(kd_options(tmp_path, tiny_rcan(1), tiny_rcan(2), zoom_in_opt=dict(type='L1Loss')))
    with pytest.raises(OptionError, match='train.dukd_opt.n_gt_sub: .*1 to 4'):
        build_model(dukd_options(tmp_path, dukd_opt=dict(n_gt_sub=[5])))
    with pytest.raises(OptionError, match='train.dukd_opt.zoomout: unknown key'):
        build_model(dukd_options(tmp_path, dukd_opt=dict(zoomout=True)))
    with pytest.raises(OptionError, match='train.kd_opt: missing'):
        build_model(dukd_options(tmp_path, kd_opt=None))
    model = build_model(dukd_options(tmp_path))
    model.feed_data(batch(size=9))  # 9x9 zooms out to 5x5 (MATLAB rounds up), whose x2 output is 10x10
    with pytest.raises(OptionError, match='train.dukd_opt.zoom_out: the LQ patch'):
        model.optimize_parameters(1)
