"""The ``taming`` format: the taming-transformers VQGAN (CompVis/taming-transformers: the Lightning checkpoint
``vqgan_imagenet_f16_1024/checkpoints/last.ckpt``) into the plugin's ``VQGANEncoder``.

An encoder-only BasicSR file written by ``dckd-convert`` has the same names and is read as ``basicsr``.
"""
from typing import Dict, Mapping, Optional

import torch
from torch import nn

from dckd_basicsr.checkpoints.registry import Conversion, register_converter

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
