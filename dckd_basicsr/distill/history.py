"""The history model of Dynamic Contrastive Regularization (DCKD, Sec. "Dynamic Contrastive Regularization").

A frozen copy of the student whose weights trail the student's: every ``s`` iterations,
``theta_his <- alpha * theta_his + (1 - alpha) * theta_src`` with ``alpha = update_decay`` (0.1 in the paper) and
``theta_src`` the EMA student (the student itself when EMA is off). The interval ``s`` is ``step[(iter - 1) // span]``
with ``span = 100000`` iterations (``step: [1000, 2000, 3000]`` in the authors' options); unlike the authors' code,
the index is clamped to the last entry, so training past ``len(step) * span`` iterations keeps the last interval.
The update runs after the optimizer step and the EMA update, as in the authors' code.

The authors average ``named_parameters`` only (and start the history model as a fresh network given the EMA's
parameters); here floating-point buffers are averaged too and integer buffers copied. For the students of this
package (SwinIR, RCAN, NAFNet, Restormer) the buffers are constants equal in both networks, so the two agree; for a
student with running statistics (batch norm) the history model's statistics trail the source's instead of staying at
their initial values.
"""
from typing import Sequence

import torch
from torch import nn

from dckd_basicsr.errors import OptionError


@torch.no_grad()
def update_history(history: nn.Module, source: nn.Module, decay: float) -> None:
    """``theta_his <- decay * theta_his + (1 - decay) * theta_src`` for parameters and floating-point buffers.

    Integer buffers (e.g. SwinIR's ``relative_position_index``) are copied from ``source``.
    """
    source_state = source.state_dict()
    for name, tensor in history.state_dict().items():
        value = source_state[name]
        if tensor.is_floating_point():
            tensor.mul_(decay).add_(value.to(tensor.dtype), alpha=1 - decay)
        else:
            tensor.copy_(value)


class HistorySchedule:
    """When to update the history model.

    Args:
        steps: Update intervals, one per ``span`` iterations (the authors' ``step``). Default: [1000, 2000, 3000].
        span: Iterations each interval lasts. Default: 100000.
    """

    def __init__(self, steps: Sequence[int] = (1000, 2000, 3000), span: int = 100000):
        steps = [int(s) for s in ([steps] if isinstance(steps, int) else steps)]
        if not steps or any(s < 1 for s in steps):
            raise OptionError(f'train.step: {steps}; give positive update intervals, e.g. [1000, 2000, 3000].')
        if span < 1:
            raise OptionError(f'train.step_span: {span}; it must be a positive number of iterations.')
        self.steps = steps
        self.span = int(span)

    def interval(self, current_iter: int) -> int:
        """Update interval in force at ``current_iter`` (1-based), the last one past the end of the list."""
        index = min(max(current_iter - 1, 0) // self.span, len(self.steps) - 1)
        return self.steps[index]

    def should_update(self, current_iter: int) -> bool:
        return current_iter % self.interval(current_iter) == 0
