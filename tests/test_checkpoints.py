"""Teacher-loading hooks (dckd_basicsr/checkpoints/, dckd_basicsr/commands/convert.py).

Each test writes a checkpoint in a real published format into a tmp dir, made by renaming the keys of a randomly
initialised BasicSR network into the official names, loads it through the hooks and compares every tensor with the
source network.
"""
import argparse
import re
import sys
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from basicsr.archs.edsr_arch import EDSR
from basicsr.archs.rcan_arch import RCAN
from basicsr.archs.swinir_arch import SwinIR
from helpers import arch_args, run, tiny_network, write_options

from dckd_basicsr.commands import convert
from dckd_basicsr.archs.vqgan_arch import VQGANEncoder
from dckd_basicsr.checkpoints import (CHECKPOINT_REGISTRY, PickledObject, detection_order, format_report,
                                      load_checkpoint_file, load_pretrained, register_converter)
from dckd_basicsr.errors import OptionError

DIV2K_MEAN = (0.4488, 0.4371, 0.4040)


def randomize(net: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Fill every parameter with random values, so no tensor equals another network's by chance (zeros, ones)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in net.parameters():
            param.copy_(torch.rand(param.shape, generator=generator) * 0.2 - 0.1)
    return net.eval()


def assert_same_weights(loaded: torch.nn.Module, source: torch.nn.Module) -> None:
    loaded_sd, source_sd = loaded.state_dict(), source.state_dict()
    assert loaded_sd.keys() == source_sd.keys()
    for key, value in source_sd.items():
        assert torch.equal(loaded_sd[key], value), key


def mean_shift(mean, rgb_range=255., std=(1., 1., 1.), sign=-1.):
    """EDSR-PyTorch's MeanShift weights: weight I/std, bias sign * rgb_range * mean / std."""
    std = torch.tensor(std)
    return {
        'weight': torch.eye(3).view(3, 3, 1, 1) / std.view(3, 1, 1, 1),
        'bias': sign * rgb_range * torch.tensor(mean) / std
    }


def add_mean_shifts(official: dict, mean, rgb_range=255., std=(1., 1., 1.)) -> dict:
    for name, sign in (('sub_mean', -1.), ('add_mean', 1.)):
        for param, value in mean_shift(mean, rgb_range, std, sign).items():
            official[f'{name}.{param}'] = value
    return official


def edsr_tail_names(key: str, last_body: int):
    """BasicSR's head/tail names -> EDSR-PyTorch's (shared by RCAN and EDSR), or None for body keys."""
    parts = key.split('.')
    if parts[0] == 'conv_first':
        return f'head.0.{parts[-1]}'
    if parts[0] == 'conv_after_body':
        return f'body.{last_body}.{parts[-1]}'
    if parts[0] == 'upsample':
        return f'tail.0.{parts[1]}.{parts[2]}'
    if parts[0] == 'conv_last':
        return f'tail.1.{parts[-1]}'
    return None


def to_official_rcan(net: RCAN, mean=DIV2K_MEAN, std=(1., 1., 1.)) -> dict:
    """Rename a BasicSR RCAN's weights into the official RCAN (EDSR-PyTorch) release's names."""
    num_group, num_block = len(net.body), len(net.body[0].residual_group)
    official = OrderedDict()
    for key, value in net.state_dict().items():
        name = edsr_tail_names(key, num_group)
        if name is None:
            parts = key.split('.')  # body.G.residual_group.B.rcab.I[.attention.J].param | body.G.conv.param
            group, param = parts[1], parts[-1]
            if parts[2] == 'conv':
                name = f'body.{group}.body.{num_block}.{param}'
            elif parts[5] in ('0', '2'):
                name = f'body.{group}.body.{parts[3]}.body.{parts[5]}.{param}'
            else:
                name = f'body.{group}.body.{parts[3]}.body.3.conv_du.{"0" if parts[7] == "1" else "2"}.{param}'
        official[name] = value.clone()
    return add_mean_shifts(official, mean, std=std)


def to_official_edsr(net: EDSR, mean=DIV2K_MEAN) -> dict:
    official = OrderedDict()
    for key, value in net.state_dict().items():
        name = edsr_tail_names(key, len(net.body))
        if name is None:
            parts = key.split('.')  # body.I.conv{1,2}.param
            name = f'body.{parts[1]}.body.{"0" if parts[2] == "conv1" else "2"}.{parts[-1]}'
        official[name] = value.clone()
    return add_mean_shifts(official, mean)


def tiny_rcan(seed: int, **kwargs) -> RCAN:
    return randomize(RCAN(**arch_args(tiny_network('rcan_teacher', **kwargs))), seed)


def tiny_swinir(seed: int, **kwargs) -> SwinIR:
    """Two RSTBs of two Swin blocks each (the second block shifted: an ``attn_mask``), 8x8 patches."""
    opt = tiny_network('swinir_student', img_size=8, patch_size=1, embed_dim=12, depths=[2, 2], num_heads=[2, 2])
    opt.update(kwargs)
    return randomize(SwinIR(**arch_args(opt)), seed)


# ---------------------------------------------------------------------------------------------------------------------
# BasicSR files and raw state dicts
# ---------------------------------------------------------------------------------------------------------------------


def test_basicsr_params_ema_fallback_and_module_prefix(tmp_path):
    source = tiny_rcan(0)
    ddp_names = {f'module.{k}': v for k, v in source.state_dict().items()}
    torch.save({'params': ddp_names}, tmp_path / 'net_g.pth')
    target = tiny_rcan(1)
    report = load_pretrained(target, str(tmp_path / 'net_g.pth'), param_key='params_ema')
    assert (report['format'], report['param_key']) == ('basicsr', 'params')  # BasicSR's params_ema -> params
    assert report['mapped'] == {k: k for k in source.state_dict()}
    assert_same_weights(target, source)

    ema = tiny_rcan(2)
    torch.save({'params': source.state_dict(), 'params_ema': ema.state_dict()}, tmp_path / 'both.pth')
    assert load_pretrained(target, str(tmp_path / 'both.pth'), param_key='params_ema')['param_key'] == 'params_ema'
    assert_same_weights(target, ema)


@pytest.mark.parametrize('wrapper', [None, 'state_dict', 'model'])
def test_raw_and_wrapped_state_dicts(tmp_path, wrapper):
    source = tiny_rcan(3)
    sd = source.state_dict()
    torch.save(sd if wrapper is None else {wrapper: sd, 'epoch': 7}, tmp_path / 'raw.pth')
    target = tiny_rcan(4)
    report = load_pretrained(target, str(tmp_path / 'raw.pth'), param_key='params')
    assert (report['format'], report['param_key']) == ('state_dict', wrapper)
    assert_same_weights(target, source)


# ---------------------------------------------------------------------------------------------------------------------
# Official RCAN / EDSR (EDSR-PyTorch naming)
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize('num_group,num_block,upscale', [(2, 3, 2), (3, 2, 3), (1, 1, 4)])
def test_rcan_official_any_groups_blocks_and_scale(tmp_path, num_group, num_block, upscale):
    source = tiny_rcan(5, num_group=num_group, num_block=num_block, upscale=upscale)
    official = to_official_rcan(source)
    assert f'body.{num_group - 1}.body.{num_block}.weight' in official  # the group's last conv, official naming
    assert 'body.0.body.0.body.3.conv_du.2.bias' in official and 'tail.1.weight' in official
    torch.save(official, tmp_path / 'RCAN_official.pt')
    target = tiny_rcan(6, num_group=num_group, num_block=num_block, upscale=upscale)
    report = load_pretrained(target, str(tmp_path / 'RCAN_official.pt'))
    assert report['format'] == 'rcan_official'
    assert sorted(report['dropped']) == ['add_mean.bias', 'add_mean.weight', 'sub_mean.bias', 'sub_mean.weight']
    assert len(report['mapped']) == len(official) - 4 == len(source.state_dict())
    assert report['mapped']['conv_after_body.weight'] == f'body.{num_group}.weight'
    assert report['mapped']['body.0.residual_group.0.rcab.3.attention.1.weight'] == \
        'body.0.body.0.body.3.conv_du.0.weight'
    assert_same_weights(target, source)
    lq = torch.rand(1, 3, 6, 6)
    with torch.no_grad():
        assert torch.equal(target(lq), source(lq))


def test_rcan_mean_shift_must_agree_with_rgb_mean(tmp_path):
    source = tiny_rcan(7)
    other_mean = (0.5, 0.4, 0.3)
    torch.save(to_official_rcan(source, mean=other_mean), tmp_path / 'rcan_mean.pt')
    with pytest.raises(OptionError) as error:
        load_pretrained(tiny_rcan(8), str(tmp_path / 'rcan_mean.pt'), option='path.pretrain_network_t')
    message = str(error.value)
    assert 'path.pretrain_network_t' in message and 'rcan_mean.pt' in message
    assert 'sub_mean' in message and "set the network's rgb_mean: [0.5000, 0.4000, 0.3000]" in message
    # with the matching rgb_mean the same file loads, and the outputs agree
    target = tiny_rcan(8, rgb_mean=other_mean)
    load_pretrained(target, str(tmp_path / 'rcan_mean.pt'))
    source.mean = torch.tensor(other_mean).view(1, 3, 1, 1)
    lq = torch.rand(1, 3, 5, 5)
    with torch.no_grad():
        assert torch.equal(target(lq), source(lq))
    # img_range 1 expects a MeanShift bias of -mean, not -255 * mean
    with pytest.raises(OptionError, match="trained with rgb_range 255: set the network's img_range: 255"):
        load_pretrained(tiny_rcan(8, rgb_mean=other_mean, img_range=1.), str(tmp_path / 'rcan_mean.pt'))
    torch.save(to_official_rcan(source, std=(0.5, 0.5, 0.5)), tmp_path / 'rcan_std.pt')
    with pytest.raises(OptionError, match=r'rgb_std \[0.5, 0.5, 0.5\]'):
        load_pretrained(tiny_rcan(8), str(tmp_path / 'rcan_std.pt'))


def test_rcan_official_structure_mismatch_names_the_option(tmp_path):
    torch.save(to_official_rcan(tiny_rcan(9, num_group=3, num_block=2, upscale=3)), tmp_path / 'rcan.pt')
    cases = [({
        'num_group': 2,
        'upscale': 3
    }, 'set num_group: 3'), ({
        'num_group': 3,
        'num_block': 4,
        'upscale': 3
    }, 'set num_block: 2'),
             ({
                 'num_group': 3,
                 'upscale': 4
             }, 'the checkpoint is a x3 model, the network x4; set upscale: 3'),
             ({
                 'num_group': 3,
                 'upscale': 3,
                 'num_feat': 32,
                 'squeeze_factor': 4
             }, 'set num_feat: 16')]
    for arch_opt, expected in cases:
        with pytest.raises(OptionError) as error:
            load_pretrained(tiny_rcan(10, **arch_opt), str(tmp_path / 'rcan.pt'), option='path.pretrain_network_t')
        assert expected in str(error.value) and 'path.pretrain_network_t' in str(error.value)
    with pytest.raises(OptionError, match="converts into BasicSR's RCAN, but the network is EDSR"):
        load_pretrained(EDSR(3, 3, 16, 2, upscale=3), str(tmp_path / 'rcan.pt'), fmt='rcan_official')


def test_edsr_official(tmp_path):
    source = randomize(EDSR(3, 3, num_feat=16, num_block=3, upscale=4), 11)
    official = to_official_edsr(source)
    assert 'body.3.weight' in official and 'body.2.body.2.bias' in official
    torch.save(official, tmp_path / 'edsr_baseline_x4.pt')
    target = randomize(EDSR(3, 3, num_feat=16, num_block=3, upscale=4), 12)
    report = load_pretrained(target, str(tmp_path / 'edsr_baseline_x4.pt'))
    assert report['format'] == 'edsr_official' and len(report['dropped']) == 4
    assert report['mapped']['body.1.conv2.weight'] == 'body.1.body.2.weight'
    assert_same_weights(target, source)
    torch.save(to_official_edsr(source, mean=(0.45, 0.45, 0.45)), tmp_path / 'edsr_other_mean.pt')
    with pytest.raises(OptionError, match=r'add_mean|sub_mean'):
        load_pretrained(target, str(tmp_path / 'edsr_other_mean.pt'))


def test_nafnet_restormer_official_names(tmp_path):
    """Official NAFNet/Restormer releases are {'params': ...} files with the official module names: the plugin's archs
    must keep those names, so that the basicsr format loads them."""
    from basicsr.utils.registry import ARCH_REGISTRY
    nafnet = randomize(ARCH_REGISTRY.get('NAFNet')(width=8, middle_blk_num=1, enc_blk_nums=[1], dec_blk_nums=[1]), 29)
    restormer = randomize(
        ARCH_REGISTRY.get('Restormer')(dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1, heads=[1, 1, 1, 1]), 30)
    official = {
        nafnet: [
            'intro.weight', 'ending.bias', 'ups.0.0.weight', 'downs.0.bias', 'middle_blks.0.beta', 'encoders.0.0.gamma',
            'encoders.0.0.sca.1.weight', 'decoders.0.0.norm2.bias', 'decoders.0.0.conv5.weight'
        ],
        restormer: [
            'patch_embed.proj.weight', 'encoder_level1.0.attn.temperature', 'encoder_level1.0.norm1.body.bias',
            'encoder_level2.0.ffn.dwconv.weight', 'down1_2.body.0.weight', 'latent.0.attn.qkv_dwconv.weight',
            'up4_3.body.0.weight', 'reduce_chan_level3.weight', 'decoder_level1.0.attn.project_out.weight',
            'refinement.0.ffn.project_out.weight', 'output.weight'
        ],
    }
    for index, (source, names) in enumerate(official.items()):
        assert set(names) <= set(source.state_dict()), type(source).__name__
        torch.save({'params': source.state_dict()}, tmp_path / f'release{index}.pth')
        target = randomize(
            type(source)(**({
                'width': 8,
                'middle_blk_num': 1,
                'enc_blk_nums': [1],
                'dec_blk_nums': [1]
            } if index == 0 else {
                'dim': 8,
                'num_blocks': [1, 1, 1, 1],
                'num_refinement_blocks': 1,
                'heads': [1, 1, 1, 1]
            })), 31)
        assert load_pretrained(target, str(tmp_path / f'release{index}.pth'))['format'] == 'basicsr'
        assert_same_weights(target, source)


def test_whole_pickled_model_needs_trusted(tmp_path):
    source = tiny_rcan(32)
    torch.save(source, tmp_path / 'whole_model.pth')
    with pytest.raises(
            OptionError,
            match=r'pickled basicsr.archs.rcan_arch.RCAN object, not a state dict.*'
            r'allow full unpickling \(path.trusted_t: true\)'):
        load_pretrained(tiny_rcan(33), str(tmp_path / 'whole_model.pth'))
    target = tiny_rcan(33)
    assert load_pretrained(target, str(tmp_path / 'whole_model.pth'), trusted=True)['format'] == 'state_dict'
    assert_same_weights(target, source)


# ---------------------------------------------------------------------------------------------------------------------
# Official SwinIR
# ---------------------------------------------------------------------------------------------------------------------


def test_swinir_official_recomputes_buffers_for_another_img_size(tmp_path):
    source = tiny_swinir(13, img_size=8)
    torch.save({'params': source.state_dict()}, tmp_path / '001_classicalSR_DIV2K_s48w8_SwinIR-M_x2.pth')
    path = str(tmp_path / '001_classicalSR_DIV2K_s48w8_SwinIR-M_x2.pth')
    target = tiny_swinir(14, img_size=12)  # 9 windows instead of 4: attn_mask shapes differ
    mask_key = 'layers.0.residual_group.blocks.1.attn_mask'
    assert source.state_dict()[mask_key].shape != target.state_dict()[mask_key].shape
    own_mask = target.state_dict()[mask_key].clone()
    with pytest.raises(OptionError, match=r'attn_mask \(4, 16, 16\) vs \(9, 16, 16\)'):
        load_pretrained(target, path, fmt='basicsr')  # plain loading cannot do it
    report = load_pretrained(target, path)
    assert report['format'] == 'swinir_official'
    assert mask_key in report['recomputed'] and report['dropped'] == {}
    assert torch.equal(target.state_dict()[mask_key], own_mask)
    loaded, expected = target.state_dict(), source.state_dict()
    for key, value in expected.items():
        if not key.endswith(('attn_mask', 'relative_position_index')):
            assert torch.equal(loaded[key], value), key
    lq = torch.rand(1, 3, 12, 12)  # source computes the 12x12 mask on the fly: same function
    with torch.no_grad():
        assert torch.allclose(target(lq), source(lq), atol=1e-6)


def test_swinir_official_window_size_or_shift_mismatch(tmp_path):
    torch.save({'params': tiny_swinir(15, img_size=8).state_dict()}, tmp_path / 'swinir.pth')
    with pytest.raises(OptionError, match='window_size 4, the network has window_size 2; set window_size: 4'):
        load_pretrained(tiny_swinir(16, img_size=8, window_size=2), str(tmp_path / 'swinir.pth'))
    with pytest.raises(OptionError, match='increase img_size'):  # img_size 4 <= window 4: no shifted windows
        load_pretrained(tiny_swinir(16, img_size=4), str(tmp_path / 'swinir.pth'))


# ---------------------------------------------------------------------------------------------------------------------
# taming-transformers VQGAN (Lightning checkpoint) and safe loading
# ---------------------------------------------------------------------------------------------------------------------

TINY_VQ = arch_args(tiny_network('vqgan'))


class ModelCheckpointCallback:
    """A user class pickled into the checkpoint, as Lightning pickles its callbacks."""

    def __init__(self):
        self.best_model_score = torch.tensor(0.25)
        self.monitor = 'val/rec_loss'


class RunsCodeWhenUnpickled:
    """Unpickling this opens (creates) a marker file: proof of whether pickled code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, 'w'))


def lightning_checkpoint(encoder: VQGANEncoder, marker: Path) -> dict:
    generator = torch.Generator().manual_seed(0)
    state = OrderedDict(encoder.state_dict())
    for key, shape in (('decoder.conv_in.weight', (32, 32, 3, 3)),
                       ('decoder.up.0.block.0.conv1.weight', (32, 32, 3, 3)), ('post_quant_conv.weight', (32, 8, 1, 1)),
                       ('post_quant_conv.bias', (32, )), ('loss.perceptual_loss.net.slice1.0.weight', (64, 3, 3, 3)),
                       ('loss.discriminator.main.0.weight', (64, 3, 4, 4)), ('loss.logvar', ())):
        state[key] = torch.rand(shape, generator=generator)
    state['quantize.embedding.weight'] = torch.nn.Parameter(state['quantize.embedding.weight'].clone())
    return {
        'epoch': 3,
        'global_step': 12000,
        'pytorch-lightning_version': '1.0.8',
        'state_dict': state,
        'hparams': argparse.Namespace(base='configs/imagenet_vqgan.yaml', gpus='0,1'),
        'callbacks': {
            ModelCheckpointCallback: ModelCheckpointCallback()
        },
        'optimizer_states': [{
            'state': {},
            'param_groups': [{
                'lr': 4.5e-6
            }]
        }],
        'hyper_parameters': RunsCodeWhenUnpickled(marker),
    }


@pytest.mark.parametrize('zip_format', [True, False])  # current torch.save and the legacy (pre-1.6) format
def test_taming_lightning_checkpoint_loads_without_running_code(tmp_path, zip_format):
    source = randomize(VQGANEncoder(**TINY_VQ), 17)
    marker = tmp_path / 'code_ran'
    torch.save(lightning_checkpoint(source, marker), tmp_path / 'last.ckpt', _use_new_zipfile_serialization=zip_format)
    path = str(tmp_path / 'last.ckpt')
    with pytest.raises(Exception):
        torch.load(path, weights_only=True)  # the weights-only loader refuses this file: the restricted path is used

    target = randomize(VQGANEncoder(**TINY_VQ), 18)
    report = load_pretrained(target, path, param_key='params', option='path.pretrain_network_vqgan')
    assert not marker.exists()
    assert (report['format'], report['param_key']) == ('taming', 'state_dict')
    assert report['layout'] == 'Lightning checkpoint (state_dict)'
    assert sorted(report['dropped']) == sorted([
        'decoder.conv_in.weight', 'decoder.up.0.block.0.conv1.weight', 'post_quant_conv.weight', 'post_quant_conv.bias',
        'loss.logvar', 'loss.perceptual_loss.net.slice1.0.weight', 'loss.discriminator.main.0.weight'
    ])
    assert 'quantize.embedding.weight' in report['mapped'] and 'quant_conv.bias' in report['mapped']
    assert_same_weights(target, source)

    raw = load_checkpoint_file(path)
    assert not marker.exists()
    assert isinstance(raw['hparams'], PickledObject) and raw['hparams'].pickled_name == 'argparse.Namespace'
    assert raw['epoch'] == 3 and isinstance(raw['hyper_parameters'], PickledObject)
    assert type(raw['state_dict']['quantize.embedding.weight']) is torch.nn.Parameter
    callback_class = next(iter(raw['callbacks']))
    assert issubclass(callback_class, PickledObject) and 'ModelCheckpointCallback' in callback_class.pickled_name

    trusted = load_checkpoint_file(path, trusted=True)  # full unpickling only when asked: the pickled code runs
    assert marker.exists() and isinstance(trusted['hparams'], argparse.Namespace)
    trusted['hyper_parameters'].close()


def test_pickled_class_from_a_missing_package(tmp_path, monkeypatch):
    """Like a Lightning checkpoint opened where pytorch_lightning is not installed: safe loading still works, full
    unpickling (trusted) cannot, and says so."""
    package = tmp_path / 'pkg'
    package.mkdir()
    (package / 'fake_lightning.py').write_text('class ModelCheckpoint:\n    def __init__(self):\n        self.k = 1\n')
    monkeypatch.syspath_prepend(str(package))
    import fake_lightning
    torch.save({
        'state_dict': {
            'w': torch.arange(4.)
        },
        'callbacks': [fake_lightning.ModelCheckpoint()]
    }, tmp_path / 'pl.ckpt')
    monkeypatch.delitem(sys.modules, 'fake_lightning')
    monkeypatch.setattr(sys, 'path', [p for p in sys.path if p != str(package)])
    raw = load_checkpoint_file(str(tmp_path / 'pl.ckpt'))
    assert torch.equal(raw['state_dict']['w'], torch.arange(4.))
    assert raw['callbacks'][0].pickled_name == 'fake_lightning.ModelCheckpoint'
    assert raw['callbacks'][0].pickled_state == {'k': 1}
    with pytest.raises(OptionError, match=r"full unpickling \(trusted\) failed: No module named 'fake_lightning'"):
        load_checkpoint_file(str(tmp_path / 'pl.ckpt'), trusted=True, option='path.pretrain_network_vqgan')


def test_encoder_only_export_round_trip(tmp_path):
    source = randomize(VQGANEncoder(**TINY_VQ), 19)
    torch.save(lightning_checkpoint(source, tmp_path / 'marker'), tmp_path / 'last.ckpt')
    options = write_options(tmp_path / 'train.yml', {'network_vqgan': dict(type='VQGANEncoder', **TINY_VQ)})
    out = tmp_path / 'vqgan_encoder.pth'
    convert.main([str(tmp_path / 'last.ckpt'), str(out), '-opt', options, '--network', 'network_vqgan'])
    exported = torch.load(out, weights_only=True)
    assert list(exported) == ['params'] and exported['params'].keys() == source.state_dict().keys()
    target = randomize(VQGANEncoder(**TINY_VQ), 20)
    report = load_pretrained(target, str(out), option='path.pretrain_network_vqgan')
    # the file is a BasicSR file whose names are the network's: read and reported as such, not as taming's checkpoint
    assert (report['format'], report['layout'], report['dropped']) == ('basicsr', 'BasicSR file (params)', {})
    assert 'format basicsr (BasicSR file (params)), 75 tensors loaded' in format_report(report)
    assert_same_weights(target, source)
    # a BasicSR file that still holds the decoder and loss tensors is read by taming, which drops them
    full = dict(lightning_checkpoint(source, tmp_path / 'marker')['state_dict'])
    torch.save({'params': full}, tmp_path / 'vqgan_full_params.pth')
    report = load_pretrained(randomize(VQGANEncoder(**TINY_VQ), 21), str(tmp_path / 'vqgan_full_params.pth'),
                             option='path.pretrain_network_vqgan')
    assert (report['format'], report['layout'], len(report['dropped'])) == ('taming', 'BasicSR file (params)', 7)


# ---------------------------------------------------------------------------------------------------------------------
# Errors, strictness, user converters, output-size check
# ---------------------------------------------------------------------------------------------------------------------


def test_missing_file_and_unknown_format(tmp_path):
    with pytest.raises(OptionError, match=r'path.pretrain_network_t: .*nope.pth: no such checkpoint file'):
        load_pretrained(tiny_rcan(0), str(tmp_path / 'nope.pth'))
    torch.save({'params': tiny_rcan(0).state_dict()}, tmp_path / 'ok.pth')
    with pytest.raises(OptionError) as error:
        load_pretrained(tiny_rcan(0), str(tmp_path / 'ok.pth'), fmt='rcan_oficial')
    assert "no checkpoint format named 'rcan_oficial'" in str(error.value)
    assert 'Did you mean: rcan_official' in str(error.value) and 'path.teacher_format' in str(error.value)
    (tmp_path / 'text.pth').write_text('not a checkpoint')
    with pytest.raises(OptionError, match=r'text.pth: the file is not a PyTorch or safetensors checkpoint \('):
        load_pretrained(tiny_rcan(0), str(tmp_path / 'text.pth'))


def test_strict_mismatch_is_an_error_and_non_strict_reports(tmp_path):
    source = tiny_rcan(21)
    sd = source.state_dict()
    sd['extra.weight'] = torch.zeros(1)
    del sd['conv_last.bias']
    torch.save({'params': sd}, tmp_path / 'partial.pth')
    target = tiny_rcan(22)
    before = target.state_dict()['conv_last.bias'].clone()
    with pytest.raises(OptionError) as error:
        load_pretrained(target, str(tmp_path / 'partial.pth'), option='path.pretrain_network_t')
    message = str(error.value)
    assert 'missing from the checkpoint: conv_last.bias' in message and 'does not have: extra.weight' in message
    assert 'path.strict_load_t: false' in message
    report = load_pretrained(target, str(tmp_path / 'partial.pth'), strict=False)
    assert report['missing'] == ['conv_last.bias'] and report['unexpected'] == ['extra.weight']
    assert torch.equal(target.state_dict()['conv_last.bias'], before)
    assert torch.equal(target.state_dict()['conv_first.weight'], source.state_dict()['conv_first.weight'])


def test_user_registered_converter(tmp_path):
    if 'prefixed_test_format' not in CHECKPOINT_REGISTRY:

        @CHECKPOINT_REGISTRY.register()
        def prefixed_test_format(state_dict, net):
            return {key[len('generator.'):]: value for key, value in state_dict.items()}

    source = tiny_rcan(23)
    torch.save({'generator.' + k: v for k, v in source.state_dict().items()}, tmp_path / 'gen.pth')
    target = tiny_rcan(24)
    assert load_pretrained(target, str(tmp_path / 'gen.pth'), fmt='prefixed_test_format')['format'] == \
        'prefixed_test_format'
    assert_same_weights(target, source)


def has_generator_prefix(state_dict, net, wrapper):
    return any(key.startswith('generator.') for key in state_dict)


def test_user_converter_with_detector_joins_auto(tmp_path):
    """A converter registered from user code with its own detector is picked by ``path.teacher_format: auto``, after
    the built-in formats, and a file no detector recognises names it among the formats auto asked."""
    if 'generator_test_format' not in CHECKPOINT_REGISTRY:

        @register_converter(detect=has_generator_prefix)
        def generator_test_format(state_dict, net):
            return {key[len('generator.'):]: value for key, value in state_dict.items()}

    order = [name for name, _ in detection_order()]
    assert order[:5] == ['spandrel', 'taming', 'rcan_official', 'edsr_official', 'swinir_official']
    assert 'generator_test_format' in order

    source = tiny_rcan(34)
    torch.save({'generator.' + k: v for k, v in source.state_dict().items()}, tmp_path / 'gen.pth')
    target = tiny_rcan(35)
    report = load_pretrained(target, str(tmp_path / 'gen.pth'), fmt='auto', option='path.pretrain_network_t')
    assert report['format'] == 'generator_test_format'
    assert_same_weights(target, source)

    torch.save({'backbone.' + k: v for k, v in source.state_dict().items()}, tmp_path / 'unknown.pth')
    with pytest.raises(OptionError) as error:
        load_pretrained(tiny_rcan(36), str(tmp_path / 'unknown.pth'), fmt='auto', option='path.pretrain_network_t')
    message = str(error.value)
    assert '(format state_dict)' in message and 'path.teacher_format' in message
    assert re.search(r'auto asked, in order: spandrel, taming, rcan_official, edsr_official, swinir_official, .*'
                     r'generator_test_format', message), message


def test_check_output_size():
    from dckd_basicsr.models.kd_model import check_output_size
    student = tiny_rcan(25, upscale=4)
    assert check_output_size(tiny_rcan(26, upscale=4), student, (1, 3, 8, 8)) == (1, 3, 32, 32)
    student.train()
    with pytest.raises(
            OptionError,
            match=r'network_t \(t.pth\): .* teacher outputs \(1, 3, 16, 16\) but the student '
            r'\(1, 3, 32, 32\)'):
        check_output_size(tiny_rcan(27, upscale=2), student, (1, 3, 8, 8), path='t.pth')
    assert student.training  # modes are restored


# ---------------------------------------------------------------------------------------------------------------------
# The convert command
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_convert_command_rcan_official(tmp_path):
    source = tiny_rcan(28, num_group=2, num_block=3, upscale=3)
    torch.save(to_official_rcan(source), tmp_path / 'RCAN_BIX3.pt')
    out = tmp_path / 'rcan_x3.pth'
    proc = run([
        sys.executable, '-m', 'dckd_basicsr.commands.convert', '--format', 'rcan_official', 'RCAN_BIX3.pt',
        'rcan_x3.pth', '--arch', 'RCAN', '--arch-opt', 'num_feat=16', '--arch-opt', 'num_group=2', '--arch-opt',
        'num_block=3', '--arch-opt', 'squeeze_factor=4', '--arch-opt', 'upscale=3'
    ],
               cwd=tmp_path)
    assert 'Loading RCAN_BIX3.pt (format rcan_official)' in proc.stdout
    assert f'{len(source.state_dict())} tensors loaded' in proc.stdout and '4 dropped on purpose' in proc.stdout
    assert 'sub_mean.weight' in proc.stdout and 'Wrote rcan_x3.pth' in proc.stdout
    written = torch.load(out, weights_only=True)
    assert list(written) == ['params']
    for key, value in source.state_dict().items():
        assert torch.equal(written['params'][key], value), key
    # a wrong arch option fails with one message naming the fix, and writes nothing
    with pytest.raises(OptionError, match='set upscale: 3'):
        convert.main([
            str(tmp_path / 'RCAN_BIX3.pt'),
            str(tmp_path / 'bad.pth'), '--arch', 'RCAN', '--arch-opt', 'num_feat=16', '--arch-opt', 'num_group=2',
            '--arch-opt', 'num_block=3', '--arch-opt', 'squeeze_factor=4', '--arch-opt', 'upscale=4'
        ])
    assert not (tmp_path / 'bad.pth').exists()


def test_convert_arch_option_parsing():
    assert convert.parse_arch_options(['num_group=10', 'rgb_mean=[0.5, 0.5, 0.5]', 'img_range=1.']) == \
        {'num_group': 10, 'rgb_mean': [0.5, 0.5, 0.5], 'img_range': 1.0}
    with pytest.raises(OptionError, match='expected key=value'):
        convert.parse_arch_options(['num_group'])


# ---------------------------------------------------------------------------------------------------------------------
# dckd-convert without --arch: the network inferred from the official checkpoint
# ---------------------------------------------------------------------------------------------------------------------


def convert_and_compare(tmp_path, official: dict, source: torch.nn.Module, expected: dict, fmt: str,
                        arch_opt: list) -> dict:
    """Convert ``official`` without --arch (format given, then auto), check the printed/returned options, that every
    written tensor equals ``source``'s and the file written by the old --arch path, and that BasicSR's arch built
    with the inferred options loads it strictly and gives ``source``'s output."""
    torch.save(official, tmp_path / 'official.pt')
    written = {}
    for name, args in (('given', ['--format', fmt]), ('auto', []),
                       ('arch', ['--arch', expected['type']] + [a for item in arch_opt for a in ('--arch-opt', item)])):
        out = tmp_path / f'{name}.pth'
        report = convert.main([*args, str(tmp_path / 'official.pt'), str(out)])
        assert report['format'] == fmt
        if name != 'arch':
            assert report['network'] == expected
        written[name] = torch.load(out, weights_only=True)['params']
    for key, value in source.state_dict().items():
        for name in written:
            assert torch.equal(written[name][key], value), (name, key)
    assert written['given'].keys() == written['arch'].keys() == written['auto'].keys()
    from basicsr.archs import build_network
    net = build_network(dict(expected)).eval()
    net.load_state_dict(written['given'], strict=True)
    lq = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(net(lq), source.eval()(lq))
    return report


def test_convert_infers_rcan(tmp_path, capsys):
    source = tiny_rcan(40, num_group=2, num_block=3, upscale=3)
    expected = dict(type='RCAN', num_in_ch=3, num_out_ch=3, num_feat=16, num_group=2, num_block=3, squeeze_factor=4,
                    upscale=3, rgb_mean=[0.4488, 0.4371, 0.404], img_range=255.)
    convert_and_compare(tmp_path, to_official_rcan(source), source, expected, 'rcan_official',
                        ['num_feat=16', 'num_group=2', 'num_block=3', 'squeeze_factor=4', 'upscale=3'])
    assert ('Inferred from ' in capsys.readouterr().out)
    # another mean: inferred from the MeanShift, still tensor-exact
    other = tiny_rcan(41, num_group=1, num_block=1, upscale=2, rgb_mean=(0.5, 0.25, 0.125))
    torch.save(to_official_rcan(other, mean=(0.5, 0.25, 0.125)), tmp_path / 'rcan_mean.pt')
    report = convert.main([str(tmp_path / 'rcan_mean.pt'), str(tmp_path / 'rcan_mean.pth')])
    assert report['network']['rgb_mean'] == [0.5, 0.25, 0.125] and report['network']['num_group'] == 1


def test_convert_infers_edsr(tmp_path):
    source = randomize(EDSR(3, 3, num_feat=16, num_block=3, upscale=4), 42)
    expected = dict(type='EDSR', num_in_ch=3, num_out_ch=3, num_feat=16, num_block=3, upscale=4, res_scale=1,
                    rgb_mean=[0.4488, 0.4371, 0.404], img_range=255.)
    convert_and_compare(tmp_path, to_official_edsr(source), source, expected, 'edsr_official',
                        ['num_feat=16', 'num_block=3', 'upscale=4'])


@pytest.mark.parametrize('variant', [dict(upsampler='pixelshuffle', upscale=2, img_size=8),
                                     dict(upsampler='pixelshuffledirect', upscale=3, img_size=16, window_size=8,
                                          mlp_ratio=1.5, resi_connection='3conv')])
def test_convert_infers_swinir(tmp_path, variant):
    source = tiny_swinir(43, **variant)
    expected = dict(type='SwinIR', img_size=variant['img_size'], in_chans=3, embed_dim=12, depths=[2, 2],
                    num_heads=[2, 2], window_size=variant.get('window_size', 4), mlp_ratio=variant.get('mlp_ratio', 2.),
                    upscale=variant['upscale'], img_range=1., upsampler=variant['upsampler'],
                    resi_connection=variant.get('resi_connection', '1conv'))
    arch_opt = [f'{k}={v}' for k, v in expected.items() if k != 'type']
    convert_and_compare(tmp_path, {'params': source.state_dict()}, source, expected, 'swinir_official',
                        [a.replace(' ', '') for a in arch_opt])


def test_convert_inference_errors(tmp_path):
    torch.save({'params': tiny_rcan(44).state_dict()}, tmp_path / 'basicsr.pth')
    with pytest.raises(OptionError, match="format 'basicsr' does not determine the network .* --arch TYPE"):
        convert.main([str(tmp_path / 'basicsr.pth'), str(tmp_path / 'out.pth')])
    with pytest.raises(OptionError, match='--arch-opt without --arch'):
        convert.main([str(tmp_path / 'basicsr.pth'), str(tmp_path / 'out.pth'), '--arch-opt', 'num_block=2'])
    assert not (tmp_path / 'out.pth').exists()


def test_convert_arch_opt_is_one_key_value_per_flag():
    expected = ('in.pt', 'out.pth', ['num_group=2', 'num_block=3'])
    for argv in (['--arch', 'RCAN', '--arch-opt', 'num_group=2', '--arch-opt', 'num_block=3', 'in.pt', 'out.pth'],
                 ['in.pt', 'out.pth', '--arch', 'RCAN', '--arch-opt', 'num_group=2', '--arch-opt', 'num_block=3'],
                 ['in.pt', '--arch-opt', 'num_group=2', 'out.pth', '--arch-opt', 'num_block=3', '--arch', 'RCAN']):
        args = convert.parse_args(argv)
        assert (args.input, args.output, args.arch_opt) == expected, argv
    # several items after one flag (the form before action='append') is an argparse error
    for argv in (['--arch-opt', 'a=1', 'b=2', 'in.pt', 'out.pth'], ['--arch-opt', 'a=1', 'in.pt'],
                 ['--arch-opt', 'a=1', 'in.pt', 'out.pth', 'extra']):
        with pytest.raises(SystemExit):
            convert.parse_args(argv)


def test_convert_help_names_the_command():
    parser = convert.build_parser()
    assert parser.prog == 'dckd-convert' and 'inferred from the checkpoint' in parser.description
    assert parser.format_help().startswith('usage: dckd-convert')


def test_safetensors_release_through_an_official_converter(tmp_path):
    from safetensors.torch import save_file
    source = tiny_rcan(45, num_group=2, num_block=1, upscale=2)
    save_file({k: v.contiguous() for k, v in to_official_rcan(source).items()}, str(tmp_path / 'RCAN_BIX2.safetensors'))
    target = tiny_rcan(46, num_group=2, num_block=1, upscale=2)
    report = load_pretrained(target, str(tmp_path / 'RCAN_BIX2.safetensors'))
    assert (report['format'], report['layout'], report['param_key']) == ('rcan_official', 'safetensors file', None)
    assert_same_weights(target, source)
    (tmp_path / 'broken.safetensors').write_bytes(b'not a safetensors file')
    with pytest.raises(OptionError, match=r'path.pretrain_network_t: .*broken.safetensors: the file is not a '
                       'safetensors file'):
        load_pretrained(target, str(tmp_path / 'broken.safetensors'))


@pytest.mark.parametrize('damage, words', [
    ('truncated', 'the file ends early (4000 bytes; a truncated download or an interrupted write?)'),
    ('truncated_legacy', 'the file ends early (4000 bytes; a truncated download?)'),
    ('empty', 'the file is empty (0 bytes)'),
    ('html', 'the file is an HTML page, not a checkpoint'),
    ('truncated_safetensors', 'the file ends early (4000 bytes; a truncated download?)'),
])
def test_a_broken_checkpoint_is_one_line_saying_what_is_wrong_and_what_to_do(tmp_path, damage, words):
    """Truncated (zip and legacy torch formats, safetensors), empty, or a web page saved instead: one message naming
    the option and the file, what is wrong in words and what to do, never torch's own text."""
    from safetensors.torch import save_file
    state = {'params': {'w': torch.randn(64, 64)}}
    name = 'teacher.safetensors' if damage == 'truncated_safetensors' else 'teacher.pth'
    path = tmp_path / name
    if damage == 'truncated_safetensors':
        save_file(state['params'], str(path))
    else:
        torch.save(state, path, _use_new_zipfile_serialization=damage != 'truncated_legacy')
    data = {'empty': b'', 'html': b'<!DOCTYPE html>\n<html><body>Not Found</body></html>'}.get(damage)
    path.write_bytes(data if data is not None else path.read_bytes()[:4000])
    with pytest.raises(OptionError) as error:
        load_pretrained(tiny_rcan(0), str(path))
    message = str(error.value)
    assert message.startswith(f'path.pretrain_network_t: {path}: {words}') and '\n' not in message
    assert message.endswith('download the file itself.' if damage == 'html' else
                            'download it again, or run again the training that wrote it.')
