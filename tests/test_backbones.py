"""The backbones: Table 1 sizes and full-size forward passes of every backbone, and the NAFNet and Restormer archs
(official parameter names, strict loading, layer behaviour, padding). The option files themselves are checked in
test_option_files.py, progressive patches in test_progressive.py."""
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F

import dckd_basicsr  # noqa: F401  (registers the archs)
from basicsr.archs import build_network
from basicsr.models.base_model import BaseModel
from basicsr.utils.registry import ARCH_REGISTRY

from helpers import TABLE1, count_built
from dckd_basicsr.archs.nafnet_arch import LayerNorm2d, LocalAvgPool2d, NAFNet, NAFNetLocal
from dckd_basicsr.archs.restormer_arch import LayerNorm, Restormer


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
