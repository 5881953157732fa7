"""Every row of Table 2 on the KD base: FAKD (feature hooks, affinity loss), DUKD (upcycling, invertible ops), the
kd_opt alias, and three training steps of each generated option file with tiny networks (in-process, CPU)."""
import copy
import itertools
import sys
from os import path as osp

import pytest
import torch
from basicsr.archs import build_network
from basicsr.models import build_model
from basicsr.utils.matlab_functions import imresize
from torch.nn import functional as F

from helpers import (REPO, batch, generator_module, in_process, kd_options, load_option_file, run,
                      save_random_network, tiny_network)

import dckd_basicsr  # noqa: F401
from dckd_basicsr.distill.invertible_ops import INVERTIBLE_OPS, apply_invertible_ops, undo_invertible_ops
from dckd_basicsr.errors import OptionError
from dckd_basicsr.distill.feature_taps import FeatureRecorder, default_feature_layers, stage_at
from dckd_basicsr.losses.fakd_loss import FAKDLoss, spatial_affinity
from dckd_basicsr.archs.padding import padded_forward
from dckd_basicsr.distill.upcycling import matlab_bicubic_downscale, random_grid_positions, zoom_in_tiles

# ---------------------------------------------------------------- FAKD loss and hooks
def test_fakd_loss_hand_computed():
    # student: positions (1, 0) and (0, 1) -> affinity I; teacher: both positions (1, 1, 0) -> all ones
    student = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).view(1, 2, 1, 2)
    teacher = torch.tensor([[2.0, 3.0], [2.0, 3.0], [0.0, 0.0]]).view(1, 3, 1, 2)
    assert torch.allclose(spatial_affinity(student)[0], torch.eye(2))
    assert torch.allclose(spatial_affinity(teacher)[0], torch.ones(2, 2), atol=1e-6)
    # second pair: equal directions -> 0; the pairs are summed (the authors' FeatureLoss), times loss_weight 2
    same = torch.tensor([[1.0, -2.0]]).view(1, 1, 1, 2)
    loss = FAKDLoss(loss_weight=2.0)([student, same], [teacher, 3 * same])
    assert loss.item() == pytest.approx(2.0 * (0.5 + 0.0))
    assert FAKDLoss().loss_weight == 10 / 255  # the authors' 10 on [0, 255] images, for [0, 1] images


def test_fakd_loss_matches_pairwise_cosine_reference():
    generator = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 4, 3, 5, generator=generator), torch.randn(2, 7, 3, 5, generator=generator)
    flat_s, flat_t = s.flatten(2), t.flatten(2)
    expected = torch.zeros(())
    for b in range(2):
        for i in range(15):
            for j in range(15):
                a_s = F.cosine_similarity(flat_s[b, :, i], flat_s[b, :, j], dim=0, eps=1e-12)
                a_t = F.cosine_similarity(flat_t[b, :, i], flat_t[b, :, j], dim=0, eps=1e-12)
                expected += (a_s - a_t).abs()
    assert FAKDLoss(loss_weight=1.0)([s], [t]).item() == pytest.approx(expected.item() / (2 * 15 * 15), rel=1e-5)
    with pytest.raises(ValueError, match='spatial size'):
        FAKDLoss()([s], [t[..., :4]])


def test_default_layers_are_the_authors_depths():
    # the FAKD authors' RCAN taps: groups 3 and 7 of 10 and the body's end (what the upsampler receives)
    assert default_feature_layers({'type': 'RCAN', 'num_group': 10}) == ['body.2', 'body.6', 'upsample:input']
    assert default_feature_layers({'type': 'RCAN'}) == ['body.2', 'body.6', 'upsample:input']
    # SwinIR: the RSTBs nearest to 0.3 and 0.7 of the depth, then the body's end before the upsampler
    swinir = {'type': 'SwinIR', 'upsampler': 'pixelshuffle'}
    end = 'conv_before_upsample:input'
    assert default_feature_layers(dict(swinir, depths=[6] * 4)) == ['layers.0', 'layers.2', end]
    assert default_feature_layers(dict(swinir, depths=[6] * 6)) == ['layers.1', 'layers.3', end]
    assert default_feature_layers(dict(swinir, upsampler='pixelshuffledirect'))[-1] == 'upsample:input'
    assert default_feature_layers(dict(swinir, upsampler=''))[-1] == 'conv_last:input'
    assert default_feature_layers({'type': 'MSRResNet'}) is None
    assert [stage_at(0.3, g) for g in (1, 2, 3, 4, 6, 10, 20)] == [0, 0, 0, 0, 1, 2, 5]
    assert [stage_at(0.7, g) for g in (1, 2, 3, 4, 6, 10, 20)] == [0, 0, 1, 2, 3, 6, 13]


