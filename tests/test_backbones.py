"""NAFNet and Restormer backbones, Table 1 sizes, progressive patches, and a deblurring option file trained (the
option files themselves are checked in test_option_files.py)."""
import glob
import random
import re
from collections import OrderedDict
from os import path as osp

import pytest
import torch
import torch.nn.functional as F

import dckd_basicsr  # noqa: F401  (registers the archs)
import basicsr.models
from basicsr.archs import build_network
from basicsr.models.base_model import BaseModel

from helpers import TABLE1, count_built
from basicsr.utils.registry import ARCH_REGISTRY, MODEL_REGISTRY
from dckd_basicsr.archs.nafnet_arch import LayerNorm2d, LocalAvgPool2d, NAFNet, NAFNetLocal
from dckd_basicsr.archs.restormer_arch import LayerNorm, Restormer
from dckd_basicsr.errors import OptionError
from dckd_basicsr.training.progressive import ProgressivePatches, ProgressivePatchSchedule

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))

def n_params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def randomize_(net: torch.nn.Module, seed: int = 0, std: float = 0.1) -> torch.nn.Module:
    """Random values for every parameter (NAFNet's beta/gamma start at zero, which makes every block an identity)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * std)
    return net


@pytest.mark.parametrize('key', list(TABLE1), ids=lambda k: '-'.join(k))
def test_table1_parameter_counts(key):
    opt, table_m, exact = TABLE1[key]
    count = count_built(opt)
    assert count == exact
    assert abs(count / (table_m * 1e6) - 1) < 0.03


@pytest.mark.parametrize('key,size', [
    (('NAFNet', 'teacher'), (24, 40)), (('NAFNet', 'student'), (23, 37)),
    (('Restormer', 'teacher'), (20, 28)), (('Restormer', 'student'), (19, 30)),
    (('SwinIR', 'teacher'), (8, 8)), (('SwinIR', 'student'), (8, 16)),
    (('RCAN', 'teacher'), (8, 8)), (('RCAN', 'student'), (8, 12)),
], ids=lambda v: '-'.join(v) if isinstance(v[0], str) else None)
def test_full_size_forward(key, size):
    torch.manual_seed(0)
    net = build_network(dict(TABLE1[key][0])).eval()
    scale = TABLE1[key][0].get('upscale', 1)
    with torch.no_grad():
        out = net(torch.rand(1, 3, *size))
    assert out.shape == (1, 3, size[0] * scale, size[1] * scale)
    assert torch.isfinite(out).all()


# ---------------------------------------------------------------- official parameter names
NAF_BLOCK_KEYS = ['norm1.weight', 'norm1.bias', 'conv1.weight', 'conv1.bias', 'conv2.weight', 'conv2.bias',
                  'sca.1.weight', 'sca.1.bias', 'conv3.weight', 'conv3.bias', 'norm2.weight', 'norm2.bias',
                  'conv4.weight', 'conv4.bias', 'conv5.weight', 'conv5.bias', 'beta', 'gamma']
RESTORMER_BLOCK_KEYS = ['norm1.body.weight', 'norm1.body.bias', 'attn.temperature', 'attn.qkv.weight',
                        'attn.qkv_dwconv.weight', 'attn.project_out.weight', 'norm2.body.weight', 'norm2.body.bias',
                        'ffn.project_in.weight', 'ffn.dwconv.weight', 'ffn.project_out.weight']


def official_nafnet_keys(enc, middle, dec):
    """Key list of the official NAFNet release: intro, encoders.L.B.*, downs.L, middle_blks.B.*, ups.L.0,
    decoders.L.B.*, ending."""
    keys = ['intro.weight', 'intro.bias', 'ending.weight', 'ending.bias']
    for level, num in enumerate(enc):
        keys += [f'encoders.{level}.{b}.{k}' for b in range(num) for k in NAF_BLOCK_KEYS]
        keys += [f'downs.{level}.weight', f'downs.{level}.bias']
    keys += [f'middle_blks.{b}.{k}' for b in range(middle) for k in NAF_BLOCK_KEYS]
    for level, num in enumerate(dec):
        keys += [f'ups.{level}.0.weight']
        keys += [f'decoders.{level}.{b}.{k}' for b in range(num) for k in NAF_BLOCK_KEYS]
    return keys


def official_restormer_keys(num_blocks, num_refinement):
    """Key list of the official Restormer release (no biases, WithBias LayerNorm, no dual-pixel skip)."""
    keys = ['patch_embed.proj.weight', 'output.weight', 'reduce_chan_level3.weight', 'reduce_chan_level2.weight']
    keys += [f'{name}.body.0.weight' for name in ('down1_2', 'down2_3', 'down3_4', 'up4_3', 'up3_2', 'up2_1')]
    groups = {'encoder_level1': num_blocks[0], 'encoder_level2': num_blocks[1], 'encoder_level3': num_blocks[2],
              'latent': num_blocks[3], 'decoder_level3': num_blocks[2], 'decoder_level2': num_blocks[1],
              'decoder_level1': num_blocks[0], 'refinement': num_refinement}
    for name, num in groups.items():
        keys += [f'{name}.{b}.{k}' for b in range(num) for k in RESTORMER_BLOCK_KEYS]
    return keys


def load_like_basicsr(net, path):
    """``BaseModel.load_network`` with ``strict=True`` and ``param_key='params'``, as for ``pretrain_network_g``."""
    model = BaseModel.__new__(BaseModel)  # only the loading methods are used; no options needed
    model.load_network(net, path, strict=True, param_key='params')


@pytest.mark.parametrize('key', [('NAFNet', 'teacher'), ('NAFNet', 'student'), ('Restormer', 'teacher'),
                                 ('Restormer', 'student')], ids=lambda k: '-'.join(k))
def test_official_key_names_and_strict_load(key, tmp_path):
    opt = dict(TABLE1[key][0])
    net = build_network(dict(opt))
    state = net.state_dict()
    if key[0] == 'NAFNet':
        expected = official_nafnet_keys(opt['enc_blk_nums'], opt['middle_blk_num'], opt['dec_blk_nums'])
    else:
        expected = official_restormer_keys(opt['num_blocks'], opt['num_refinement_blocks'])
    assert len(expected) == len(set(expected))
    assert sorted(state) == sorted(expected)  # also: no buffers besides the official parameters
    if key[1] == 'teacher':  # same naming code as the students, whose checkpoints go through a file below
        return

    randomize_(net, seed=1)
    state = net.state_dict()
    path = str(tmp_path / 'net.pth')
    torch.save({'params': OrderedDict((k, state[k]) for k in expected)}, path)
    fresh = build_network(dict(opt))
    load_like_basicsr(fresh, path)
    loaded = fresh.state_dict()
    for k in expected:
        assert torch.equal(loaded[k], state[k]), k
    if key[0] == 'NAFNet':  # the TLC variant takes the same checkpoint
        local = build_network(dict(opt, type='NAFNetLocal'))
        load_like_basicsr(local, path)
        assert all(torch.equal(local.state_dict()[k], state[k]) for k in expected)


def test_official_shapes():
    nafnet = NAFNet(3, 16, 1, [1, 2], [1, 1]).state_dict()
    assert nafnet['encoders.1.1.conv1.weight'].shape == (64, 32, 1, 1)
    assert nafnet['encoders.1.1.conv2.weight'].shape == (64, 1, 3, 3)
    assert nafnet['encoders.1.1.sca.1.weight'].shape == (32, 32, 1, 1)
    assert nafnet['encoders.1.1.beta'].shape == (1, 32, 1, 1)
    assert nafnet['downs.0.weight'].shape == (32, 16, 2, 2)
    assert nafnet['middle_blks.0.conv5.weight'].shape == (64, 64, 1, 1)
    assert nafnet['ups.0.0.weight'].shape == (128, 64, 1, 1)
    assert nafnet['decoders.1.0.norm1.weight'].shape == (16, )
    restormer = Restormer(dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1).state_dict()
    assert restormer['encoder_level2.0.attn.temperature'].shape == (2, 1, 1)
    assert restormer['latent.0.attn.qkv.weight'].shape == (192, 64, 1, 1)
    assert restormer['latent.0.ffn.project_in.weight'].shape == (2 * int(64 * 2.66), 64, 1, 1)
    assert restormer['down1_2.body.0.weight'].shape == (4, 8, 3, 3)
    assert restormer['up4_3.body.0.weight'].shape == (128, 64, 3, 3)
    assert restormer['reduce_chan_level3.weight'].shape == (32, 64, 1, 1)
    assert restormer['decoder_level1.0.norm1.body.weight'].shape == (16, )
    assert restormer['output.weight'].shape == (3, 16, 3, 3)
    dual = Restormer(inp_channels=6, dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1,
                     LayerNorm_type='BiasFree', dual_pixel_task=True).state_dict()
    assert dual['skip_conv.weight'].shape == (16, 8, 1, 1)
    assert 'encoder_level1.0.norm1.body.bias' not in dual


def test_arch_names_registered_once():
    for name in ('NAFNet', 'NAFNetLocal', 'Restormer'):
        assert ARCH_REGISTRY.get(name).__module__.startswith('dckd_basicsr.archs.')


# ---------------------------------------------------------------- layer behaviour
def test_layer_norms_match_reference():
    x = torch.randn(2, 6, 5, 7)
    ln = LayerNorm2d(6)
    with torch.no_grad():
        ln.weight.normal_()
        ln.bias.normal_()
    ref = F.layer_norm(x.permute(0, 2, 3, 1), (6, ), ln.weight, ln.bias, eps=1e-6).permute(0, 3, 1, 2)
    assert torch.allclose(ln(x), ref, atol=1e-5)

    with_bias = LayerNorm(6, 'WithBias')
    ref = F.layer_norm(x.permute(0, 2, 3, 1), (6, ), eps=1e-5).permute(0, 3, 1, 2)
    assert torch.allclose(with_bias(x), ref, atol=1e-5)
    # BiasFree divides by the standard deviation without subtracting the mean: channels (2, 0, 2, 0, 2, 0) have mean 1
    # and variance 1, so they come out unchanged (but for the 1e-5), where WithBias gives (1, -1, 1, -1, 1, -1)
    bias_free = LayerNorm(6, 'BiasFree')
    pixel = torch.tensor([2., 0., 2., 0., 2., 0.]).view(1, 6, 1, 1)
    assert torch.allclose(bias_free(pixel), pixel / (1 + 1e-5)**0.5, atol=1e-6)
    assert torch.allclose(with_bias(pixel), pixel - 1, atol=1e-4)
    with pytest.raises(ValueError, match='LayerNorm_type'):
        LayerNorm(6, 'Other')


def test_padding_matches_explicit_pad_and_crop():
    torch.manual_seed(0)
    x = torch.rand(1, 3, 19, 30)
    nafnet = randomize_(NAFNet(3, 4, 1, [1, 1], [1, 1])).eval()  # pads to a multiple of 4 with zeros
    restormer = randomize_(Restormer(dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1)).eval()  # reflect, 8
    with torch.no_grad():
        assert torch.allclose(nafnet(x), nafnet(F.pad(x, (0, 2, 0, 1)))[..., :19, :30], atol=1e-5)
        restormer_padded = restormer(F.pad(x, (0, 2, 0, 5), mode='reflect'))[..., :19, :30]
        assert torch.allclose(restormer(x), restormer_padded, atol=1e-5)
        # padding changes the result at the border, so the two modes are really in use
        assert not torch.allclose(nafnet(x), nafnet(F.pad(x, (0, 2, 0, 1), mode='reflect'))[..., :19, :30])


def test_local_avg_pool_against_brute_force():
    x = torch.randn(2, 3, 7, 9)
    out = LocalAvgPool2d((3, 4))(x)
    valid = torch.zeros(2, 3, 5, 6)
    for i in range(5):
        for j in range(6):
            valid[..., i, j] = x[..., i:i + 3, j:j + 4].mean(dim=(-2, -1))
    # outputs at the border repeat the nearest full window: top 1 / bottom 1 rows, left 1 / right 2 columns
    rows = [min(max(r - 1, 0), 4) for r in range(7)]
    cols = [min(max(c - 1, 0), 5) for c in range(9)]
    expected = valid[..., rows, :][..., :, cols]
    assert out.shape == x.shape
    assert torch.allclose(out, expected, atol=1e-5)
    # a window at least as large as the map is the global average
    assert torch.allclose(LocalAvgPool2d((7, 9))(x), x.mean(dim=(-2, -1), keepdim=True), atol=1e-6)


def test_nafnet_local_windows_and_equivalence():
    opt = dict(img_channel=3, width=4, middle_blk_num=1, enc_blk_nums=[1, 1], dec_blk_nums=[1, 1])
    net = randomize_(NAFNet(**opt), std=0.5).eval()  # large enough weights for the pooling to matter
    local = NAFNetLocal(**opt, train_size=(1, 3, 16, 16)).eval()
    local.load_state_dict(net.state_dict())
    kernels = [block.sca[0].kernel_size for _, blocks in local._blocks_by_factor() for block in blocks]
    assert kernels == [(24, 24), (12, 12), (6, 6), (12, 12), (24, 24)]  # 1.5 x the 16/8/4 training maps
    with torch.no_grad():
        small = torch.rand(1, 3, 16, 20)  # every window covers its map: global pooling, same as NAFNet
        assert torch.equal(local(small), net(small))
        large = torch.rand(1, 3, 40, 48)
        assert (local(large) - net(large)).abs().max() > 1e-2
    default = NAFNetLocal(**opt)
    assert default.encoders[0][0].sca[0].kernel_size == (384, 384)  # train 256, base 1.5 x 256


# ---------------------------------------------------------------- progressive patches
SCHEDULE = dict(iters=[92000, 64000, 48000, 36000, 36000, 24000], gt_sizes=[128, 160, 192, 256, 320, 384],
                mini_batch_sizes=[8, 5, 4, 2, 1, 1], gt_size=384, batch_size=8)


def test_progressive_stages():
    schedule = ProgressivePatchSchedule(**SCHEDULE)
    expected = {1: 0, 92000: 0, 92001: 1, 156000: 1, 156001: 2, 204001: 3, 240001: 4, 276000: 4, 276001: 5,
                300000: 5, 450000: 5}
    assert {i: schedule.stage(i) for i in expected} == expected


def test_progressive_crop_and_subsample():
    schedule = ProgressivePatchSchedule(**dict(SCHEDULE, gt_size=64, gt_sizes=[16, 32, 32, 48, 64, 64]), scale=2)
    gt = torch.arange(8 * 3 * 64 * 64, dtype=torch.float32).reshape(8, 3, 64, 64)
    lq = gt[..., ::2, ::2].clone()  # LQ pixel (i, j) <-> GT pixel (2i, 2j)
    rng = random.Random(3)
    lq_c, gt_c = schedule(lq, gt, 100000, rng=rng)  # stage 1: 5 images, GT 32 / LQ 16
    assert gt_c.shape == (5, 3, 32, 32) and lq_c.shape == (5, 3, 16, 16)
    assert torch.equal(gt_c[..., ::2, ::2], lq_c)  # still aligned
    check = random.Random(3)
    indices = sorted(check.sample(range(8), k=5))
    top, left = int(16 * check.random()), int(16 * check.random())
    assert torch.equal(gt_c, gt[indices][..., 2 * top:2 * top + 32, 2 * left:2 * left + 32])
    lq_c, gt_c = schedule(lq, gt, 300000)  # last stage: one whole 64 px image
    assert gt_c.shape == (1, 3, 64, 64) and torch.equal(gt_c[..., ::2, ::2], lq_c)
    assert any(torch.equal(gt_c[0], image) for image in gt)
    lq_c, gt_c = schedule(lq[:1], gt[:1], 1)  # a short last batch keeps its images; stage 0 crops 16 px
    assert gt_c.shape == (1, 3, 16, 16) and lq_c.shape == (1, 3, 8, 8)


def test_progressive_option_errors():
    assert ProgressivePatchSchedule.from_options({'datasets': {'train': {'gt_size': 64}}}) is None
    train = dict(gt_size=64, batch_size_per_gpu=4, iters=[10, 10], gt_sizes=[32, 64], mini_batch_sizes=[4, 2])
    assert ProgressivePatchSchedule.from_options({'scale': 1, 'datasets': {'train': train}}).ends == [10, 20]
    for bad, message in [(dict(gt_sizes=[32, 96]), 'gt_sizes'), (dict(mini_batch_sizes=[8, 2]), 'mini_batch_sizes'),
                         (dict(iters=[10]), 'same length'), (dict(gt_sizes=None), 'missing datasets.train.gt_sizes')]:
        with pytest.raises(OptionError, match=message):
            ProgressivePatchSchedule.from_options({'scale': 1, 'datasets': {'train': dict(train, **bad)}})


def test_progressive_patches_on_srmodel():
    opt = {
        'is_train': True, 'num_gpu': 0, 'dist': False, 'scale': 1, 'model_type': 'SRModel',
        'network_g': dict(type='NAFNet', width=4, middle_blk_num=1, enc_blk_nums=[1], dec_blk_nums=[1]),
        'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None},
        'datasets': {'train': dict(gt_size=32, batch_size_per_gpu=4, iters=[1, 1], gt_sizes=[16, 32],
                                   mini_batch_sizes=[2, 4])},
        'train': {'ema_decay': 0, 'optim_g': {'type': 'Adam', 'lr': 1e-3}, 'total_iter': 2,
                  'scheduler': {'type': 'MultiStepLR', 'milestones': [10], 'gamma': 0.5},
                  'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0}},
    }
    model = basicsr.models.build_model(opt)  # the plugin's build_model adds the mixin when the options ask for it
    assert isinstance(model, ProgressivePatches) and type(model).__name__ == 'SRModel'
    data = {'lq': torch.rand(4, 3, 32, 32), 'gt': torch.rand(4, 3, 32, 32)}
    model.feed_data(data)
    model.optimize_parameters(1)
    assert model.lq.shape == (2, 3, 16, 16) and model.output.shape == (2, 3, 16, 16)
    model.feed_data(data)
    model.optimize_parameters(2)
    assert model.output.shape == (4, 3, 32, 32)
    model.feed_data({'lq': torch.rand(1, 3, 40, 24)})  # validation path: feed_data + test, untouched
    model.test()
    assert model.output.shape == (1, 3, 40, 24)
    plain = basicsr.models.build_model(dict(opt, datasets={'train': {'gt_size': 32}}))
    assert type(plain) is MODEL_REGISTRY.get('SRModel')


# ---------------------------------------------------------------- a shipped option file, trained
@pytest.mark.slow
def test_restormer_scratch_option_file_trains_with_progressive_patches(tmp_path):
    """The shipped option file, full-size student, through ``python -m dckd_basicsr.train``; only sizes and counts
    are overridden. Checks the progressive stages reach the model and odd-sized frames validate."""
    import subprocess
    import sys

    import cv2
    import numpy as np
    rng = np.random.default_rng(0)
    for split, count, (h, w) in (('train_crops', 2, (48, 48)), ('test', 1, (36, 44))):
        for sub in ('input', 'target'):
            folder = tmp_path / 'datasets' / 'GoPro' / split / sub
            folder.mkdir(parents=True)
            for i in range(count):
                cv2.imwrite(str(folder / f'GOPR0001_{i:06d}.png'), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    force = ['num_gpu=0', 'datasets:train:num_worker_per_gpu=0', 'datasets:train:batch_size_per_gpu=2',
             'datasets:train:gt_size=32', 'datasets:train:gt_sizes=[16,32,32,32,32,32]',
             'datasets:train:iters=[1,1,1,1,1,1]', 'datasets:train:mini_batch_sizes=[2,1,1,1,1,1]',
             'train:total_iter=2', 'val:val_freq=2', 'logger:print_freq=1', 'logger:use_tb_logger=false']
    option_file = osp.join(REPO, 'options', 'train', 'Restormer', 'train_Restormer_Deblur_Scratch.yml')
    proc = subprocess.run([sys.executable, '-m', 'dckd_basicsr.train', '-opt', option_file, '--force_yml'] + force,
                          cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**__import__('os').environ, 'CUDA_VISIBLE_DEVICES': '', 'OMP_NUM_THREADS': '2'})
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = ''.join(open(p).read() for p in glob.glob(str(tmp_path / 'experiments' / '*' / 'train_*.log')))
    assert 'stage 1/6 from iter 1: patch 16, batch 2' in log and 'stage 2/6 from iter 2: patch 32, batch 1' in log
    assert re.search(r'Validation GoPro\n\s+# psnr: [\d.]+', log)
