"""The checkpoint formats that keep the network's own names, and ``spandrel``, each registered with its detector.

``spandrel``
    Any checkpoint whose architecture spandrel detects (HAT, DAT, ATD, SwinIR, RCAN, SPAN, NAFNet, ...: the
    installed spandrel's ``MAIN_REGISTRY``), ``.pth`` or ``.safetensors``, into a
    :class:`~dckd_basicsr.archs.spandrel_arch.SpandrelTeacher`, which spandrel builds from the tensors.
``basicsr``
    BasicSR files ``{'params': ..., 'params_ema': ...}`` (``experiments/<name>/models/net_g_<iter>.pth``), names as in
    the network. The official NAFNet (megvii-research/NAFNet, e.g. ``NAFNet-GoPro-width32.pth``) and Restormer
    (swz30/Restormer, e.g. ``motion_deblurring.pth``, ``deraining.pth``) releases are BasicSR files too: their keys
    are the official archs' module names (``intro``, ``encoders.I.J.sca.1``, ``beta``, ``gamma``, ``ups``, ``downs``,
    ``ending`` / ``patch_embed.proj``, ``encoder_levelN.I.attn.temperature``, ``down1_2.body.0``,
    ``reduce_chan_levelN``, ``refinement``, ``output``), which ``nafnet_arch.py`` and ``restormer_arch.py`` keep.
``state_dict``
    Raw ``torch.save(net.state_dict())`` files and ``{'state_dict' | 'model' | ...: ...}`` wrappers, names as in the
    network.

``basicsr`` and ``state_dict`` have no detector: ``auto`` falls back to them when no detector recognises the file.
The official RCAN, EDSR and SwinIR releases have their converters in :mod:`.official_converters`, the
taming-transformers VQGAN in :mod:`.taming_converter`.
"""
from typing import Any, Dict, Mapping, Optional

import torch
from torch import nn

from dckd_basicsr.checkpoints.registry import Conversion, register_converter
from dckd_basicsr.errors import ConversionError


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
    """BasicSR files (``params`` / ``params_ema``), the official NAFNet and Restormer releases among them: names
    already match; unwrapping did the rest."""
    conversion = Conversion()
    for key in state_dict:
        conversion.take(key, key, state_dict)
    return conversion


@register_converter()
def state_dict(state_dict: Dict[str, torch.Tensor], net: nn.Module) -> Conversion:  # noqa: F811  (format name)
    """Raw state dicts and ``{'state_dict': ...}`` / ``{'model': ...}`` wrappers, names as in the network."""
    return basicsr(state_dict, net)