def test_input_taps_and_repeated_taps():
    net = build_network(tiny_rcan(3))
    recorder = FeatureRecorder(net, ['body.0', 'body.0', 'upsample:input'], 'opt')
    assert len(recorder.handles) == 2  # a repeated tap is hooked once
    x = torch.rand(1, 3, 6, 5)
    net(x)
    maps = recorder.first()
    assert maps[0] is maps[1] and len(recorder.records['body.0']) == 1
    with recorder.paused():
        first = net.conv_first((x - net.mean) * net.img_range)
        expected = net.conv_after_body(net.body(first)) + first
    assert torch.allclose(maps[2], expected, atol=1e-5)
    with pytest.raises(OptionError, match='no module named upsampler:input'):
        FeatureRecorder(net, ['upsampler:input'], 'train.fakd_opt.student_layers')


def test_recorder_turns_swinir_tokens_into_maps_and_respects_eval_mode():
    net = build_network(dict(tiny_swinir('student', 2), drop_path_rate=0.0))  # deterministic in train mode
    recorder = FeatureRecorder(net, ['layers.1', 'conv_first'], 'opt', only_in_training=True)
    x = torch.rand(2, 3, 8, 12)
    net(x)
    maps = recorder.first()
    assert maps[0].shape == (2, 8, 8, 12) and maps[1].shape == (2, 8, 8, 12)
    # the RSTB output as a map equals what SwinIR's patch_unembed makes of it
    with recorder.paused():
        embedded = net.pos_drop(net.patch_embed(net.conv_first((x - net.mean) * net.img_range)))
        tokens = net.layers[1](net.layers[0](embedded, (8, 12)), (8, 12))
    assert torch.allclose(maps[0], net.patch_unembed(tokens, (8, 12)))
    net.eval()
    net(x)
    assert len(recorder.records['layers.1']) == 1  # eval-mode passes (validation) are not recorded
    with pytest.raises(OptionError, match='no module named layers.9'):
        FeatureRecorder(net, ['layers.9'], 'train.fakd_opt.student_layers')


# ---------------------------------------------------------------- tiny models
def tiny_swinir(role, rstbs=1):
    """The tiny SwinIR ``role`` (student: 8 channels, teacher: 16) with ``rstbs`` residual Swin blocks."""
    return tiny_network(f'swinir_{role}', depths=[1] * rstbs, num_heads=[2] * rstbs)


def tiny_rcan(groups):
    return tiny_network('rcan_student', num_group=groups)


def test_fakd_gradient_reaches_the_student_features_not_the_teacher(tmp_path):
    opt = kd_options(tmp_path, tiny_swinir('student', 4), tiny_swinir('teacher', 6),
                     logits_opt=dict(type='L1Loss'), lcr_opt=dict(type='L1Loss'),
                     fakd_opt=dict(type='FAKDLoss', loss_weight=1.0))
    model = build_model(opt)
    assert model.fakd_pairs.student.layers == ['layers.0', 'layers.2', 'conv_before_upsample:input']
    assert model.fakd_pairs.teacher.layers == ['layers.1', 'layers.3', 'conv_before_upsample:input']
    model.feed_data(batch())
    model.output = model.net_g(model.lq)
    model.run_teacher()  # batched with the LCR input: the FAKD maps are the first B samples
    student_maps = model.fakd_pairs.student.first()
    teacher_maps = [t[:2] for t in model.fakd_pairs.teacher.first()]
    assert all(t.grad_fn is None and not t.requires_grad for t in teacher_maps)
    loss = model.compute_losses(1)['l_fakd']
    grads = torch.autograd.grad(loss, student_maps)
    assert all(g.abs().sum() > 0 for g in grads)
    # the teacher maps are the teacher's on the clean LQ input
    teacher = build_network(opt['network_t'])
    teacher.load_state_dict(model.net_t.state_dict())
    reference = FeatureRecorder(teacher.eval(), ['layers.3'], 'x')
    with torch.no_grad():
        teacher(model.lq)
    assert torch.allclose(reference.first()[0], teacher_maps[1], atol=1e-6)
    assert loss.item() == pytest.approx(FAKDLoss(loss_weight=1.0)(student_maps, teacher_maps).item())
    assert not model.fakd_pairs.student.records['layers.0'] and not model.fakd_pairs.teacher.records['layers.1']  # cleared


