"""FAKD: feature-affinity knowledge distillation (He, Wu, Jiang, Lu, Zhang; ICIP 2020), as the authors' code has it.

For a feature map ``F`` of shape (B, C, H, W), each spatial position's C-vector is divided by its L2 norm plus
``1e-8`` and the spatial affinity is their Gram matrix over positions, ``A = N^T N`` of shape (B, HW, HW): the
cosine similarity of every pair of positions (official ``spatial_similarity``, ``code/feature_transformation.py``).
It does not depend on C, so a student and a teacher of different widths can be compared; their spatial sizes must
agree. Per tapped pair the distance is ``nn.L1Loss`` between student and teacher affinities, a mean over all
B * HW * HW entries; the pairs are *summed* (``FeatureLoss``, ``code/loss.py``) and the sum is multiplied by the
weight of the ``SA`` term. The teacher's maps carry no gradient; the student's do.

The authors' defaults (``code/option.py``; ``code/scripts/train_rcan_SA_x{2,3,4,8}.sh``, README):
``--feature_distilation_type 10*SA`` (weight 10), ``--features [1,2,3]`` (three maps, see
:mod:`dckd_basicsr.distill.feature_taps`; only their x3 script passes ``[2,3]``, dropping the first, which we do not
follow: our files use the default at every scale) and ``--alpha 0.5``, so that (``code/loss.py``)
``L = (1 - alpha) * L1(S, GT) + alpha * L1(S, T) + 10 * sum_i L1(A(S_i), A(T_i))``. Their images are in [0, 255]
(``--rgb_range 255``), ours in [0, 1]: the two L1 image terms are 255 times ours while the affinities do not
depend on the scale, so their balance is kept by the weight ``10 / 255`` here (the default,
:data:`AUTHORS_LOSS_WEIGHT`) with ``loss_weight: 0.5`` on ``pixel_opt`` and ``logits_opt``: every term, and so
every gradient, is then the authors' divided by 255, which Adam's update does not see
(``tests/test_golden_fakd.py`` checks this against their code).

The Table 2 files share DCKD's schedule, not the authors' other RCAN settings, which are: student
RCAN 10 groups x 6 blocks, teacher 10 x 20 (``code/train.py``), Adam betas (0.9, 0.999), eps 1e-8, lr 1e-4 halved
from epoch 150 on (``--decay 150-300-450-600``, ``--gamma 0.5``, stepped at each epoch's start), 200 epochs of
1000 iterations (``--test_every 1000``), batch 16, HR patch 192 at x4, 144 at x3, 96 at x2 (48x48 LR), flips and
rotations, no EMA.

The layers are chosen by the model (``train.fakd_opt.student_layers`` / ``teacher_layers``, defaults in
:mod:`dckd_basicsr.distill.feature_taps`); this module only computes the loss on the recorded maps.
"""
from typing import Sequence

import torch
from basicsr.utils.registry import LOSS_REGISTRY
from torch import Tensor, nn

from dckd_basicsr.errors import OptionError

NORM_EPS = 1e-8
# The authors' weight 10 on L1 image terms computed in [0, 255], for images in [0, 1].
AUTHORS_LOSS_WEIGHT = 10 / 255


def spatial_affinity(feature: Tensor, eps: float = NORM_EPS) -> Tensor:
    """(B, C, H, W) -> (B, HW, HW) cosine similarities between the C-vectors of every two positions."""
    flat = feature.flatten(2)  # B, C, HW
    normed = flat / (flat.norm(dim=1, keepdim=True) + eps)
    return normed.transpose(1, 2) @ normed


@LOSS_REGISTRY.register()
class FAKDLoss(nn.Module):
    """Spatial-affinity distillation loss: ``loss_weight * sum_pairs mean |A(F_s) - A(F_t)|``.

    Args:
        loss_weight: weight of the term; default ``10 / 255``, the authors' 10 for images in [0, 1] (module
            docstring).
        reduction: only ``mean`` (over the affinity entries of one pair; pairs are summed) is supported.
    """

    def __init__(self, loss_weight: float = AUTHORS_LOSS_WEIGHT, reduction: str = 'mean'):
        super().__init__()
        if reduction != 'mean':
            raise OptionError(f'train.fakd_opt.reduction: {reduction!r}; FAKDLoss supports only \'mean\' (over the '
                              'affinity entries of one pair, as the FAKD authors\' nn.L1Loss).')
        self.loss_weight = loss_weight

    def forward(self, student: Sequence[Tensor], teacher: Sequence[Tensor]) -> Tensor:
        if len(student) != len(teacher) or not student:
            raise ValueError(f'FAKDLoss needs as many student as teacher maps (got {len(student)} and {len(teacher)}).')
        terms = []
        for s, t in zip(student, teacher):
            if s.shape[0] != t.shape[0] or s.shape[2:] != t.shape[2:]:
                raise ValueError(f'FAKDLoss: student map {tuple(s.shape)} and teacher map {tuple(t.shape)} differ in '
                                 'batch or spatial size.')
            terms.append((spatial_affinity(s) - spatial_affinity(t.detach())).abs().mean())
        return self.loss_weight * torch.stack(terms).sum()
