"""Frozen networks (teacher, history model, VQGAN encoder) and the ``train.fast`` settings that speed them up.

A frozen network is in eval mode with ``requires_grad`` off, is never wrapped in DDP, never in the optimizer and never
in the EMA. :class:`FastSettings` reads ``train.fast``: ``autocast`` (``bf16``/``fp16``) and ``channels_last`` apply
to the frozen networks only (the student, the losses and the code logits of Eq. 8 stay fp32), and DCKD adds
``negatives_per_pass``.
"""
import contextlib
from typing import Any, Dict, Optional, Sequence

import torch
from torch import Tensor, nn

from dckd_basicsr.errors import OptionError

AUTOCAST_DTYPES = {'bf16': torch.bfloat16, 'fp16': torch.float16}


def freeze(net: nn.Module) -> nn.Module:
    """Eval mode and no gradients: the state of every frozen network."""
    net.eval()
    net.requires_grad_(False)
    return net


class FastSettings:
    """``train.fast`` of one model, checked when the model is built.

    Args:
        fast: The ``train.fast`` mapping (None or empty: exact fp32, the default).
        known: The keys the model understands (``autocast`` and ``channels_last`` always; DCKD adds
            ``negatives_per_pass``).
        device: Device the frozen networks run on.
        model: Model class name, for messages.
    """

    def __init__(self, fast: Optional[Dict[str, Any]], known: Sequence[str], device: torch.device, model: str):
        fast = fast or {}
        if not isinstance(fast, dict):
            raise OptionError(f'train.fast: {fast!r}; give a mapping, e.g. {{autocast: bf16, channels_last: true}}.')
        unknown = sorted(set(fast) - set(known))
        if unknown:
            raise OptionError(f'train.fast.{unknown[0]}: unknown key; {model} knows {", ".join(known)}.')
        autocast = fast.get('autocast') or None
        if autocast is not None and autocast not in AUTOCAST_DTYPES:
            raise OptionError(f'train.fast.autocast: {autocast!r}; use bf16, fp16 or false.')
        self.options = dict(fast, autocast=autocast, channels_last=bool(fast.get('channels_last', False)))
        self.device = device

    def get(self, key: str, default: Any = None) -> Any:
        return self.options.get(key, default)

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast for the frozen networks (a no-op unless ``train.fast.autocast`` is set)."""
        name = self.options['autocast']
        if name is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=AUTOCAST_DTYPES[name])

    def input(self, x: Tensor) -> Tensor:
        """``x`` in the frozen networks' memory format (channels_last with ``train.fast.channels_last``)."""
        return x.contiguous(memory_format=torch.channels_last) if self.options['channels_last'] else x

    def prepare(self, net: nn.Module) -> nn.Module:
        """Convert a frozen network to channels_last once, when ``train.fast.channels_last`` asks for it."""
        if self.options['channels_last'] and not getattr(net, '_dckd_channels_last', False):
            net.to(memory_format=torch.channels_last)
            net._dckd_channels_last = True
        return net

    def run(self, net: nn.Module, x: Tensor) -> Tensor:
        """A frozen network's forward without gradient, under :meth:`autocast`; fp32, contiguous output."""
        with torch.no_grad(), self.autocast():
            out = net(self.input(x))
        return out.float().contiguous()