@pytest.mark.parametrize('fakd,message', [
    (dict(student_layers=['conv_first'], teacher_layers=['upsample']), 'student layer conv_first .* teacher layer '
                                                                        'upsample'),
    (dict(student_layers=['layers.0'], teacher_layers=['layers.7']), 'teacher_layers: no module named layers.7'),
    (dict(student_layers=['layers.0'], teacher_layers=['layers.0', 'layers.1']), '1 student_layers but 2'),
])
def test_fakd_option_errors(tmp_path, fakd, message):
    opt = kd_options(tmp_path, tiny_swinir('student'), tiny_swinir('teacher'), fakd_opt=dict(type='FAKDLoss', **fakd))
    with pytest.raises(OptionError, match=message):
        build_model(opt)


def test_fakd_without_default_layers_is_an_error(tmp_path):
    net = tiny_network('msrresnet')
    with pytest.raises(OptionError, match='train.fakd_opt.student_layers: missing'):
        build_model(kd_options(tmp_path, net, dict(net, num_feat=16), fakd_opt=dict(type='FAKDLoss')))


def test_kd_opt_is_an_alias_of_logits_opt(tmp_path):
    model = build_model(kd_options(tmp_path, tiny_rcan(1), tiny_rcan(2), kd_opt=dict(type='L1Loss', loss_weight=0.5)))
    assert model.loss_names == ['l_pix', 'l_kd'] and model.cri_kd.loss_weight == 0.5
    both = kd_options(tmp_path, tiny_rcan(1), tiny_rcan(2), kd_opt=dict(type='L1Loss'), logits_opt=dict(type='L1Loss'))
    with pytest.raises(OptionError, match='kd_opt and train.logits_opt'):
        build_model(both)


# ---------------------------------------------------------------- DUKD
def test_every_combination_of_invertible_ops_is_undone():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4) / 128  # dyadic: 1 - (1 - x) is exact
    for chosen in itertools.product([False, True], repeat=len(INVERTIBLE_OPS)):
        masks = {name: torch.tensor(c).view(1, 1, 1, 1) for name, c in zip(INVERTIBLE_OPS, chosen)}
        transformed = apply_invertible_ops(x, masks)
        assert torch.equal(undo_invertible_ops(transformed, masks), x), chosen
        assert torch.equal(transformed, x) == (not any(chosen)), chosen  # every op changes this image


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


def test_padded_forward_crops_back():
    net = build_network(tiny_swinir('student'))
    x = torch.rand(1, 3, 6, 6)
    out = padded_forward(net, x, 4)
    assert out.shape == (1, 3, 12, 12)
    assert torch.equal(out, net(F.pad(x, (0, 2, 0, 2), mode='reflect'))[..., :12, :12])


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


# ---------------------------------------------------------------- every row, three steps
EXPECTED_TERMS = {
    'Scratch': ['l_pix'], 'Logits': ['l_pix', 'l_kd'], 'FAKD': ['l_pix', 'l_kd', 'l_fakd'],
    'DUKD': ['l_pix', 'l_kd', 'l_zoom_in'],  # the x2 files: no zoom-out
    'DCKD': ['l_pix', 'l_kd', 'l_dcl', 'l_dmm'],
    'DCKDstar': ['l_pix', 'l_kd', 'l_lcr', 'l_dcl', 'l_dmm'],  # the DCKD authors' lcr_opt, no zoom terms
}


@pytest.fixture(scope='module')
def shipped_rows():
    gen = generator_module()
    return {(b, m): gen.method_options(b, 2, m) for b in ('SwinIR', 'RCAN') for m in gen.METHODS}


@pytest.mark.parametrize('backbone', ['SwinIR', 'RCAN'])
@pytest.mark.parametrize('method', list(EXPECTED_TERMS))
def test_three_steps_of_every_row_train_only_the_student(tmp_path, shipped_rows, backbone, method):
    """The shipped option file of the row (x2) with tiny networks and checkpoints; everything else as shipped."""
    opt = copy.deepcopy(shipped_rows[(backbone, method)])
    student, teacher = ((tiny_swinir('student', 2), tiny_swinir('teacher', 3)) if backbone == 'SwinIR' else
                        (tiny_rcan(2), tiny_rcan(3)))
    in_process(opt, tmp_path)
    opt['network_g'] = student
    opt['train']['ema_decay'] = 0.5
    if 'network_t' in opt:
        opt['network_t'] = teacher
        opt['path']['pretrain_network_t'] = save_random_network(teacher, tmp_path / 'teacher.pth', seed=1)
    if 'network_vqgan' in opt:
        opt['network_vqgan'] = tiny_network('vqgan')
        opt['path']['pretrain_network_vqgan'] = save_random_network(opt['network_vqgan'], tmp_path / 'vq.ckpt', seed=2,
                                                                    key='state_dict')
        opt['train'].update(num_neg=2, step=[2])
        opt['train']['cl_opt']['weights'] = [0.25, 0.5, 1.0]  # the tiny encoder's three levels
    model = build_model(opt)
    start = {k: v.clone() for k, v in model.net_g.state_dict().items()}
    teacher_start = {k: v.clone() for k, v in model.net_t.state_dict().items()} if hasattr(model, 'net_t') else {}
    for it in range(1, 4):
        model.feed_data(batch(seed=it))
        model.optimize_parameters(it)
        assert list(model.log_dict) == EXPECTED_TERMS[method], it
        assert all(torch.isfinite(torch.tensor(v)) and v > 0 for v in model.log_dict.values())
    assert any(not torch.equal(start[k], v) for k, v in model.net_g.state_dict().items())
    optimized = {id(p) for group in model.optimizer_g.param_groups for p in group['params']}
    assert optimized == {id(p) for p in model.net_g.parameters()}
    if teacher_start:
        assert not model.net_t.training
        assert all(p.grad is None and not p.requires_grad for p in model.net_t.parameters())
        assert all(torch.equal(teacher_start[k], v) for k, v in model.net_t.state_dict().items())


