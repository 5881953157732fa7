"""Converters of the official RCAN, EDSR and SwinIR releases into BasicSR's ``RCAN`` / ``EDSR`` / ``SwinIR``.

``rcan_official``
    RCAN (yulunzhang/RCAN: ``RCAN_BIX2.pt``, ``RCAN_BIX3.pt``, ``RCAN_BIX4.pt``; EDSR-PyTorch naming); detected by
    spandrel's RCAN detector, network options inferred from spandrel's reading of the file.
``edsr_official``
    EDSR-PyTorch (sanghyun-son/EDSR-PyTorch: ``edsr_x{2,3,4}-*.pt``, ``edsr_baseline_x{2,3,4}-*.pt``); spandrel has
    no EDSR, so the options are inferred here, with spandrel's key-reading helpers.
``swinir_official``
    SwinIR (JingyunLiang/SwinIR releases: ``001_classicalSR_DIV2K_s48w8_SwinIR-M_x{2,3,4}.pth``,
    ``002_lightweightSR_DIV2K_s64w8_SwinIR-S_x2.pth``, ``003_realSR_BSRGAN_DFO_s64w8_SwinIR-M_x4_GAN.pth``, ...);
    network options inferred from spandrel's reading of the file (:func:`swinir_options`, also used by
    :mod:`.detect`).

These fill BasicSR's own architectures, which the BasicSR teacher route, the authors' option files, FAKD's default
layer names and ``dckd-convert``'s output use; a teacher of any other architecture is loaded by spandrel itself
(``network_t: {type: SpandrelTeacher}``, the ``spandrel`` format). The RCAN and EDSR key maps are
:mod:`.official_layouts`.
"""
import math
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence

import torch
from torch import nn

from dckd_basicsr.checkpoints.converters import spandrel_hyperparameters
from dckd_basicsr.checkpoints.official_layouts import EDSR_LAYOUT, RCAN_LAYOUT, KeyLayout
from dckd_basicsr.checkpoints.registry import Conversion, register_converter
from dckd_basicsr.errors import ConversionError


def _conv_out(state_dict: Mapping[str, torch.Tensor], key: str) -> int:
    return int(state_dict[key].shape[0])


def _upsample_scale(conv_out_channels: List[int], num_feat: int) -> Optional[int]:
    """Scale of an EDSR-style upsampler from its convs' output channels (4*nf per x2 step, 9*nf for x3)."""
    if len(conv_out_channels) == 1 and conv_out_channels[0] == 9 * num_feat:
        return 3
    if conv_out_channels and all(c == 4 * num_feat for c in conv_out_channels):
        return 2**len(conv_out_channels)
    return None


def _net_scale(net: nn.Module) -> Optional[int]:
    convs = [m.out_channels for m in net.upsample if isinstance(m, nn.Conv2d)]
    return _upsample_scale(convs, net.conv_first.out_channels)


def _require(net: nn.Module,
             arch: str,
             attributes: Sequence[str],
             fmt: str,
             body_block: Optional[Sequence[str]] = None) -> None:
    """Check ``net`` has BasicSR ``arch``'s attributes (and, for ``body_block``, those of its first body block)."""
    fits = all(hasattr(net, name) for name in attributes)
    if fits and body_block:
        fits = len(net.body) > 0 and all(hasattr(net.body[0], name) for name in body_block)
    if not fits:
        raise ConversionError(f"format '{fmt}' converts into BasicSR's {arch}, but the network is "
                              f'{type(net).__name__}; check the network type or the checkpoint format.')


