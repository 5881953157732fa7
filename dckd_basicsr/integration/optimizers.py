"""The optimizers a BasicSR model may build: those of BasicSR master, where BasicSR 1.4.2 builds only Adam.

:func:`get_optimizer` is ``BaseModel.get_optimizer`` as installed by
:func:`dckd_basicsr.integration.patches.patch_get_optimizer` (NAFNet and Restormer train with AdamW).
"""
from typing import Any, Iterable

import torch

from dckd_basicsr.errors import OptionError

# The optimizers BasicSR master's get_optimizer accepts.
OPTIMIZERS = ('Adam', 'AdamW', 'Adamax', 'SGD', 'ASGD', 'RMSprop', 'Rprop')


def get_optimizer(self: Any, optim_type: str, params: Iterable, lr: float, **kwargs: Any) -> torch.optim.Optimizer:
    """``torch.optim.<optim_type>(params, lr, **kwargs)``; an OptionError naming ``train.optim_g.type`` for any
    other name."""
    if optim_type not in OPTIMIZERS:
        raise OptionError(f"train.optim_g.type: {optim_type} is not supported; use one of {', '.join(OPTIMIZERS)}.")
    return getattr(torch.optim, optim_type)(params, lr, **kwargs)
