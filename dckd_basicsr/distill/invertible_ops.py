"""Invertible augmentations for label-consistency regularization (DUKD, Zhang et al. 2023; DCKD* uses them too).

Per sample and per op, with probability ``prob``: colour inversion (``1 - x``), vertical flip, horizontal flip and
transpose, in that order; :func:`undo_invertible_ops` maps an output back by the inverse ops in reverse order.
"""
from typing import Dict, Optional

import torch
from torch import Tensor

Generator = Optional[torch.Generator]


INVERTIBLE_OPS = ('invert', 'vflip', 'hflip', 'transpose')


def random_invertible_ops(x: Tensor, prob: float, generator: Generator = None) -> Dict[str, Tensor]:
    """Per-sample masks (B, 1, 1, 1) saying which of :data:`INVERTIBLE_OPS` apply to ``x``, each with ``prob``."""
    batch = x.size(0)
    device = x.device if generator is None else generator.device
    return {name: (torch.rand(batch, generator=generator, device=device) < prob).view(batch, 1, 1, 1)
            for name in INVERTIBLE_OPS}


def _apply_op(x: Tensor, name: str, mask: Tensor) -> Tensor:
    if name == 'invert':
        changed = 1 - x
    elif name == 'vflip':
        changed = x.flip(-2)
    elif name == 'hflip':
        changed = x.flip(-1)
    else:
        if x.size(-1) != x.size(-2):
            raise ValueError(f'the transpose op needs square images, got {x.size(-2)}x{x.size(-1)}.')
        changed = x.transpose(-1, -2)
    return torch.where(mask, changed, x)


def apply_invertible_ops(x: Tensor, masks: Dict[str, Tensor]) -> Tensor:
    for name in INVERTIBLE_OPS:
        x = _apply_op(x, name, masks[name])
    return x


def undo_invertible_ops(y: Tensor, masks: Dict[str, Tensor]) -> Tensor:
    """Inverse of :func:`apply_invertible_ops`: each op is its own inverse, applied in reverse order."""
    for name in reversed(INVERTIBLE_OPS):
        y = _apply_op(y, name, masks[name])
    return y
