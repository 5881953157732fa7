"""The checkpoint formats ``load_pretrained`` converts, each registered with its detector (see :mod:`.registry`).

``basicsr``
    BasicSR files ``{'params': ..., 'params_ema': ...}`` (``experiments/<name>/models/net_g_<iter>.pth``), names as in
    the network. The official NAFNet (megvii-research/NAFNet, e.g. ``NAFNet-GoPro-width32.pth``) and Restormer
    (swz30/Restormer, e.g. ``motion_deblurring.pth``, ``deraining.pth``) releases are BasicSR files too.
``state_dict``
    Raw ``torch.save(net.state_dict())`` files and ``{'state_dict' | 'model' | ...: ...}`` wrappers, names as in the
    network.
``rcan_official``
    RCAN (yulunzhang/RCAN: ``RCAN_BIX2.pt``, ``RCAN_BIX3.pt``, ``RCAN_BIX4.pt``; EDSR-PyTorch naming) into BasicSR's
    ``RCAN``.
``edsr_official``
    EDSR-PyTorch (sanghyun-son/EDSR-PyTorch: ``edsr_x{2,3,4}-*.pt``, ``edsr_baseline_x{2,3,4}-*.pt``) into BasicSR's
    ``EDSR``.
``swinir_official``
    SwinIR (JingyunLiang/SwinIR releases: ``001_classicalSR_DIV2K_s48w8_SwinIR-M_x{2,3,4}.pth``,
    ``002_lightweightSR_DIV2K_s64w8_SwinIR-S_x2.pth``, ``003_realSR_BSRGAN_DFO_s64w8_SwinIR-M_x4_GAN.pth``, ...) into
    BasicSR's ``SwinIR``.
``taming``
    taming-transformers VQGAN (CompVis/taming-transformers: the Lightning checkpoint
    ``vqgan_imagenet_f16_1024/checkpoints/last.ckpt``), or an encoder-only file written by ``dckd-convert``, into the
    plugin's ``VQGANEncoder``.

``basicsr`` and ``state_dict`` have no detector: ``auto`` falls back to them when no detector recognises the file.
"""
import math
import re
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from dckd_basicsr.checkpoints.registry import Conversion, ConversionError, register_converter


@register_converter()
def basicsr(state_dict: Dict[str, torch.Tensor], net: nn.Module) -> Conversion:
    """BasicSR files (``params`` / ``params_ema``): names already match; unwrapping did the rest.

    Also the format of the official NAFNet and Restormer releases, which are BasicSR ``{'params': ...}`` files with
    the official module names (see the note below :func:`state_dict`).
    """
    conversion = Conversion()
    for key in state_dict:
        conversion.take(key, key, state_dict)
    return conversion


@register_converter()
def state_dict(state_dict: Dict[str, torch.Tensor], net: nn.Module) -> Conversion:  # noqa: F811  (format name)
    """Raw state dicts and ``{'state_dict': ...}`` / ``{'model': ...}`` wrappers, names as in the network."""
    return basicsr(state_dict, net)


# NAFNet / Restormer: the official releases (megvii-research/NAFNet, swz30/Restormer) are BasicSR files
# ({'params': ...}) whose keys are the official archs' module names (intro, encoders.I.J.sca.1, beta, gamma, ups, downs,
# ending / patch_embed.proj, encoder_levelN.I.attn.temperature, down1_2.body.0, reduce_chan_levelN, refinement, output).
# dckd_basicsr/archs/nafnet_arch.py and restormer_arch.py keep those names, so the `basicsr` format loads them
# (tests/test_checkpoints.py::test_nafnet_restormer_official_names). If an arch ever renames modules, register a
# `nafnet_official` / `restormer_official` converter here that maps the names (a Conversion with `take` per key), with
# a detector for its key signature.


# EDSR-PyTorch naming (RCAN, EDSR): head.0, body.*, tail.0 (upsampler), tail.1, sub_mean/add_mean (MeanShift).


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