def _check_mean_shift(tensors: Mapping[str, torch.Tensor], net: nn.Module, conversion: Conversion) -> None:
    """Compare the official ``sub_mean`` / ``add_mean`` layers with the network's ``rgb_mean`` and ``img_range``.

    EDSR-PyTorch's MeanShift is a 1x1 conv with weight ``I / std`` and bias ``sign * rgb_range * mean / std``; BasicSR
    computes ``(x - mean) * img_range`` and ``x / img_range + mean`` (no std). They agree iff ``std == 1`` and
    ``bias == sign * img_range * mean``.
    """
    mean = net.mean.detach().flatten().double()
    img_range = float(net.img_range)
    for name, sign in (('sub_mean', -1.), ('add_mean', 1.)):
        weight_key, bias_key = f'{name}.weight', f'{name}.bias'
        if weight_key not in tensors or bias_key not in tensors:
            continue
        weight = tensors[weight_key].double().reshape(3, 3)
        bias = tensors[bias_key].double().flatten()
        if not torch.allclose(weight, torch.eye(3, dtype=torch.float64), atol=1e-6):
            std = [round(1 / w, 4) if w else float('inf') for w in torch.diagonal(weight).tolist()]
            raise ConversionError(f'{name} divides by rgb_std {std}; BasicSR\'s {type(net).__name__} has no rgb_std '
                                  '(it assumes 1), so this checkpoint cannot be converted faithfully.')
        file_mean = bias / (sign * img_range)
        if not torch.allclose(file_mean, mean, rtol=0, atol=5e-5):
            shown = ', '.join(f'{v:.4f}' for v in file_mean.tolist())
            net_mean = ', '.join(f'{v:.4f}' for v in mean.tolist())
            if ((file_mean < 0) | (file_mean > 1)).any():  # not a mean of [0, 1] images: the range differs
                rgb_range = (bias / (sign * mean)).mean().item()
                hint = f'the teacher was trained with rgb_range {rgb_range:.4g}: set the network\'s img_range: ' \
                    f'{rgb_range:.4g}'
            else:
                hint = f'set the network\'s rgb_mean: [{shown}]'
            raise ConversionError(
                f'{name}.bias = ({", ".join(f"{v:.3f}" for v in bias.tolist())}) means rgb_mean ({shown}) at '
                f'img_range {img_range:g}, but the network has rgb_mean ({net_mean}); {hint}.')
        for key in (weight_key, bias_key):
            conversion.dropped[key] = 'MeanShift, agrees with rgb_mean/img_range (BasicSR keeps them as attributes)'


def _check_count(counted: str, in_file: int, in_net: int, option: str) -> None:
    """``counted`` (e.g. ``'residual groups'``) must be as many in the file as in the network."""
    if in_file != in_net:
        raise ConversionError(f'the checkpoint has {in_file} {counted}, the network {in_net}; set {option}: {in_file}.')


def _edsr_family(tensors: Dict[str, torch.Tensor], net: nn.Module, fmt: str, layout: KeyLayout,
                 **counts: int) -> Conversion:
    """Shared part of the EDSR-PyTorch converters: head, scale and MeanShift checks, then every key renamed through
    ``layout`` (keys it has no name for are kept, so that they show up as unexpected)."""
    conversion = Conversion()
    num_feat = net.conv_first.out_channels
    if 'head.0.weight' in tensors:
        _check_count('features (head.0 output channels)', _conv_out(tensors, 'head.0.weight'), num_feat, 'num_feat')
    ups = sorted({int(m.group(1)) for m in (re.fullmatch(r'tail\.0\.(\d+)\.weight', k) for k in tensors) if m})
    file_scale = _upsample_scale([_conv_out(tensors, f'tail.0.{i}.weight') for i in ups], num_feat)
    net_scale = _net_scale(net)
    if ups and file_scale != net_scale:
        raise ConversionError(f'the checkpoint is a x{file_scale} model, the network x{net_scale}; '
                              f'set upscale: {file_scale} (or use the x{net_scale} checkpoint).')
    _check_mean_shift(tensors, net, conversion)
    for key in tensors:
        if key in conversion.dropped:
            continue
        target = layout.rename(key, 'basicsr', **counts)
        conversion.take(target if target is not None else key, key, tensors)
    return conversion


def _edsr_pytorch_naming(tensors: Mapping[str, torch.Tensor]) -> bool:
    return 'head.0.weight' in tensors and any(k.startswith('tail.') for k in tensors)


