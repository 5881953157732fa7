"""Progressive patch training (Restormer, Zamir et al., CVPR 2022, Sec. 3.3) for BasicSR 1.4.2 models.

Restormer trains on small patches with large batches first and on large patches with small batches last (128 px x 64
images up to 384 px x 8 images). BasicSR 1.4.2 cannot express this: the dataloader's patch size and batch size are
fixed. As the Restormer authors do, the dataloader delivers batches of the largest patch (``gt_size``) and largest
batch (``batch_size_per_gpu``); at each training iteration the batch is subsampled and every image is cropped at one
random offset to the stage's size. The option keys are the Restormer authors' (in ``datasets.train``)::

    gt_size: 384
    batch_size_per_gpu: 8
    mini_batch_sizes: [8, 5, 4, 2, 1, 1]          # per GPU, one per stage
    gt_sizes: [128, 160, 192, 256, 320, 384]      # GT patch size of each stage
    iters: [92000, 64000, 48000, 36000, 36000, 24000]   # length of each stage

Validation is untouched: only the training step crops. When the options ask for a schedule, the patched
``build_model`` (:mod:`dckd_basicsr.integration.patches`) builds the model from :func:`with_progressive_patches` of its
class: the model class with the :class:`ProgressivePatches` mixin, for any BasicSR model that reads ``self.lq`` and
``self.gt`` in ``optimize_parameters`` (``SRModel``, the plugin's KD models).
"""
import functools
import random
from bisect import bisect_left
from itertools import accumulate
from typing import Any, Dict, Optional, Sequence, Tuple

import torch

from dckd_basicsr.errors import OptionError

PROGRESSIVE_KEYS = ('mini_batch_sizes', 'gt_sizes', 'iters')


