"""Steps with a NaN or infinite loss term: skipped, logged, and the run stopped after ``train.max_nonfinite_steps``.

A skipped step updates nothing (no optimizer step, no EMA, no history update; the learning-rate scheduler still
counts the iteration). Under DDP the finiteness flags are all-reduced, so every rank skips the same steps and the
replicas stay identical. After ``train.max_nonfinite_steps`` consecutive skipped steps (default 10; 0 never stops)
training stops with :class:`~dckd_basicsr.errors.NonFiniteLossError`.

Under ``train.fast.amp: fp16`` the GradScaler skips, on its own, the steps whose fp16 *gradients* overflowed and
lowers its loss scale (:meth:`dckd_basicsr.training.precision.MixedPrecision.optimizer_step`); their loss values are
finite, so they are not counted here. A loss term that is NaN or infinite still is, whatever the precision.
"""
from typing import Dict, List, Mapping

import torch
from basicsr.utils import get_root_logger
from torch import Tensor

from dckd_basicsr.errors import NonFiniteLossError, OptionError


def nonfinite_limit(train_opt: Dict) -> int:
    """``train.max_nonfinite_steps``: consecutive steps with a NaN/Inf loss before training stops (default 10,
    0 never stops)."""
    limit = train_opt.get('max_nonfinite_steps', 10)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise OptionError(f'train.max_nonfinite_steps: {limit!r}; give a number of steps >= 0 (0 never stops).')
    return limit


def nonfinite_terms(losses: Mapping[str, Tensor], distributed: bool) -> List[str]:
    """Names of the terms that are NaN or infinite (on any rank when ``distributed``)."""
    flags = torch.stack([~torch.isfinite(value.detach()).all() for value in losses.values()]).float()
    if distributed:
        torch.distributed.all_reduce(flags)
    return [name for name, flag in zip(losses, flags.tolist()) if flag > 0]


class NonFiniteSteps:
    """Counts consecutive skipped steps of one run and stops it at the limit.

    Args:
        train_opt: The ``train`` options (``max_nonfinite_steps``).
    """

    def __init__(self, train_opt: Dict):
        self.limit = nonfinite_limit(train_opt)
        self.in_a_row = 0

    def reset(self) -> None:
        """A step was taken."""
        self.in_a_row = 0

    def skipped(self, current_iter: int, values: str, skipped_updates: str) -> None:
        """Log a skipped step (``values``: the offending terms and values, ``skipped_updates``: what was not
        updated); raise once the limit is reached."""
        self.in_a_row += 1
        limit = self.limit
        get_root_logger().warning(f'iter {current_iter}: non-finite loss ({values}); skipped {skipped_updates} '
                                  f'({self.in_a_row} in a row{f", the run stops at {limit}" if limit else ""}).')
        if limit and self.in_a_row >= limit:
            raise NonFiniteLossError(
                f'iter {current_iter}: {self.in_a_row} consecutive steps had a non-finite loss (last: {values}), the '
                f'limit set by train.max_nonfinite_steps ({limit}); stopping. The checkpoints saved so far hold no '
                'NaN/Inf from these steps. Check the teacher and encoder checkpoints for NaN/Inf and the learning '
                'rate, or raise train.max_nonfinite_steps (0 never stops).')