def _has_channel_attention(tensors: Mapping[str, torch.Tensor]) -> bool:
    return any('.conv_du.' in k for k in tensors)


def _mean_options(tensors: Mapping[str, torch.Tensor], fmt: str) -> Dict[str, Any]:
    """``rgb_mean`` / ``img_range`` of BasicSR's RCAN/EDSR for an EDSR-PyTorch file: its ``sub_mean`` MeanShift at
    EDSR-PyTorch's ``rgb_range`` 255 (the releases'), or no mean subtraction when the file has none."""
    if 'sub_mean.bias' not in tensors:
        return {'rgb_mean': [0., 0., 0.], 'img_range': 1.}
    mean = [round(v, 4) for v in (tensors['sub_mean.bias'].double().flatten() / -255.).tolist()]
    if len(mean) != 3 or not all(0 <= v <= 1 for v in mean):
        raise ConversionError(f"format '{fmt}': sub_mean.bias / -255 = {mean} is no RGB mean of [0, 1] images, so "
                              'the rgb_range is not 255; give the network with --arch/--arch-opt (img_range, '
                              'rgb_mean).')
    return {'rgb_mean': mean, 'img_range': 255.}


# ------------------------------------------------------------------------------------------------------------ RCAN
def _is_rcan_official(tensors: Mapping[str, torch.Tensor], net: Optional[nn.Module], wrapper: Optional[str]) -> bool:
    from spandrel import MAIN_REGISTRY
    if net is not None and set(net.state_dict()) == set(tensors):  # spandrel's RCAN as a student: its own names
        return False
    return MAIN_REGISTRY['RCAN'].detect(tensors)


def _check_basicsr_rcan(params: Mapping[str, Any]) -> None:
    differences = [difference for difference, differs in (
        ('a pixel-unshuffle head (head.1)', params.get('unshuffle_mod')),
        (f"kernel size {params.get('kernel_size')}", params.get('kernel_size', 3) != 3),
    ) if differs]
    if differences:
        raise ConversionError(f"this RCAN has {' and '.join(differences)}, which BasicSR's RCAN does not; load it as a "
                              'teacher with network_t: {type: SpandrelTeacher} instead.')


def _infer_rcan(tensors: Mapping[str, torch.Tensor]) -> Dict[str, Any]:
    """BasicSR ``RCAN`` options of an official RCAN file, from spandrel's RCAN loader."""
    params = spandrel_hyperparameters('RCAN', tensors, 'rcan_official')
    _check_basicsr_rcan(params)
    return dict(type='RCAN', num_in_ch=params['n_colors'], num_out_ch=params['n_colors'], num_feat=params['n_feats'],
                num_group=params['n_resgroups'], num_block=params['n_resblocks'], squeeze_factor=params['reduction'],
                upscale=params['scale'], **_mean_options(tensors, 'rcan_official'))


@register_converter(detect=_is_rcan_official, priority=310, infer=_infer_rcan)
def rcan_official(tensors: Dict[str, torch.Tensor], net: nn.Module) -> Conversion:
    """Official RCAN (EDSR-PyTorch naming) into BasicSR's ``RCAN``, any number of groups/blocks, x2/x3/x4.

    Keys are renamed through :data:`~.official_layouts.RCAN_LAYOUT` (``head.0`` -> ``conv_first``,
    ``body.G.body.B.body.{0,2}`` -> ``body.G.residual_group.B.rcab.{0,2}``, ``body.G.body.B.body.3.conv_du.{0,2}`` ->
    ``...rcab.3.attention.{1,3}``, ``body.G.body.N`` -> ``body.G.conv``, ``body.NG`` -> ``conv_after_body``,
    ``tail.0.K`` -> ``upsample.K``, ``tail.1`` -> ``conv_last``); ``sub_mean`` / ``add_mean`` are checked against
    ``rgb_mean`` / ``img_range`` and dropped.
    """
    _require(
        net,
        'RCAN', ('conv_first', 'body', 'conv_after_body', 'upsample', 'conv_last', 'mean', 'img_range'),
        'rcan_official',
        body_block=('residual_group', 'conv'))
    if 'head.1.weight' in tensors and 'head.0.weight' not in tensors:
        _check_basicsr_rcan({'unshuffle_mod': True})
    num_group, num_block = len(net.body), len(net.body[0].residual_group)
    groups = {int(m.group(1)) for m in (re.fullmatch(r'body\.(\d+)\.body\.\d+\..*', k) for k in tensors) if m}
    blocks = {int(m.group(1)) for m in (re.fullmatch(r'body\.0\.body\.(\d+)\.body\..*', k) for k in tensors) if m}
    _check_count('residual groups', len(groups), num_group, 'num_group')
    _check_count('blocks per group', len(blocks), num_block, 'num_block')
    return _edsr_family(tensors, net, 'rcan_official', RCAN_LAYOUT, num_group=num_group, num_block=num_block)


