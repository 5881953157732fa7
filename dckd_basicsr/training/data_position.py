"""Where the training data continue: a resumed run draws the batches its epoch had not drawn yet, and every run
reaches ``total_iter``.

BasicSR 1.4.2 starts a resumed run's saved epoch again from its first batch, and counts ``ceil(N / batch)``
iterations per epoch while its loader drops each epoch's incomplete batch (so a run with few images ends before
``total_iter``). :func:`number_of_epochs` counts with the loader's real length and :func:`continue_epoch` gives the
loader a :class:`SkipOnceSampler`; both are installed by the patched ``create_train_val_dataloader``
(:mod:`dckd_basicsr.integration.patches`).
"""
import math
from typing import Any, Dict, Iterator, Optional

from basicsr.data.data_sampler import EnlargedSampler
from basicsr.utils import get_root_logger
from torch.utils.data import Sampler

from dckd_basicsr.errors import OptionError


class SkipOnceSampler(Sampler):
    """The indices of ``sampler``, without the first ``skip`` of epoch ``skip_epoch``, once.

    Args:
        sampler: The run's :class:`EnlargedSampler` (its ``set_epoch`` and length are passed through).
        skip_epoch: The epoch the checkpoint was taken in.
        skip: Indices that epoch had already handed out.
    """

    def __init__(self, sampler: EnlargedSampler, skip_epoch: int, skip: int):
        self.sampler = sampler
        self.skip_epoch: Optional[int] = skip_epoch
        self.skip = skip

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[int]:
        indices = list(iter(self.sampler))
        if self.sampler.epoch == self.skip_epoch:
            indices, self.skip_epoch = indices[self.skip:], None
        return iter(indices)

    def __len__(self) -> int:
        return len(self.sampler)


def number_of_epochs(train_loader: Any, total_iters: int) -> int:
    """Epochs that reach ``total_iters``, counted with the loader's real length (it drops incomplete batches)."""
    per_epoch = len(train_loader)
    if per_epoch == 0:
        raise OptionError('datasets.train: fewer training samples than one batch (batch_size_per_gpu x number '
                          'of processes); lower the batch size or raise dataset_enlarge_ratio.')
    return math.ceil(total_iters / per_epoch)


def continue_epoch(opt: Dict[str, Any], train_loader: Any, sampler: Any) -> Any:
    """The sampler a resumed run's loader draws from: ``sampler`` wrapped in a :class:`SkipOnceSampler` that skips,
    once, the indices its epoch had already handed out at the checkpoint (installed in ``train_loader``), or
    ``sampler`` itself when there is nothing to skip.

    A checkpoint after ``b`` batches of epoch ``e`` records ``iter`` and ``e`` (``opt['resume_position']``, from
    :func:`~dckd_basicsr.training.resume.load_resume_state`); ``b = iter - e * iterations_per_epoch``, also when
    ``b`` is the whole epoch. When the position does not fit the loader (batch size, processes or data changed), the
    log says so and the epoch restarts.
    """
    position = opt.get('resume_position')
    if not position or not isinstance(sampler, EnlargedSampler):
        return sampler
    per_epoch = len(train_loader)
    done = position['iter'] - position['epoch'] * per_epoch
    if not 0 < done <= per_epoch:
        get_root_logger().warning(
            f"Resume: iteration {position['iter']} does not fall in epoch {position['epoch']} of "
            f'{per_epoch} iterations (batch size, processes or data changed?); the epoch restarts from its '
            'first batch.')
        return sampler
    resumed = SkipOnceSampler(sampler, position['epoch'], done * train_loader.batch_size)
    train_loader.batch_sampler.sampler = resumed
    return resumed
