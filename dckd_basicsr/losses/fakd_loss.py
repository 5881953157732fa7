"""FAKD: feature-affinity knowledge distillation (He, Wu, Jiang, Lu, Zhang; ICIP 2020).

For a feature map ``F`` of shape (B, C, H, W), each spatial position's C-vector is L2-normalised and the affinity is
their Gram matrix over positions, ``A = N^T N`` of shape (B, HW, HW): the cosine similarity of every pair of
positions. It does not depend on C, so a student and a teacher with different widths can be compared, but their
spatial sizes must agree. The loss is the L1 distance between student and teacher affinities (mean over entries),
averaged over the layer pairs, times ``loss_weight``. The teacher's maps carry no gradient; the student's do.

The layers are chosen by the model (``train.fakd_opt.student_layers`` / ``teacher_layers``, see
:mod:`dckd_basicsr.feature_hooks`); this module only computes the loss on the recorded maps.
"""
from typing import Sequence

import torch
from basicsr.utils.registry import LOSS_REGISTRY
from torch import Tensor, nn

NORM_EPS = 1e-7


def spatial_affinity(feature: Tensor, eps: float = NORM_EPS) -> Tensor:
    """(B, C, H, W) -> (B, HW, HW) cosine similarities between the C-vectors of every two positions."""
    flat = feature.flatten(2)  # B, C, HW
    normed = flat / (flat.norm(dim=1, keepdim=True) + eps)
    return normed.transpose(1, 2) @ normed


@LOSS_REGISTRY.register()
class FAKDLoss(nn.Module):
    """Spatial-affinity distillation loss: ``loss_weight * mean_pairs mean |A(F_s) - A(F_t)|``.

    Args:
        loss_weight: weight of the term.
        reduction: only ``mean`` (over affinity entries) is supported.
    """

    def __init__(self, loss_weight: float = 1.0, reduction: str = 'mean'):
        super().__init__()
        if reduction != 'mean':
            raise ValueError(f'FAKDLoss supports reduction: mean only, got {reduction!r}.')
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
        return self.loss_weight * torch.stack(terms).mean()
