"""Dynamic contrastive loss (Eq. 5 of the DCKD paper).

:meth:`DynamicContrastiveLoss.forward` takes the negatives in either of two forms, with the same value and gradient:
every negative's features at once (autograd then keeps ``anchor - negative`` of every negative and level for the
backward pass), or a :class:`NegativeDistances` to which the negatives were added one (or a few) at a time and one
level at a time as the encoder produced them, keeping only the running sums and their gradient with respect to the
anchor, so memory does not grow with the number of negatives (what training does).
"""
from typing import List, Optional, Sequence, Union

import torch
from basicsr.utils.registry import LOSS_REGISTRY
from torch import Tensor, nn

from dckd_basicsr.errors import OptionError

# lambda_i of Eq. 5 for the five VQGAN levels, shallow to deep.
DEFAULT_LEVEL_WEIGHTS = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)


def _distance(d_func: str):
    if d_func == 'L1':
        return lambda a, b: (a - b).abs().mean()
    if d_func == 'L2':
        return lambda a, b: (a - b).pow(2).mean()
    raise OptionError(f"cl_opt.d_func: {d_func!r}; use 'L1' (the paper's) or 'L2'.")


class _PrecomputedDistance(torch.autograd.Function):
    """A scalar whose gradient with respect to ``anchor`` was accumulated beforehand (``grad``)."""

    @staticmethod
    def forward(ctx, anchor: Tensor, value: Tensor, grad: Tensor) -> Tensor:
        ctx.save_for_backward(grad)
        return value.clone()

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        grad, = ctx.saved_tensors
        return grad_output * grad, None, None


class NegativeDistances:
    """Eq. 5 denominators ``sum_j d(f_i(anc), f_i(neg_j))`` accumulated one batch of negatives and one level at a time.

    For each level it keeps the sum's value and its gradient with respect to the anchor features (``sign(a - n) /
    numel`` for L1, ``2 (a - n) / numel`` for L2, the gradients autograd would compute), so each negative's features
    can be dropped as soon as they are added. :meth:`result` returns the sums attached to the anchor's graph.
    """

    def __init__(self, anchor: Sequence[Tensor], d_func: str = 'L1'):
        if d_func not in ('L1', 'L2'):
            raise OptionError(f"cl_opt.d_func: {d_func!r}; use 'L1' (the paper's) or 'L2'.")
        self.anchor = list(anchor)
        self.d_func = d_func
        self.values = [a.new_zeros(()) for a in self.anchor]
        self.grads: List[Optional[Tensor]] = [None] * len(self.anchor)
        self.count = [0] * len(self.anchor)

    def add(self, level: int, negatives: Tensor) -> None:
        """Add the negatives' features of one level: (B, C, H, W) for one negative or (N, B, C, H, W) for N."""
        anchor = self.anchor[level].detach()
        with torch.no_grad():
            diff = anchor - negatives.detach().to(anchor.dtype)
            many = diff.dim() == anchor.dim() + 1
            numel = anchor.numel()
            if self.d_func == 'L1':
                self.values[level] += diff.abs().sum() / numel
                grad = diff.sign_()
            else:
                self.values[level] += diff.pow(2).sum() / numel
                grad = diff.mul_(2)
            grad = (grad.sum(0) if many else grad).div_(numel)
            self.grads[level] = grad if self.grads[level] is None else self.grads[level].add_(grad)
            self.count[level] += diff.size(0) if many else 1

    def result(self) -> List[Tensor]:
        """The per-level sums, differentiable with respect to the anchor features (call outside ``no_grad``)."""
        if len(set(self.count)) != 1 or self.count[0] == 0:
            raise ValueError(f'NegativeDistances: negatives added per level {self.count}; every level needs the same '
                             'number (at least one).')
        return [_PrecomputedDistance.apply(a, v, g) for a, v, g in zip(self.anchor, self.values, self.grads)]


@LOSS_REGISTRY.register()
class DynamicContrastiveLoss(nn.Module):
    """Eq. 5: ``sum_i lambda_i * d(f_i(anc), f_i(pos)) / (sum_j d(f_i(anc), f_i(neg_j)) + eps)``.

    ``d`` is the mean absolute difference (``d_func: L1``; ``L2`` gives the mean squared one), as in the authors' code;
    the denominator is therefore ``mean(sum_j |a - n_j|) + 1e-7``. Positives and negatives are detached: only the
    anchor (the student output's features) receives gradient.

    Args:
        loss_weight: lambda_dcl of Eq. 10. Default: 1.
        weights: lambda_i, one per feature level (shallow to deep). Default: [1/32, 1/16, 1/8, 1/4, 1].
        d_func: 'L1' or 'L2'. Default: 'L1'.
        eps: Added to the denominator. Default: 1e-7.
    """

    def __init__(self, loss_weight: float = 1.0, weights: Optional[Sequence[float]] = None, d_func: str = 'L1',
                 eps: float = 1e-7):
        super().__init__()
        self.loss_weight = loss_weight
        self.weights = [float(w) for w in (DEFAULT_LEVEL_WEIGHTS if weights is None else weights)]
        self.d_func = d_func
        self.distance = _distance(d_func)
        self.eps = eps

    def check_levels(self, num_levels: int, where: str = 'train.cl_opt.weights') -> None:
        """Raise OptionError unless there is one weight per feature level."""
        if len(self.weights) != num_levels:
            raise OptionError(f'{where} has {len(self.weights)} entries but the encoder gives {num_levels} feature '
                              f'levels; give one weight per level (the paper: [1/32, 1/16, 1/8, 1/4, 1]).')

    def negative_distances(self, anchor: Sequence[Tensor]) -> NegativeDistances:
        """An accumulator of the Eq. 5 denominators, to which negatives are added one (or a few) at a time and which
        :meth:`forward` takes in place of the negatives' features."""
        return NegativeDistances(anchor, self.d_func)

    def forward(self, anchor: Sequence[Tensor], positive: Sequence[Tensor],
                negatives: Union[NegativeDistances, Sequence[Sequence[Tensor]]]) -> Tensor:
        """
        Args:
            anchor: Student features, one (B, C_i, H_i, W_i) tensor per level.
            positive: Teacher features, same shapes.
            negatives: Per level, the negatives' features (a (N, B, C_i, H_i, W_i) tensor or a list of N tensors), or
                a :class:`NegativeDistances` they were streamed into (:meth:`negative_distances`).
        """
        self.check_levels(len(anchor), 'number of anchor feature levels vs weights')
        if isinstance(negatives, NegativeDistances):
            denominators = negatives.result()
        else:
            if not (len(positive) == len(negatives) == len(anchor)):
                raise ValueError('anchor, positive and negatives need the same number of feature levels.')
            denominators = [sum(self.distance(a, n.detach()) for n in level) for a, level in zip(anchor, negatives)]
        loss = anchor[0].new_zeros(())
        for weight, a, p, denominator in zip(self.weights, anchor, positive, denominators):
            loss = loss + weight * self.distance(a, p.detach()) / (denominator + self.eps)
        return self.loss_weight * loss


@LOSS_REGISTRY.register()
class ContrasLoss(DynamicContrastiveLoss):
    """The authors' type name (``cl_opt.type: ContrasLoss``, keys ``d_func``, ``loss_weight``, ``weights``)."""