def _check_count(what: str, in_file: int, in_net: int, option: str) -> None:
    if in_file != in_net:
        raise ConversionError(f'the checkpoint has {in_file} {what}, the network {in_net}; set {option}: {in_file}.')


def _edsr_family(tensors: Dict[str, torch.Tensor], net: nn.Module, fmt: str,
                 body_rules: Sequence[Tuple[str, Callable[[re.Match], Optional[str]]]]) -> Conversion:
    """Shared part of the EDSR-PyTorch converters: head, tail, MeanShift and scale checks; ``body_rules`` map the
    body keys (regex on the key, function of the match returning the BasicSR key or None)."""
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
    rules = list(body_rules) + [
        (r'head\.0\.(weight|bias)', lambda m: f'conv_first.{m.group(1)}'),
        (r'tail\.0\.(\d+)\.(weight|bias)', lambda m: f'upsample.{m.group(1)}.{m.group(2)}'),
        (r'tail\.1\.(weight|bias)', lambda m: f'conv_last.{m.group(1)}'),
    ]
    for key in tensors:
        if key in conversion.dropped:
            continue
        target = None
        for pattern, rename in rules:
            match = re.fullmatch(pattern, key)
            if match:
                target = rename(match)
                break
        conversion.take(target if target is not None else key, key, tensors)
    return conversion


def _edsr_pytorch_naming(tensors: Mapping[str, torch.Tensor]) -> bool:
    return 'head.0.weight' in tensors and any(k.startswith('tail.') for k in tensors)


def _has_channel_attention(tensors: Mapping[str, torch.Tensor]) -> bool:
    return any('.conv_du.' in k for k in tensors)


def _is_rcan_official(tensors: Mapping[str, torch.Tensor], net: nn.Module, wrapper: Optional[str]) -> bool:
    return _edsr_pytorch_naming(tensors) and _has_channel_attention(tensors)


def _is_edsr_official(tensors: Mapping[str, torch.Tensor], net: nn.Module, wrapper: Optional[str]) -> bool:
    return _edsr_pytorch_naming(tensors) and not _has_channel_attention(tensors)


@register_converter(detect=_is_rcan_official, priority=310)
def rcan_official(tensors: Dict[str, torch.Tensor], net: nn.Module) -> Conversion:
    """Official RCAN (EDSR-PyTorch naming) into BasicSR's ``RCAN``, any number of groups/blocks, x2/x3/x4.

    ``head.0`` -> ``conv_first``; ``body.G.body.B.body.{0,2}`` -> ``body.G.residual_group.B.rcab.{0,2}``;
    ``body.G.body.B.body.3.conv_du.{0,2}`` -> ``...rcab.3.attention.{1,3}``; ``body.G.body.N`` -> ``body.G.conv``;
    ``body.NG`` -> ``conv_after_body``; ``tail.0.K`` -> ``upsample.K``; ``tail.1`` -> ``conv_last``; ``sub_mean`` /
    ``add_mean`` are checked against ``rgb_mean`` / ``img_range`` and dropped.
    """
    _require(
        net,
        'RCAN', ('conv_first', 'body', 'conv_after_body', 'upsample', 'conv_last', 'mean', 'img_range'),
        'rcan_official',
        body_block=('residual_group', 'conv'))
    num_group, num_block = len(net.body), len(net.body[0].residual_group)
    groups = {int(m.group(1)) for m in (re.fullmatch(r'body\.(\d+)\.body\.\d+\..*', k) for k in tensors) if m}
    blocks = {int(m.group(1)) for m in (re.fullmatch(r'body\.0\.body\.(\d+)\.body\..*', k) for k in tensors) if m}
    _check_count('residual groups', len(groups), num_group, 'num_group')
    _check_count('blocks per group', len(blocks), num_block, 'num_block')
    rcab = {'0': 'rcab.0', '2': 'rcab.2'}
    attention = {'0': 'rcab.3.attention.1', '2': 'rcab.3.attention.3'}
    rules = [
        (r'body\.(\d+)\.body\.(\d+)\.body\.([02])\.(weight|bias)',
         lambda m: f'body.{m[1]}.residual_group.{m[2]}.{rcab[m[3]]}.{m[4]}'),
        (r'body\.(\d+)\.body\.(\d+)\.body\.3\.conv_du\.([02])\.(weight|bias)',
         lambda m: f'body.{m[1]}.residual_group.{m[2]}.{attention[m[3]]}.{m[4]}'),
        (r'body\.(\d+)\.body\.(\d+)\.(weight|bias)', lambda m: f'body.{m[1]}.conv.{m[3]}'
         if int(m[2]) == num_block else None),
        (r'body\.(\d+)\.(weight|bias)', lambda m: f'conv_after_body.{m[2]}' if int(m[1]) == num_group else None),
    ]
    return _edsr_family(tensors, net, 'rcan_official', rules)