class ProgressivePatchSchedule:
    """Stage ``j`` covers iterations ``sum(iters[:j]) + 1 .. sum(iters[:j + 1])``; iterations past the end stay in
    the last stage.

    Args:
        iters: Number of iterations of each stage.
        gt_sizes: GT patch size of each stage (the LQ patch is ``gt_size // scale``).
        mini_batch_sizes: Batch size (per GPU) of each stage.
        gt_size: Patch size the dataloader delivers (the largest of ``gt_sizes``, or more).
        batch_size: Batch size (per GPU) the dataloader delivers.
        scale: GT size / LQ size (1 for deblurring and deraining).
    """

    def __init__(self,
                 iters: Sequence[int],
                 gt_sizes: Sequence[int],
                 mini_batch_sizes: Sequence[int],
                 gt_size: int,
                 batch_size: int,
                 scale: int = 1):
        lengths = {len(iters), len(gt_sizes), len(mini_batch_sizes)}
        if len(lengths) != 1 or not iters:
            raise OptionError('datasets.train: iters, gt_sizes and mini_batch_sizes must be non-empty lists of the '
                              f'same length (got {len(iters)}, {len(gt_sizes)}, {len(mini_batch_sizes)}).')
        if any(int(n) <= 0 for n in iters):
            raise OptionError(f'datasets.train.iters: every stage needs at least one iteration, got {list(iters)}.')
        if max(gt_sizes) > gt_size or min(gt_sizes) < scale or any(size % scale for size in gt_sizes):
            raise OptionError(f'datasets.train.gt_sizes {list(gt_sizes)}: each must be a multiple of scale ({scale}) '
                              f'and at most datasets.train.gt_size ({gt_size}), the patch the dataloader crops.')
        if max(mini_batch_sizes) > batch_size or min(mini_batch_sizes) < 1:
            raise OptionError(f'datasets.train.mini_batch_sizes {list(mini_batch_sizes)}: each must be between 1 and '
                              f'datasets.train.batch_size_per_gpu ({batch_size}).')
        self.ends = list(accumulate(int(n) for n in iters))
        self.gt_sizes = [int(s) for s in gt_sizes]
        self.mini_batch_sizes = [int(b) for b in mini_batch_sizes]
        self.gt_size = int(gt_size)
        self.batch_size = int(batch_size)
        self.scale = int(scale)

    @classmethod
    def from_options(cls, opt: Dict[str, Any]) -> Optional['ProgressivePatchSchedule']:
        """The schedule of ``opt['datasets']['train']``, or None when it sets none of :data:`PROGRESSIVE_KEYS`."""
        train_opt = (opt.get('datasets') or {}).get('train') or {}
        present = [key for key in PROGRESSIVE_KEYS if train_opt.get(key) is not None]
        if not present:
            return None
        if len(present) != len(PROGRESSIVE_KEYS):
            missing = ', '.join(f'datasets.train.{key}' for key in PROGRESSIVE_KEYS if key not in present)
            raise OptionError(f'progressive patch training needs {", ".join(PROGRESSIVE_KEYS)}; missing {missing}.')
        for key in ('gt_size', 'batch_size_per_gpu'):
            if train_opt.get(key) is None:
                raise OptionError(f'progressive patch training needs datasets.train.{key}.')
        return cls(train_opt['iters'], train_opt['gt_sizes'], train_opt['mini_batch_sizes'], train_opt['gt_size'],
                   train_opt['batch_size_per_gpu'], opt.get('scale', 1))

    def stage(self, current_iter: int) -> int:
        """Index of the stage of 1-based iteration ``current_iter``."""
        return min(bisect_left(self.ends, current_iter), len(self.ends) - 1)

    def __call__(self, lq: torch.Tensor, gt: torch.Tensor, current_iter: int,
                 rng: Optional[random.Random] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """Subsample and crop one training batch for ``current_iter``.

        ``mini_batch_sizes[j]`` images are drawn without replacement; all are cropped at the same random offset
        (``gt_sizes[j]`` on GT, ``gt_sizes[j] // scale`` on LQ). Batches smaller than the stage's size (the last batch
        of an epoch) keep all their images.
        """
        rng = rng or random
        j = self.stage(current_iter)
        batch = gt.size(0)
        mini_batch = self.mini_batch_sizes[j]
        if mini_batch < batch:
            indices = sorted(rng.sample(range(batch), k=mini_batch))
            lq, gt = lq[indices], gt[indices]
        gt_patch = self.gt_sizes[j]
        h, w = gt.shape[-2:]
        if gt_patch < h or gt_patch < w:
            patch = min(gt_patch, h, w)
            # Offsets on the LQ grid, so LQ and GT stay aligned for any scale.
            lq_patch = patch // self.scale
            top = int((h // self.scale - lq_patch) * rng.random())
            left = int((w // self.scale - lq_patch) * rng.random())
            lq = lq[..., top:top + lq_patch, left:left + lq_patch]
            s = self.scale
            gt = gt[..., top * s:(top + lq_patch) * s, left * s:(left + lq_patch) * s]
        return lq, gt


def asks_for_progressive_patches(opt: Dict[str, Any]) -> bool:
    """Whether a training run's options set any of :data:`PROGRESSIVE_KEYS` (the schedule then checks them all)."""
    train_opt = (opt.get('datasets') or {}).get('train') or {}
    return bool(opt.get('is_train')) and any(train_opt.get(key) is not None for key in PROGRESSIVE_KEYS)


class ProgressivePatches:
    """Mixin for any BasicSR model that reads ``self.lq`` and ``self.gt`` in ``optimize_parameters``: each training
    batch is cropped by the options' :class:`ProgressivePatchSchedule` (``self.progressive_schedule``) before the
    model's own step; the first iteration of each stage is logged. Validation is untouched."""

    def __init__(self, opt: Dict[str, Any]):
        super().__init__(opt)
        self.progressive_schedule = ProgressivePatchSchedule.from_options(opt)
        self._logged_stages = set()

    def optimize_parameters(self, current_iter: int) -> None:
        schedule = self.progressive_schedule
        stage = schedule.stage(current_iter)
        if stage not in self._logged_stages:
            self._logged_stages.add(stage)
            from basicsr.utils import get_root_logger
            get_root_logger().info(f'Progressive patches, stage {stage + 1}/{len(schedule.ends)} from iter '
                                   f'{current_iter}: patch {schedule.gt_sizes[stage]}, '
                                   f'batch {schedule.mini_batch_sizes[stage]} per GPU.')
        self.lq, self.gt = schedule(self.lq, self.gt, current_iter)
        return super().optimize_parameters(current_iter)


@functools.lru_cache(maxsize=None)
def with_progressive_patches(model_class: type) -> type:
    """``model_class`` with :class:`ProgressivePatches` in front, under the same name (BasicSR logs the class name);
    one class per model class."""
    return type(model_class.__name__, (ProgressivePatches, model_class),
                {'__doc__': f'{model_class.__name__} trained with progressive patches (:class:`ProgressivePatches`).'})
