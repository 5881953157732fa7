"""Running a network on inputs whose size is no multiple of what it needs (SwinIR's window, Restormer's 8).

The input is reflect-padded at the bottom and right to the next multiple (replicate-padded when the padding would be
as large as the image, which reflection cannot do) and the output cropped back to ``scale`` times the input size.
Validation and test (``val.pad_multiple``), DUKD's zoom passes, ``dckd-infer`` and the graphs ``dckd-export`` writes
use this one rule; spandrel students pad to their size requirements as spandrel does (:func:`pad_as_spandrel`), which
differs only where the padding is as large as the image.

The rule is written with shape arithmetic only, so it also holds in traced and exported graphs with dynamic height
and width: ``torch.jit.trace`` records the padding amounts as functions of the input size, and ``torch.export``
(the ONNX exporter) with a height/width ``Dim(min=multiple)`` proves that the padding, at most ``multiple - 1``, is
smaller than the image, so the exported graph holds the reflect branch alone. An input that is already a multiple is
padded by zero rows and columns and its whole output kept, which gives the same values as running it directly.
"""
from typing import Callable

from torch import Tensor, nn
from torch.nn import functional as F


def pad_bottom_right(x: Tensor, pad_h: int, pad_w: int) -> Tensor:
    """``x`` padded by ``pad_h`` rows at the bottom and ``pad_w`` columns at the right: reflect, or replicate where the
    padding is as large as the image (reflection cannot do that)."""
    height, width = x.shape[-2:]
    mode = 'reflect' if pad_h < height and pad_w < width else 'replicate'
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)


def pad_as_spandrel(x: Tensor, pad_h: int, pad_w: int) -> Tensor:
    """``x`` padded by ``pad_h`` rows at the bottom and ``pad_w`` columns at the right as spandrel's inference pads
    an input to a model's size requirements: reflected as far as the image allows (its size - 1), the rest
    replicated. Where the padding is smaller than the image this is :func:`pad_bottom_right`; spandrel students pad
    this way so that the files ``dckd-export --to spandrel`` writes compute what they computed in training."""
    height, width = x.shape[-2:]
    reflect_h, reflect_w = min(pad_h, height - 1), min(pad_w, width - 1)
    x = F.pad(x, (0, reflect_w, 0, reflect_h), mode='reflect')
    if pad_h > reflect_h or pad_w > reflect_w:
        x = F.pad(x, (0, pad_w - reflect_w, 0, pad_h - reflect_h), mode='replicate')
    return x


def padded_forward(net: Callable[[Tensor], Tensor], x: Tensor, multiple: int) -> Tensor:
    """``net(x)``, with ``x`` padded (bottom/right) to a multiple of ``multiple`` and the output cropped back."""
    if multiple == 1:
        return net(x)
    height, width = x.shape[-2:]
    pad_h, pad_w = (-height) % multiple, (-width) % multiple
    output = net(pad_bottom_right(x, pad_h, pad_w))
    scale = output.size(-2) // (height + pad_h)
    return output[..., :height * scale, :width * scale]


class PaddedNetwork(nn.Module):
    """``net`` with the padding rule of :func:`padded_forward` inside, as one module to trace or export.

    Exported graphs keep height and width dynamic; they take inputs of at least ``multiple`` pixels per side (the
    size below which the rule switches to replicate padding).
    """

    def __init__(self, net: nn.Module, multiple: int):
        super().__init__()
        self.net = net
        self.multiple = int(multiple)

    def forward(self, x: Tensor) -> Tensor:
        return padded_forward(self.net, x, self.multiple)
