"""The checkpoint formats ``load_pretrained`` converts, each registered with its detector (see :mod:`.registry`).

``spandrel``
    Any checkpoint whose architecture spandrel detects (HAT, DAT, ATD, SwinIR, RCAN, SPAN, NAFNet, ...: the
    installed spandrel's ``MAIN_REGISTRY``), ``.pth`` or ``.safetensors``, into a
    :class:`~dckd_basicsr.archs.spandrel_arch.SpandrelTeacher`, which spandrel builds from the tensors.
``basicsr``
    BasicSR files ``{'params': ..., 'params_ema': ...}`` (``experiments/<name>/models/net_g_<iter>.pth``), names as in
    the network. The official NAFNet (megvii-research/NAFNet, e.g. ``NAFNet-GoPro-width32.pth``) and Restormer
    (swz30/Restormer, e.g. ``motion_deblurring.pth``, ``deraining.pth``) releases are BasicSR files too.
``state_dict``
    Raw ``torch.save(net.state_dict())`` files and ``{'state_dict' | 'model' | ...: ...}`` wrappers, names as in the
    network.
``rcan_official``
    RCAN (yulunzhang/RCAN: ``RCAN_BIX2.pt``, ``RCAN_BIX3.pt``, ``RCAN_BIX4.pt``; EDSR-PyTorch naming) into BasicSR's
    ``RCAN``; detected by spandrel's RCAN detector, network options inferred from spandrel's reading of the file.
``edsr_official``
    EDSR-PyTorch (sanghyun-son/EDSR-PyTorch: ``edsr_x{2,3,4}-*.pt``, ``edsr_baseline_x{2,3,4}-*.pt``) into BasicSR's
    ``EDSR`` (spandrel has no EDSR; the options are inferred here, with spandrel's key-reading helpers).
``swinir_official``
    SwinIR (JingyunLiang/SwinIR releases: ``001_classicalSR_DIV2K_s48w8_SwinIR-M_x{2,3,4}.pth``,
    ``002_lightweightSR_DIV2K_s64w8_SwinIR-S_x2.pth``, ``003_realSR_BSRGAN_DFO_s64w8_SwinIR-M_x4_GAN.pth``, ...) into
    BasicSR's ``SwinIR``; network options inferred from spandrel's reading of the file.
``taming``
    taming-transformers VQGAN (CompVis/taming-transformers: the Lightning checkpoint
    ``vqgan_imagenet_f16_1024/checkpoints/last.ckpt``) into the plugin's ``VQGANEncoder``. An encoder-only BasicSR
    file written by ``dckd-convert`` has the same names and is read as ``basicsr``.

``basicsr`` and ``state_dict`` have no detector: ``auto`` falls back to them when no detector recognises the file.

Why the official-release converters stay although spandrel loads those releases: spandrel builds *its own* copy of
each architecture, while these converters fill BasicSR's ``RCAN`` / ``EDSR`` / ``SwinIR`` (the BasicSR teacher route,
the authors' option files, FAKD's default layer names, the golden tests and ``dckd-convert``'s output need those).
What spandrel does that these did by hand is used instead: RCAN detection, and the RCAN and SwinIR hyperparameters
``dckd-convert`` infers. A teacher of any other architecture needs no converter: ``network_t: {type: SpandrelTeacher}``.
"""
import math
import re
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from dckd_basicsr.checkpoints.registry import Conversion, ConversionError, register_converter


def _is_spandrel_teacher(tensors: Mapping[str, torch.Tensor], net: Optional[nn.Module], wrapper: Optional[str]) -> bool:
    return net is not None and callable(getattr(net, 'load_spandrel_state_dict', None))


@register_converter(detect=_is_spandrel_teacher, priority=1000)
def spandrel(tensors: Dict[str, torch.Tensor], net: nn.Module) -> Conversion:
    """Any architecture spandrel detects, built by spandrel from the tensors into a ``SpandrelTeacher``
    (:meth:`~dckd_basicsr.archs.spandrel_arch.SpandrelTeacher.load_spandrel_state_dict`); the network's tensors come
    back under ``model.``, checkpoint keys spandrel's network does not use are reported as dropped."""
    if not _is_spandrel_teacher(tensors, net, None):
        raise ConversionError(f"format 'spandrel' builds the network from the checkpoint and needs network type "
                              f'SpandrelTeacher, but the network is {type(net).__name__}; set type: SpandrelTeacher '
                              'or choose another format.')
    net.load_spandrel_state_dict(tensors)
    conversion = Conversion()
    used = net.model.state_dict()
    for key, value in used.items():
        conversion.state_dict[f'model.{key}'] = value
        conversion.sources[f'model.{key}'] = key
    for key in tensors:
        if key not in used:
            conversion.dropped[key] = f'not a tensor of spandrel\'s {net.architecture} (renamed or unused by it)'
    return conversion


def spandrel_hyperparameters(architecture: str, tensors: Mapping[str, torch.Tensor], fmt: str) -> Dict[str, Any]:
    """The hyperparameters spandrel's ``architecture`` loader reads from ``tensors`` (it builds the network once)."""
    from spandrel import MAIN_REGISTRY
    try:
        model = MAIN_REGISTRY[architecture].architecture.load(dict(tensors)).model
    except Exception as error:  # noqa: B902  (the loader's KeyError/RuntimeError on tensors it does not expect)
        raise ConversionError(f"format '{fmt}': spandrel's {architecture} loader cannot read this checkpoint "
                              f'({type(error).__name__}: {error}).') from error
    return dict(model.hyperparameters)


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


