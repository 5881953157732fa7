"""Which network a bare checkpoint holds: the ``network_g`` block that rebuilds it, read from its keys and shapes.

``dckd-infer`` and ``dckd-export`` use this when no option file is given, so that a BasicSR ``net_g_<iter>.pth`` of a
student "just works". The layouts recognised are the BasicSR archs' and the plugin's own (the key names their
modules produce, as BasicSR saves them):

============  ====================================================================================================
``SwinIR``    BasicSR's ``SwinIR`` (also the official SwinIR key layout). Hyperparameters as ``dckd-convert`` infers
              them (spandrel's SwinIR detection), plus ``ape`` / ``patch_norm`` / ``qkv_bias`` from the keys.
``RCAN``      BasicSR's ``RCAN``: ``body.G.residual_group.B.rcab.3.attention.*``.
``EDSR``      BasicSR's ``EDSR``: ``body.I.conv{1,2}``, ``conv_after_body``, ``upsample.*``.
``MSRResNet`` BasicSR's ``MSRResNet``: ``body.I.conv{1,2}``, ``upconv1``, ``conv_hr``.
``NAFNet``    the plugin's ``NAFNet`` (also the official NAFNet layout); hyperparameters from spandrel's detection.
``Restormer`` the plugin's ``Restormer`` (also the official Restormer layout).
spandrel's    any architecture spandrel detects that the plugin registers as a student
              (:mod:`dckd_basicsr.archs.spandrel_students_arch`: SPAN, RealPLKSR, SAFMN, OmniSR, Compact, ESRGAN, ...),
              built from the hyperparameters spandrel reads and loaded with the weights as spandrel reads them (its
              canonical key layout, e.g. the old ESRGAN layout for BasicSR's ``RRDBNet`` keys).
============  ====================================================================================================

Some hyperparameters leave no trace in the weights (``img_range``, ``rgb_mean``, ``res_scale``, Restormer's
``pad_multiple``, the options spandrel assumes for its architectures): the detected block uses the BasicSR default
(spandrel's value) and lists it in :attr:`DetectedNetwork.assumed`, so
the command can print it; give the option file (``-opt``) when the student was trained with another value.
Official releases in other layouts (RCAN/EDSR as EDSR-PyTorch saves them) are converted first with ``dckd-convert``.
"""
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from spandrel.architectures.NAFNet import NAFNetArch
from spandrel.architectures.Swin2SR import Swin2SRArch
from spandrel.architectures.SwinIR import SwinIRArch
from spandrel.util import get_pixelshuffle_params, get_seq_len

from dckd_basicsr.archs.spandrel_students_arch import (REFUSED, REGISTERED, option_values,
                                                       options_from_hyperparameters, registered_type)
from dckd_basicsr.checkpoints.official_converters import swinir_options
from dckd_basicsr.errors import ConversionError, OptionError

StateDict = Mapping[str, torch.Tensor]


@dataclass
class DetectedNetwork:
    """A network recognised from its weights.

    Attributes:
        opt: The ``network_g`` block (with ``type``) that builds it, for ``basicsr.archs.build_network``.
        scale: Output size / input size.
        pad_multiple: Inputs are padded to a multiple of this before the network runs (SwinIR's window; 1 for
            networks that take any size or pad themselves), as validation's ``val.pad_multiple``.
        assumed: ``'name: value (why)'`` for each hyperparameter the weights do not determine.
        weights: The tensors to load into the built network when they differ from the file's (spandrel's reading of
            it: keys renamed to its canonical layout); None: the file's own.
    """
    opt: Dict[str, Any]
    scale: int
    pad_multiple: int = 1
    assumed: List[str] = field(default_factory=list)
    weights: Optional[Dict[str, torch.Tensor]] = None

    def describe(self) -> str:
        """One line: the block as it would appear in an option file, and what was assumed."""
        args = ', '.join(f'{k}: {v}' for k, v in self.opt.items() if k != 'type')
        text = f"{self.opt['type']} x{self.scale} ({args})"
        if self.assumed:
            text += '; not in the weights, assumed: ' + '; '.join(self.assumed)
        return text


