"""Distribution mapping losses (Eq. 9 of the DCKD paper, and the authors' code's variant).

Both take code logits, i.e. ``-||z - e_k||^2 / T`` of Eq. 8 before the softmax, shaped (..., K) with the K codebook
entries last (as :meth:`dckd_basicsr.archs.vqgan_arch.VQGANEncoder.code_logits` returns them), and average over all
latent pixels. The teacher side is detached.
"""
from basicsr.utils.registry import LOSS_REGISTRY
from torch import Tensor, nn
from torch.nn import functional as F

from dckd_basicsr.errors import OptionError


@LOSS_REGISTRY.register()
class DistributionMappingLoss(nn.Module):
    """Eq. 9: ``-sum_k C_T[k] log C_S[k]`` with ``C = softmax(logits)``, averaged over latent pixels.

    Args:
        loss_weight: lambda_ce of Eq. 10. Default: 1.
        reduction: ``mean`` over latent pixels, the only one supported (the authors' ``CELoss`` option files give it).
    """

    def __init__(self, loss_weight: float = 1.0, reduction: str = 'mean'):
        super().__init__()
        if reduction != 'mean':
            raise OptionError(f'train.ce_opt.reduction: {reduction!r}; the distribution mapping losses support only '
                              "'mean' (over latent pixels, as the authors' runs use).")
        self.loss_weight = loss_weight

    def forward(self, student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
        target = teacher_logits.detach().softmax(dim=-1)
        log_student = F.log_softmax(student_logits, dim=-1)
        return self.loss_weight * -(target * log_student).sum(dim=-1).mean()


@LOSS_REGISTRY.register()
class CELoss(DistributionMappingLoss):
    """The authors' code (``ce_opt.type: CELoss``): ``F.cross_entropy(C_S, C_T)`` with soft targets.

    ``C_S`` are already probabilities, and ``F.cross_entropy`` applies a second softmax to them. Since they lie in
    [0, 1], that softmax is nearly uniform, so the loss stays close to ``loss_weight * log(K)`` and its gradient is
    tiny. Kept so the authors' option files reproduce their runs; :class:`DistributionMappingLoss` is the paper's Eq. 9.

    Args:
        loss_weight: lambda_ce of Eq. 10. Default: 1.
        reduction: ``mean`` only (the authors' files give ``reduction: mean``).
    """

    def forward(self, student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
        num_codes = student_logits.shape[-1]
        student = student_logits.softmax(dim=-1).reshape(-1, num_codes)
        target = teacher_logits.detach().softmax(dim=-1).reshape(-1, num_codes)
        return self.loss_weight * F.cross_entropy(student, target)
