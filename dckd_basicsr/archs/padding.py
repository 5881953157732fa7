"""Running a network on inputs whose size is no multiple of what it needs (SwinIR's window, Restormer's 8).

The input is reflect-padded at the bottom and right to the next multiple (replicate-padded when the padding would be
as large as the image, which reflection cannot do) and the output cropped back to ``scale`` times the input size:
validation and test (``val.pad_multiple``) and DUKD's zoom passes use the same rule.
"""
from typing import Callable

from torch import Tensor
from torch.nn import functional as F


def pad_bottom_right(x: Tensor, pad_h: int, pad_w: int) -> Tensor:
    """``x`` padded by ``pad_h`` rows at the bottom and ``pad_w`` columns at the right: reflect, or replicate where the
    padding is as large as the image (reflection cannot do that)."""
    height, width = x.shape[-2:]
    mode = 'reflect' if pad_h < height and pad_w < width else 'replicate'
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)


def padded_forward(net: Callable[[Tensor], Tensor], x: Tensor, multiple: int) -> Tensor:
    """``net(x)``, with ``x`` padded (bottom/right) to a multiple of ``multiple`` and the output cropped back."""
    height, width = x.shape[-2:]
    pad_h, pad_w = (-height) % multiple, (-width) % multiple
    if not (pad_h or pad_w):
        return net(x)
    output = net(pad_bottom_right(x, pad_h, pad_w))
    scale = output.size(-2) // (height + pad_h)
    return output[..., :height * scale, :width * scale]