# ------------------------------------------------------------------------------------------------------------ EDSR
def _is_edsr_official(tensors: Mapping[str, torch.Tensor], net: Optional[nn.Module], wrapper: Optional[str]) -> bool:
    return _edsr_pytorch_naming(tensors) and not _has_channel_attention(tensors)


# EDSR-PyTorch's EDSR paper model (its template "EDSR_paper"): 256 features, 32 blocks, res_scale 0.1; every other
# EDSR release (the baselines) has res_scale 1. The file does not store it.
EDSR_PAPER = {'num_feat': 256, 'num_block': 32}


def _infer_edsr(tensors: Mapping[str, torch.Tensor]) -> Dict[str, Any]:
    """BasicSR ``EDSR`` options of an EDSR-PyTorch file (spandrel has no EDSR; its key-reading helpers are used)."""
    from spandrel.util import get_pixelshuffle_params, get_seq_len
    upscale, num_feat = get_pixelshuffle_params(tensors, 'tail.0')
    options = dict(type='EDSR', num_in_ch=int(tensors['head.0.weight'].shape[1]),
                   num_out_ch=int(tensors['tail.1.weight'].shape[0]), num_feat=int(num_feat),
                   num_block=get_seq_len(tensors, 'body') - 1, upscale=int(upscale))
    options['res_scale'] = 0.1 if all(options[k] == v for k, v in EDSR_PAPER.items()) else 1
    options.update(_mean_options(tensors, 'edsr_official'))
    return options


@register_converter(detect=_is_edsr_official, priority=300, infer=_infer_edsr)
def edsr_official(tensors: Dict[str, torch.Tensor], net: nn.Module) -> Conversion:
    """Official EDSR (EDSR-PyTorch) into BasicSR's ``EDSR`` through :data:`~.official_layouts.EDSR_LAYOUT`:
    ``body.I.body.{0,2}`` -> ``body.I.conv{1,2}``, ``body.N`` -> ``conv_after_body``; head, tail and MeanShift as in
    :func:`rcan_official`. ``res_scale`` is not stored in the file: set it as the release says (0.1 for the large
    EDSR)."""
    _require(
        net,
        'EDSR', ('conv_first', 'body', 'conv_after_body', 'upsample', 'conv_last', 'mean', 'img_range'),
        'edsr_official',
        body_block=('conv1', 'conv2'))
    num_block = len(net.body)
    blocks = {int(m.group(1)) for m in (re.fullmatch(r'body\.(\d+)\.body\..*', k) for k in tensors) if m}
    _check_count('residual blocks', len(blocks), num_block, 'num_block')
    return _edsr_family(tensors, net, 'edsr_official', EDSR_LAYOUT, num_block=num_block)


# ---------------------------------------------------------------------------------------------------------- SwinIR
def _is_swinir_official(tensors: Mapping[str, torch.Tensor], net: Optional[nn.Module], wrapper: Optional[str]) -> bool:
    """SwinIR keys, and a network with ``patch_embed`` (any network when there is none yet: ``dckd-convert``
    inferring it)."""
    return any(k.endswith('relative_position_bias_table') for k in tensors) and (net is None
                                                                               or hasattr(net, 'patch_embed'))