@register_converter(detect=_is_edsr_official, priority=300)
def edsr_official(tensors: Dict[str, torch.Tensor], net: nn.Module) -> Conversion:
    """Official EDSR (EDSR-PyTorch) into BasicSR's ``EDSR``: ``body.I.body.{0,2}`` -> ``body.I.conv{1,2}``,
    ``body.N`` -> ``conv_after_body``; head, tail and MeanShift as in :func:`rcan_official`. ``res_scale`` is not
    stored in the file: set it as the release says (0.1 for the large EDSR)."""
    _require(
        net,
        'EDSR', ('conv_first', 'body', 'conv_after_body', 'upsample', 'conv_last', 'mean', 'img_range'),
        'edsr_official',
        body_block=('conv1', 'conv2'))
    num_block = len(net.body)
    blocks = {int(m.group(1)) for m in (re.fullmatch(r'body\.(\d+)\.body\..*', k) for k in tensors) if m}
    _check_count('residual blocks', len(blocks), num_block, 'num_block')
    rules = [
        (r'body\.(\d+)\.body\.([02])\.(weight|bias)', lambda m: f'body.{m[1]}.conv{1 if m[2] == "0" else 2}.{m[3]}'),
        (r'body\.(\d+)\.(weight|bias)', lambda m: f'conv_after_body.{m[2]}' if int(m[1]) == num_block else None),
    ]
    return _edsr_family(tensors, net, 'edsr_official', rules)


def _is_swinir_official(tensors: Mapping[str, torch.Tensor], net: nn.Module, wrapper: Optional[str]) -> bool:
    return any(k.endswith('relative_position_bias_table') for k in tensors) and hasattr(net, 'patch_embed')


@register_converter(detect=_is_swinir_official, priority=200)
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


def _is_taming(tensors: Mapping[str, torch.Tensor], net: nn.Module, wrapper: Optional[str]) -> bool:
    return 'quantize.embedding.weight' in tensors or any(k.startswith('encoder.conv_in.') for k in tensors)


@register_converter(detect=_is_taming, priority=400)
def taming(tensors: Dict[str, torch.Tensor], net: nn.Module) -> Conversion:
    """taming-transformers VQGAN (Lightning ``state_dict``) into the plugin's VQGAN encoder.

    Keeps ``encoder.*``, ``quant_conv.*`` and ``quantize.embedding.weight``; drops ``loss.*`` (LPIPS and
    discriminator) and, when the network has no decoder, ``decoder.*`` and ``post_quant_conv.*``. An encoder-only
    file written by ``python -m dckd_basicsr.convert`` has the same names and loads too.
    """
    own = net.state_dict()
    has = {prefix: any(k.startswith(prefix) for k in own) for prefix in ('decoder.', 'post_quant_conv.', 'loss.')}
    conversion = Conversion()
    for key in tensors:
        prefix = key.split('.', 1)[0] + '.'
        if prefix in has and not has[prefix]:
            conversion.dropped[key] = 'training loss (LPIPS/discriminator)' if prefix == 'loss.' else \
                'decoder side of the VQGAN, unused by the encoder'
        else:
            conversion.take(key, key, tensors)
    return conversion