def _is_rcan_official(tensors: Mapping[str, torch.Tensor], net: Optional[nn.Module], wrapper: Optional[str]) -> bool:
    from spandrel import MAIN_REGISTRY
    return MAIN_REGISTRY['RCAN'].detect(tensors)


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


def _infer_rcan(tensors: Mapping[str, torch.Tensor]) -> Dict[str, Any]:
    """BasicSR ``RCAN`` options of an official RCAN file, from spandrel's RCAN loader."""
    params = spandrel_hyperparameters('RCAN', tensors, 'rcan_official')
    _check_basicsr_rcan(params)
    return dict(type='RCAN', num_in_ch=params['n_colors'], num_out_ch=params['n_colors'], num_feat=params['n_feats'],
                num_group=params['n_resgroups'], num_block=params['n_resblocks'], squeeze_factor=params['reduction'],
                upscale=params['scale'], **_mean_options(tensors, 'rcan_official'))


def _check_basicsr_rcan(params: Mapping[str, Any]) -> None:
    differences = [what for what, differs in (
        ('a pixel-unshuffle head (head.1)', params.get('unshuffle_mod')),
        (f"kernel size {params.get('kernel_size')}", params.get('kernel_size', 3) != 3),
    ) if differs]
    if differences:
        raise ConversionError(f"this RCAN has {' and '.join(differences)}, which BasicSR's RCAN does not; load it as a "
                              'teacher with network_t: {type: SpandrelTeacher} instead.')


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


@register_converter(detect=_is_rcan_official, priority=310, infer=_infer_rcan)
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
    if 'head.1.weight' in tensors and 'head.0.weight' not in tensors:
        _check_basicsr_rcan({'unshuffle_mod': True})
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


@register_converter(detect=_is_edsr_official, priority=300, infer=_infer_edsr)
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


def _is_swinir_official(tensors: Mapping[str, torch.Tensor], net: Optional[nn.Module], wrapper: Optional[str]) -> bool:
    """SwinIR keys, and a network with ``patch_embed`` (any network when there is none yet: ``dckd-convert``
    inferring it)."""
    return any(k.endswith('relative_position_bias_table') for k in tensors) and (net is None
                                                                               or hasattr(net, 'patch_embed'))


# SwinIR options that spandrel's loader reads from the file (the rest are training-only: dropout, drop path, ape
# is off in every release, patch_size 1).
SWINIR_OPTIONS = ('img_size', 'in_chans', 'embed_dim', 'depths', 'num_heads', 'window_size', 'mlp_ratio', 'upscale',
                  'img_range', 'upsampler', 'resi_connection')


def _infer_swinir(tensors: Mapping[str, torch.Tensor]) -> Dict[str, Any]:
    """BasicSR ``SwinIR`` options of an official SwinIR file, from spandrel's SwinIR loader (``img_size`` from the
    shifted blocks' ``attn_mask``, 64 when none; ``img_range`` 255 for window 7, the JPEG releases, else 1)."""
    params = spandrel_hyperparameters('SwinIR', tensors, 'swinir_official')
    if params.get('start_unshuffle', 1) != 1:
        raise ConversionError("this SwinIR starts with a pixel unshuffle (conv_first.1), which BasicSR's SwinIR does "
                              'not; load it as a teacher with network_t: {type: SpandrelTeacher} instead.')
    options = {'type': 'SwinIR'}
    for key in SWINIR_OPTIONS:
        value = params[key]
        options[key] = [int(v) for v in value] if key in ('depths', 'num_heads') else value
    options['mlp_ratio'] = float(options['mlp_ratio'])
    options['img_range'] = float(options['img_range'])
    return options


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


TAMING_DROPPABLE = ('decoder', 'post_quant_conv', 'loss')


def _is_taming(tensors: Mapping[str, torch.Tensor], net: Optional[nn.Module], wrapper: Optional[str]) -> bool:
    """taming's names; in a BasicSR ``params`` file (e.g. an encoder written by ``dckd-convert``) only when it holds
    decoder or loss tensors to drop: otherwise the file is what ``basicsr`` reads."""
    if not ('quantize.embedding.weight' in tensors or any(k.startswith('encoder.conv_in.') for k in tensors)):
        return False
    return wrapper not in ('params', 'params_ema') or any(k.split('.', 1)[0] in TAMING_DROPPABLE for k in tensors)


@register_converter(detect=_is_taming, priority=400)
def taming(tensors: Dict[str, torch.Tensor], net: nn.Module) -> Conversion:
    """taming-transformers VQGAN (Lightning ``state_dict``) into the plugin's VQGAN encoder.

    Keeps ``encoder.*``, ``quant_conv.*`` and ``quantize.embedding.weight``; drops ``loss.*`` (LPIPS and
    discriminator) and, when the network has no decoder, ``decoder.*`` and ``post_quant_conv.*``. An encoder-only
    file written by ``dckd-convert`` has the same names and loads too (``auto`` reads it as ``basicsr``).
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