# SwinIR options that spandrel's loader reads from the file (the rest are training-only: dropout, drop path; ape is off
# in every release, patch_size 1).
SWINIR_OPTIONS = ('upscale', 'in_chans', 'img_size', 'window_size', 'img_range', 'depths', 'embed_dim', 'num_heads',
                  'mlp_ratio', 'upsampler', 'resi_connection')


def swinir_options(hyperparameters: Mapping[str, Any]) -> Dict[str, Any]:
    """The BasicSR ``SwinIR`` block (with ``type``) of spandrel's SwinIR hyperparameters: ``img_size`` from the
    shifted blocks' ``attn_mask`` (64 when there is none), ``img_range`` 255 for window 7 (the JPEG releases), else 1.

    Raises:
        ConversionError: the SwinIR starts with a pixel unshuffle, which BasicSR's SwinIR does not have.
    """
    if hyperparameters.get('start_unshuffle', 1) != 1:
        raise ConversionError("this SwinIR starts with a pixel unshuffle (conv_first.1), which BasicSR's SwinIR does "
                              'not; load it as a teacher with network_t: {type: SpandrelTeacher} instead.')
    options = {'type': 'SwinIR'}
    for key in SWINIR_OPTIONS:
        value = hyperparameters[key]
        options[key] = [int(v) for v in value] if key in ('depths', 'num_heads') else value
    options['mlp_ratio'] = float(options['mlp_ratio'])
    options['img_range'] = float(options['img_range'])
    return options


def _infer_swinir(tensors: Mapping[str, torch.Tensor]) -> Dict[str, Any]:
    """BasicSR ``SwinIR`` options of an official SwinIR file (:func:`swinir_options`)."""
    return swinir_options(spandrel_hyperparameters('SwinIR', tensors, 'swinir_official'))


@register_converter(detect=_is_swinir_official, priority=200, infer=_infer_swinir)
def swinir_official(tensors: Dict[str, torch.Tensor], net: nn.Module) -> Conversion:
    """Official SwinIR releases (classical, lightweight, real-world; ``params`` or ``params_ema``) into BasicSR's
    ``SwinIR``, which uses the same module names.

    ``relative_position_index`` and ``attn_mask`` are buffers computed from ``window_size`` and ``img_size``: the
    network keeps its own, so a checkpoint trained with another ``img_size`` loads. A different ``window_size`` (the
    bias tables differ) or an ``img_size`` so small that the network has no shifted windows where the checkpoint has
    them (or the reverse) changes the model and is an error.
    """
    _require(net, 'SwinIR', ('patch_embed', 'layers', 'conv_first'), 'swinir_official')
    own = net.state_dict()
    conversion = Conversion()
    for key, value in tensors.items():
        if key.endswith('.relative_position_bias_table') and key in own and own[key].shape != value.shape:
            file_ws, net_ws = ((math.isqrt(t.shape[0]) + 1) // 2 for t in (value, own[key]))
            raise ConversionError(f'{key}: the checkpoint was trained with window_size {file_ws}, the network has '
                                  f'window_size {net_ws}; set window_size: {file_ws}.')
        if key.endswith('.relative_position_index') or key.endswith('.attn_mask'):
            if key not in own:
                if key.endswith('.attn_mask'):
                    raise ConversionError(f'{key}: the checkpoint uses shifted windows in this block, the network does '
                                          'not (its img_size is not larger than window_size); increase img_size.')
                conversion.dropped[key] = 'buffer, not in the network'
            else:
                conversion.recomputed[key] = 'buffer, computed from the network\'s img_size/window_size'
            continue
        conversion.take(key, key, tensors)
    for key in own:
        if key.endswith('.attn_mask') and key not in tensors:
            raise ConversionError(f'{key}: the network uses shifted windows in this block, the checkpoint does not '
                                  '(it was trained with img_size <= window_size); set img_size as in training.')
        if key.endswith('.relative_position_index') and key not in conversion.recomputed:
            conversion.recomputed[key] = 'buffer, computed from the network\'s window_size'
    return conversion