def _has(state_dict: StateDict, *keys: str) -> bool:
    return all(key in state_dict for key in keys)


def _out_channels(state_dict: StateDict, key: str) -> int:
    return int(state_dict[key].shape[0])


def _in_channels(state_dict: StateDict, key: str) -> int:
    return int(state_dict[key].shape[1])


def _pixelshuffle_scale(state_dict: StateDict, prefix: str) -> int:
    scale, _ = get_pixelshuffle_params(state_dict, prefix)
    return scale


# ---------------------------------------------------------------------------------------------------------- SwinIR
def _is_swinir(state_dict: StateDict) -> bool:
    return SwinIRArch().detect(state_dict) and not Swin2SRArch().detect(state_dict)  # Swin2SR's keys pass SwinIR's


def _swinir(state_dict: StateDict) -> DetectedNetwork:
    opt = swinir_options(SwinIRArch().load(dict(state_dict)).model.hyperparameters)
    opt['qkv_bias'] = 'layers.0.residual_group.blocks.0.attn.qkv.bias' in state_dict
    opt['patch_norm'] = 'patch_embed.norm.weight' in state_dict
    opt['ape'] = 'absolute_pos_embed' in state_dict
    if opt['ape']:
        opt['img_size'] = math.isqrt(int(state_dict['absolute_pos_embed'].shape[1]))
    assumed = [f"img_range: {opt['img_range']:g} (spandrel's rule: 255 for window 7, else 1)"]
    if not any(key.endswith('attn_mask') for key in state_dict) and not opt['ape']:
        assumed.append(f"img_size: {opt['img_size']} (no shifted-window mask stored; it does not change the output)")
    if opt['upsampler'] == '':
        opt['upscale'] = 1
    return DetectedNetwork(opt, int(opt['upscale']), int(opt['window_size']), assumed)


# ------------------------------------------------------------------------------------------- RCAN, EDSR, MSRResNet
_MEAN_NOTE = 'rgb_mean: [0.4488, 0.4371, 0.404] (BasicSR default, DIV2K mean)'


def _is_rcan(state_dict: StateDict) -> bool:
    return _has(state_dict, 'conv_first.weight', 'conv_after_body.weight', 'conv_last.weight',
                'body.0.residual_group.0.rcab.3.attention.1.weight', 'upsample.0.weight')


def _rcan(state_dict: StateDict) -> DetectedNetwork:
    num_feat = _out_channels(state_dict, 'conv_first.weight')
    opt = {
        'type': 'RCAN',
        'num_in_ch': _in_channels(state_dict, 'conv_first.weight'),
        'num_out_ch': _out_channels(state_dict, 'conv_last.weight'),
        'num_feat': num_feat,
        'num_group': get_seq_len(state_dict, 'body'),
        'num_block': get_seq_len(state_dict, 'body.0.residual_group'),
        'squeeze_factor': num_feat // _out_channels(state_dict, 'body.0.residual_group.0.rcab.3.attention.1.weight'),
        'upscale': _pixelshuffle_scale(state_dict, 'upsample'),
    }
    assumed = ['img_range: 255 (BasicSR default)', 'res_scale: 1 (BasicSR default)', _MEAN_NOTE]
    return DetectedNetwork(opt, opt['upscale'], 1, assumed)


def _is_edsr(state_dict: StateDict) -> bool:
    return _has(state_dict, 'conv_first.weight', 'conv_after_body.weight', 'conv_last.weight', 'body.0.conv1.weight',
                'upsample.0.weight')


def _edsr(state_dict: StateDict) -> DetectedNetwork:
    opt = {
        'type': 'EDSR',
        'num_in_ch': _in_channels(state_dict, 'conv_first.weight'),
        'num_out_ch': _out_channels(state_dict, 'conv_last.weight'),
        'num_feat': _out_channels(state_dict, 'conv_first.weight'),
        'num_block': get_seq_len(state_dict, 'body'),
        'upscale': _pixelshuffle_scale(state_dict, 'upsample'),
    }
    assumed = ['img_range: 255 (BasicSR default)', 'res_scale: 1 (BasicSR default; the large EDSR uses 0.1)',
               _MEAN_NOTE]
    return DetectedNetwork(opt, opt['upscale'], 1, assumed)