@pytest.mark.slow
def test_shipped_fakd_file_trains_and_validates_through_the_entry_point(tmp_path):
    """train_SwinIR_SRx2_FAKD.yml through ``python -m dckd_basicsr.train`` with tiny networks and EMA off, so that
    validation runs the hooked student itself (in eval mode, not recorded) between training steps."""
    import cv2
    import numpy as np
    rng = np.random.default_rng(0)
    for folder in ('hr', 'lr', 'val_hr', 'val_lr'):
        (tmp_path / folder).mkdir()
    for i in range(2):
        hr = cv2.GaussianBlur(rng.integers(0, 256, (40, 36, 3), dtype=np.uint8), (5, 5), 1.5)
        lr = cv2.resize(hr, (18, 20), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(tmp_path / 'hr' / f'{i}.png'), hr)
        cv2.imwrite(str(tmp_path / 'lr' / f'{i}.png'), lr)
        cv2.imwrite(str(tmp_path / 'val_hr' / f'{i}.png'), hr)
        cv2.imwrite(str(tmp_path / 'val_lr' / f'{i}x2.png'), lr)  # 18x20: no multiple of the window
    student, teacher = tiny_swinir('student', 2), tiny_swinir('teacher', 3)
    save_random_network(teacher, tmp_path / 'teacher.pth', seed=1)
    force = [f'datasets:train:dataroot_gt={tmp_path / "hr"}', f'datasets:train:dataroot_lq={tmp_path / "lr"}',
             'datasets:train:io_backend:type=disk', 'datasets:train:gt_size=16', 'datasets:train:batch_size_per_gpu=2',
             'datasets:train:num_worker_per_gpu=0', 'num_gpu=0', 'train:total_iter=3', 'train:ema_decay=0',
             'val:val_freq=2', 'logger:print_freq=1', 'logger:save_checkpoint_freq=3', 'logger:use_tb_logger=false',
             f'path:pretrain_network_t={tmp_path / "teacher.pth"}', f'path:experiments_root={tmp_path / "runs"}']
    for key, net in (('network_g', student), ('network_t', teacher)):
        force += [f'{key}:{k}={v}'.replace(' ', '') for k, v in net.items() if k in ('embed_dim', 'depths', 'num_heads',
                                                                                     'window_size', 'img_size')]
    option_file = osp.join(REPO, 'options', 'train', 'SwinIR', 'train_SwinIR_SRx2_FAKD.yml')
    val_sets = [key for key in load_option_file(option_file)['datasets'] if key.startswith('val')]
    for key in val_sets:  # every validation set of the file reads the tiny folder
        force += [f'datasets:{key}:dataroot_gt={tmp_path / "val_hr"}',
                  f'datasets:{key}:dataroot_lq={tmp_path / "val_lr"}']
    run([sys.executable, '-m', 'dckd_basicsr.train', '-opt', option_file, '--force_yml'] + force, cwd=tmp_path)
    run_dir = tmp_path / 'runs' / 'SwinIR_SRx2_FAKD'
    log = ''.join(p.read_text() for p in run_dir.glob('train_*.log'))
    assert log.count('Validation Set5') == 2, log[-2000:]  # at iteration 2 and after the last one
    step3 = next(line for line in log.splitlines() if 'iter:       3,' in line)  # the step after a validation
    assert 'l_fakd: ' in step3 and 'l_kd: ' in step3 and 'l_pix: ' in step3
    psnr = [float(line.split('psnr: ')[1].split()[0]) for line in log.splitlines() if '# psnr: ' in line]
    assert len(psnr) == 2 * len(val_sets) and all(5 < value < 60 for value in psnr)
    assert (run_dir / 'models' / 'net_g_latest.pth').is_file()
