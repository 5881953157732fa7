"""Mixed precision of a training step (``train.fast.amp`` and ``train.fast.autocast``).

:class:`MixedPrecision` gives the two autocast regions of a step: the whole step (the student's forward pass and the
loss computation, under ``amp``) and the frozen networks (teacher, history model, VQGAN encoder, under ``autocast``).
It also owns the backward pass and the optimizer step, because under ``amp: fp16`` both go through
``torch.amp.GradScaler``: fp16 gradients underflow without loss scaling, while bf16 has fp32's range and needs none.
Weights, EMA, history model and optimizer state stay fp32 whatever the precision.
"""
import contextlib
import warnings
from typing import Optional

import torch
from basicsr.utils import get_root_logger
from torch import Tensor

AUTOCAST_DTYPES = {'bf16': torch.bfloat16, 'fp16': torch.float16}


def fp16_supported(device: torch.device) -> bool:
    """Whether ``torch.autocast`` runs fp16 on ``device`` (torch warns and disables it where it does not)."""
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        with torch.autocast(device_type=device.type, dtype=torch.float16):
            return torch.is_autocast_enabled(device.type) and torch.get_autocast_dtype(device.type) == torch.float16


class MixedPrecision:
    """The precision settings of one model's steps.

    Args:
        amp: Precision of the whole step (``bf16``, ``fp16``) or None (fp32).
        autocast: Precision of the frozen networks or None (fp32).
        device: Device the model runs on.

    Attributes:
        scaler: The GradScaler (enabled under ``amp: fp16`` only; disabled, it is a no-op).
        overflow: Whether the last optimizer step was skipped by the scaler (fp16 gradient overflow).
    """

    def __init__(self, amp: Optional[str], autocast: Optional[str], device: torch.device):
        self.amp = amp
        self.autocast = autocast
        self.device = device
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp == 'fp16')
        self.overflow = False

    def step_autocast(self) -> contextlib.AbstractContextManager:
        """Autocast for the whole step (``train.fast.amp``): a no-op unless it is set."""
        if self.amp is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=AUTOCAST_DTYPES[self.amp])

    def frozen_autocast(self) -> contextlib.AbstractContextManager:
        """Autocast for the frozen networks (``train.fast.autocast``, implied by ``amp``); without it, a no-op, or,
        inside the ``amp`` region, autocast switched off."""
        if self.autocast is None:
            if self.amp is None:
                return contextlib.nullcontext()
            return torch.autocast(device_type=self.device.type, enabled=False)
        return torch.autocast(device_type=self.device.type, dtype=AUTOCAST_DTYPES[self.autocast])

    def backward(self, loss: Tensor) -> None:
        """``loss.backward()``, on the loss scaled by the GradScaler under ``amp: fp16``."""
        self.overflow = False
        (self.scaler.scale(loss) if self.scaler.is_enabled() else loss).backward()

    def optimizer_step(self, optimizer: torch.optim.Optimizer) -> bool:
        """``optimizer.step()``, through the GradScaler under ``amp: fp16``: gradients that overflowed in fp16 make
        the scaler skip the step and lower its scale (not a non-finite loss: the loss values were finite). Returns
        whether the step was taken (also in :attr:`overflow`)."""
        if not self.scaler.is_enabled():
            optimizer.step()
            self.overflow = False
            return True
        scale = self.scaler.get_scale()
        self.scaler.step(optimizer)
        self.scaler.update()
        self.overflow = self.scaler.get_scale() < scale
        if self.overflow:
            get_root_logger().debug(f'fp16 gradients overflowed: optimizer step skipped, loss scale {scale} -> '
                                    f'{self.scaler.get_scale()}.')
        return not self.overflow

    def rescale_kept_gradients(self, optimizer: torch.optim.Optimizer) -> None:
        """After :meth:`optimizer_step`, make the unscaled gradients it left fit the next scaled backward pass (DUKD
        adds step 2's gradients to step 1's): multiply them by the current scale, which the next step divides out."""
        if not self.scaler.is_enabled():
            return
        scale = self.scaler.get_scale()
        for group in optimizer.param_groups:
            for param in group['params']:
                if param.grad is not None:
                    param.grad.mul_(scale)