def _is_msrresnet(state_dict: StateDict) -> bool:
    return _has(state_dict, 'conv_first.weight', 'body.0.conv1.weight', 'upconv1.weight', 'conv_hr.weight',
                'conv_last.weight')


def _msrresnet(state_dict: StateDict) -> DetectedNetwork:
    num_feat = _out_channels(state_dict, 'conv_first.weight')
    if 'upconv2.weight' in state_dict:
        upscale = 4
    else:
        upscale = math.isqrt(_out_channels(state_dict, 'upconv1.weight') // num_feat)
    opt = {
        'type': 'MSRResNet',
        'num_in_ch': _in_channels(state_dict, 'conv_first.weight'),
        'num_out_ch': _out_channels(state_dict, 'conv_last.weight'),
        'num_feat': num_feat,
        'num_block': get_seq_len(state_dict, 'body'),
        'upscale': upscale,
    }
    return DetectedNetwork(opt, upscale, 1, [])


# ------------------------------------------------------------------------------------------- NAFNet, Restormer
def _is_nafnet(state_dict: StateDict) -> bool:
    return NAFNetArch().detect(state_dict)


def _nafnet(state_dict: StateDict) -> DetectedNetwork:
    hyper = NAFNetArch().load(dict(state_dict)).model.hyperparameters
    opt = {'type': 'NAFNet'}
    opt.update((key, hyper[key]) for key in ('img_channel', 'width', 'middle_blk_num', 'enc_blk_nums', 'dec_blk_nums'))
    # NAFNet zero-pads to a multiple of 2**levels inside its forward; nothing to pad outside.
    return DetectedNetwork(opt, 1, 1, [])


def _is_restormer(state_dict: StateDict) -> bool:
    return _has(state_dict, 'patch_embed.proj.weight', 'encoder_level1.0.attn.temperature', 'latent.0.attn.qkv.weight',
                'refinement.0.attn.temperature', 'output.weight')


def _expansion_factor(hidden: Sequence[Tuple[int, int]]) -> float:
    """The ``ffn_expansion_factor`` f with ``int(dim * f) == hidden`` for every (dim, hidden) pair, as a short
    decimal (2.66 for the official Restormer)."""
    low = max(h / d for d, h in hidden)
    high = min((h + 1) / d for d, h in hidden)
    for decimals in range(7):
        candidate = math.ceil(low * 10**decimals - 1e-9) / 10**decimals
        if candidate < high and all(int(d * candidate) == h for d, h in hidden):
            return candidate
    return (low + high) / 2


def _restormer(state_dict: StateDict) -> DetectedNetwork:
    dim = _out_channels(state_dict, 'patch_embed.proj.weight')
    levels = ('encoder_level1', 'encoder_level2', 'encoder_level3', 'latent')
    hidden = [(_out_channels(state_dict, f'{name}.0.ffn.project_out.weight'),
               _in_channels(state_dict, f'{name}.0.ffn.project_out.weight'))
              for name in levels + ('refinement', )]
    opt = {
        'type': 'Restormer',
        'inp_channels': _in_channels(state_dict, 'patch_embed.proj.weight'),
        'out_channels': _out_channels(state_dict, 'output.weight'),
        'dim': dim,
        'num_blocks': [get_seq_len(state_dict, name) for name in levels],
        'num_refinement_blocks': get_seq_len(state_dict, 'refinement'),
        'heads': [int(state_dict[f'{name}.0.attn.temperature'].shape[0]) for name in levels],
        'ffn_expansion_factor': _expansion_factor(hidden),
        'bias': 'patch_embed.proj.bias' in state_dict,
        'LayerNorm_type': 'WithBias' if 'encoder_level1.0.norm1.body.bias' in state_dict else 'BiasFree',
        'dual_pixel_task': 'skip_conv.weight' in state_dict,
    }
    # Restormer pads itself (pad_multiple, default 8) inside its forward.
    return DetectedNetwork(opt, 1, 1, ['pad_multiple: 8 (the arch default; padding happens inside the network)'])


# ------------------------------------------------------------------------------------------- spandrel's architectures
def _is_spandrel(state_dict: StateDict) -> bool:
    from spandrel import MAIN_REGISTRY, canonicalize_state_dict
    canonical = canonicalize_state_dict(dict(state_dict))
    return any(support.detect(canonical) for support in MAIN_REGISTRY.architectures('detection'))


def _spandrel(state_dict: StateDict) -> DetectedNetwork:
    from spandrel import MAIN_REGISTRY
    try:
        descriptor = MAIN_REGISTRY.load(dict(state_dict))
    except Exception as error:  # noqa: B902  (any failure of spandrel's loader)
        first = (str(error).strip().splitlines() or [''])[0][:200]
        raise ConversionError(f'spandrel detects an architecture in its keys but cannot load them '
                              f'({type(error).__name__}: {first}); give the network with -opt FILE.') from error
    name = registered_type(descriptor.model)
    if name is None:
        arch_id = str(descriptor.architecture.id)
        reason = REFUSED.get(arch_id, 'the plugin does not register it as a student')
        raise ConversionError(f'spandrel detects a {arch_id} ({type(descriptor.model).__name__}), which cannot be run '
                              f'as a student here: {reason}.')
    arch = REGISTERED[name]
    hyperparameters = descriptor.model.hyperparameters
    opt = options_from_hyperparameters(name, hyperparameters)
    assumed = [f"{key}: {hyperparameters[key]} (spandrel's value)" for key in arch.unread if key in hyperparameters]
    multiple = arch.size_requirements(option_values(arch, opt))[1]
    return DetectedNetwork(opt, int(descriptor.scale), multiple, assumed, dict(descriptor.model.state_dict()))


# Asked in this order; the first whose detector accepts the keys builds the block. RCAN before EDSR (both have
# conv_after_body and upsample; only RCAN has residual groups); spandrel's architectures last (its SwinIR and NAFNet
# detection also accepts the keys of the plugin's SwinIR and NAFNet, which keep their own names).
DETECTORS: List[Tuple[str, Callable[[StateDict], bool], Callable[[StateDict], DetectedNetwork]]] = [
    ('SwinIR', _is_swinir, _swinir),
    ('RCAN', _is_rcan, _rcan),
    ('EDSR', _is_edsr, _edsr),
    ('MSRResNet', _is_msrresnet, _msrresnet),
    ('NAFNet', _is_nafnet, _nafnet),
    ('Restormer', _is_restormer, _restormer),
    ('spandrel architecture', _is_spandrel, _spandrel),
]


def detect_network(state_dict: StateDict, source: Optional[str] = None) -> DetectedNetwork:
    """The network whose weights ``state_dict`` holds (keys as BasicSR saves them, ``module.`` prefixes removed).

    Args:
        state_dict: The tensors.
        source: The file they come from, for the error message.

    Raises:
        OptionError: no layout in :data:`DETECTORS` fits; the message names the file and its first keys.
    """
    for name, accepts, build in DETECTORS:
        if accepts(state_dict):
            try:
                return build(state_dict)
            except ConversionError as error:  # a layout BasicSR's arch cannot hold
                raise OptionError(f'{source or "the checkpoint"}: {error}') from error
            except (KeyError, IndexError, ValueError, ZeroDivisionError) as error:
                if isinstance(error, OptionError):
                    raise
                raise OptionError(f'{source or "the checkpoint"}: its keys look like a {name} but its shapes do not '
                                  f'fit one ({type(error).__name__}: {error}); give the network with -opt FILE.') \
                    from error
    keys = list(state_dict)
    shown = ', '.join(keys[:6]) + (f', ... ({len(keys)} keys)' if len(keys) > 6 else '')
    known = ', '.join(name for name, _, _ in DETECTORS[:-1])
    raise OptionError(f'{source or "the checkpoint"}: cannot tell the network from its keys ({shown}); the layouts '
                      f'detected are BasicSR/plugin {known} and the spandrel architectures registered as students. '
                      'Give the network with -opt FILE (its network_g block), or convert an official release first '
                      'with dckd-convert.')
