"""The frozen networks of a distillation run: the teacher, DCKD's history model and the VQGAN encoder.

A frozen network is in eval mode with ``requires_grad`` off (:func:`freeze`), is never wrapped in DDP, never in the
optimizer and never in the EMA. :class:`FrozenNetworks` runs them under the ``train.fast`` settings that concern
them: their autocast precision and, with ``train.fast.channels_last``, channels_last weights and inputs.
"""
import torch
from torch import Tensor, nn

from dckd_basicsr.training.precision import MixedPrecision


def freeze(net: nn.Module) -> nn.Module:
    """Eval mode and no gradients: the state of every frozen network."""
    net.eval()
    net.requires_grad_(False)
    return net


class FrozenNetworks:
    """How one model runs its frozen networks.

    Args:
        precision: The model's precision settings (the frozen networks use its :meth:`frozen_autocast`).
        channels_last: Convert the networks and their inputs to channels_last memory format.
    """

    def __init__(self, precision: MixedPrecision, channels_last: bool = False):
        self.precision = precision
        self.channels_last = channels_last

    def input(self, x: Tensor) -> Tensor:
        """``x`` in the frozen networks' memory format (channels_last with ``train.fast.channels_last``)."""
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def prepare(self, net: nn.Module) -> nn.Module:
        """Convert a frozen network to channels_last once, when ``train.fast.channels_last`` asks for it."""
        if self.channels_last and not getattr(net, '_dckd_channels_last', False):
            net.to(memory_format=torch.channels_last)
            net._dckd_channels_last = True
        return net

    def run(self, net: nn.Module, x: Tensor) -> Tensor:
        """A frozen network's forward without gradient, in the frozen networks' precision; fp32, contiguous
        output."""
        with torch.no_grad(), self.precision.frozen_autocast():
            out = net(self.input(x))
        return out.float().contiguous()
