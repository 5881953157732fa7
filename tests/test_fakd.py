"""FAKD (Table 2's FAKD row on the KD base): the spatial-affinity loss (dckd_basicsr/losses/fakd_loss.py), the feature
taps that feed it (dckd_basicsr/distill/feature_taps.py), the model's FAKD term and option errors, and the shipped FAKD
option file through the training entry point. The term is pinned against the authors' code by test_golden_fakd."""
import sys
from os import path as osp

import pytest
import torch
from basicsr.archs import build_network
from basicsr.models import build_model
from torch.nn import functional as F

from helpers import REPO, batch, kd_options, run, save_random_network, tiny_network, tiny_rcan, tiny_swinir

import dckd_basicsr  # noqa: F401
from dckd_basicsr.distill.feature_taps import FeatureRecorder, default_feature_layers, stage_at
from dckd_basicsr.errors import OptionError
from dckd_basicsr.losses.fakd_loss import FAKDLoss, spatial_affinity
from dckd_basicsr.options import read_option_file


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
    # the records are cleared after the step
    assert not model.fakd_pairs.student.records['layers.0'] and not model.fakd_pairs.teacher.records['layers.1']


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
    val_sets = [key for key in read_option_file(option_file)['datasets'] if key.startswith('val')]
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
