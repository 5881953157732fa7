"""Dynamic contrastive loss (Eq. 5 of the DCKD paper)."""
from typing import Optional, Sequence

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
                 eps: float = 1e-7, **ignored):
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

    def level_ratio(self, anchor: Tensor, positive: Tensor, negatives: Sequence[Tensor]) -> Tensor:
        """One level of Eq. 5 (without its lambda); ``negatives`` is an iterable of tensors shaped like ``anchor``."""
        numerator = self.distance(anchor, positive.detach())
        denominator = sum(self.distance(anchor, negative.detach()) for negative in negatives)
        return numerator / (denominator + self.eps)

    def forward(self, anchor: Sequence[Tensor], positive: Sequence[Tensor],
                negatives: Sequence[Sequence[Tensor]]) -> Tensor:
        """
        Args:
            anchor: Student features, one (B, C_i, H_i, W_i) tensor per level.
            positive: Teacher features, same shapes.
            negatives: Per level, the negatives' features: a (N, B, C_i, H_i, W_i) tensor or a list of N tensors.
        """
        self.check_levels(len(anchor), 'number of anchor feature levels vs weights')
        if not (len(positive) == len(negatives) == len(anchor)):
            raise ValueError('anchor, positive and negatives need the same number of feature levels.')
        loss = anchor[0].new_zeros(())
        for weight, a, p, n in zip(self.weights, anchor, positive, negatives):
            loss = loss + weight * self.level_ratio(a, p, n)
        return self.loss_weight * loss


@LOSS_REGISTRY.register()
class ContrasLoss(DynamicContrastiveLoss):
    """The authors' type name (``cl_opt.type: ContrasLoss``, keys ``d_func``, ``loss_weight``, ``weights``)."""
