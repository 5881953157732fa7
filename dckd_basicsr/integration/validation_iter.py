"""The iteration a training run's validation is labelled with: never past ``train.total_iter``.

BasicSR's ``train_pipeline`` iterates ``total_epochs + 1`` epochs, and each epoch after the last iteration still
counts one more (``current_iter += 1`` before its ``> total_iters`` break), so its final validation is labelled
``total_iter + 1`` or ``+ 2`` (a 3-iteration run logs ``Best: ... @ 5 iter``), and so are the best-metric record and
the TensorBoard point. :func:`validation_within_total_iter` wraps ``BaseModel.validation``
(:func:`dckd_basicsr.integration.patches.patch_validation`).
"""
from typing import Callable


def validation_within_total_iter(validation: Callable) -> Callable:
    """``validation`` called with ``min(current_iter, train.total_iter)`` during training."""

    def capped_validation(self, dataloader, current_iter, tb_logger, save_img=False):
        total = (self.opt.get('train') or {}).get('total_iter') if self.opt.get('is_train') else None
        if isinstance(current_iter, int) and total is not None:
            current_iter = min(current_iter, int(total))
        return validation(self, dataloader, current_iter, tb_logger, save_img)

    capped_validation.__doc__ = validation.__doc__
    return capped_validation
