"""Eq. 5 (DynamicContrastiveLoss / ContrasLoss), Eq. 9 (DistributionMappingLoss) and the authors' CELoss, pinned
against hand computations."""
import math

import pytest
import torch
from basicsr.losses import build_loss

import dckd_basicsr  # noqa: F401
from dckd_basicsr.errors import OptionError
from dckd_basicsr.losses.dcl_loss import DynamicContrastiveLoss
from dckd_basicsr.losses.dmm_loss import CELoss, DistributionMappingLoss


def t(values):
    return torch.tensor(values, dtype=torch.float64).view(1, 1, 1, -1)


def test_eq5_hand_computed_two_levels():
    # level 1: |a-p| = (0, 1) -> 0.5; negatives: |a-n1| = (1, 2) -> 1.5, |a-n2| = (2, 0) -> 1.0; ratio 0.5 / 2.5 = 0.2
    # level 2: |a-p| = (2, 2) -> 2.0; one negative |a-n| = (4, 0) -> 2.0 (+ the 2nd: |a-n2| = (0, 0)); ratio 1.0
    anchor = [t([1., 2.]), t([0., 0.])]
    positive = [t([1., 1.]), t([2., -2.])]
    negatives = [[t([0., 0.]), t([3., 2.])], [t([4., 0.]), t([0., 0.])]]
    loss = DynamicContrastiveLoss(loss_weight=0.1, weights=[0.5, 2.0])(anchor, positive, negatives)
    # 0.1 * (0.5 * 0.2 + 2.0 * 1.0) = 0.21, less about 1.04e-8 for the 1e-7 in each denominator
    assert loss.item() == pytest.approx(0.2099999896, rel=1e-9)
    assert loss.item() == pytest.approx(0.1 * (0.5 * 0.5 / (2.5 + 1e-7) + 2.0 * 2.0 / (2.0 + 1e-7)), rel=1e-12)


def test_eq5_l2_and_stacked_negatives():
    anchor, positive = [t([1., 3.])], [t([0., 3.])]
    negatives = [torch.stack([t([3., 3.]), t([1., 0.])])]  # (N, B, C, H, W) form
    loss = DynamicContrastiveLoss(weights=[1.0], d_func='L2')(anchor, positive, negatives)
    # mean sq: pos (1 + 0)/2 = 0.5; negs (4 + 0)/2 = 2 and (0 + 9)/2 = 4.5
    assert loss.item() == pytest.approx(0.5 / (6.5 + 1e-7), rel=1e-12)


def test_eq5_means_over_batch_channels_and_pixels_of_the_summed_negatives():
    """Batch of 2, several channels and pixels, three negatives: each level's two means run over every element of the
    batch (not a mean of per-sample ratios), the negatives' distances summed (not averaged) first."""
    # level 1, (B, C, H, W) = (2, 2, 2, 2): |a - p| is 0 (sample 0) and 2 (sample 1): mean 1; the three negatives are
    # 1 away (sample 0) and 3 away (sample 1): summed 3 and 9, mean 6; ratio 1/6 (per-sample ratios would give 1/9)
    anchor1 = torch.zeros(2, 2, 2, 2, dtype=torch.float64)
    positive1 = torch.stack([torch.zeros(2, 2, 2), torch.full((2, 2, 2), 2.)]).double()
    negatives1 = torch.stack([torch.stack([torch.ones(2, 2, 2), torch.full((2, 2, 2), -3.)]).double()] * 3)
    # level 2, (2, 1, 1, 3): one element of six differs from the positive by 3: mean 0.5; the negatives lie 1, 2 and 3
    # away from every element: summed 6; ratio 1/12
    anchor2 = torch.tensor([[1., 2., 3.], [0., 0., 0.]], dtype=torch.float64).view(2, 1, 1, 3)
    positive2 = anchor2.clone()
    positive2[0, 0, 0, 2] = 0.
    negatives2 = torch.stack([anchor2 + 1, anchor2 - 2, anchor2 + 3])
    loss = DynamicContrastiveLoss(loss_weight=0.1, weights=[0.25, 1.0])([anchor1, anchor2], [positive1, positive2],
                                                                        [negatives1, negatives2])
    assert loss.item() == pytest.approx(0.1 * (0.25 * 1 / (6 + 1e-7) + 1.0 * 0.5 / (6 + 1e-7)), rel=1e-12)
    assert loss.item() == pytest.approx(0.1 * (1 / 24 + 1 / 12), rel=1e-6)


def test_eq5_gradient_reaches_only_the_anchor():
    anchor = [torch.randn(1, 2, 4, 4, requires_grad=True)]
    positive = [torch.randn(1, 2, 4, 4, requires_grad=True)]
    negatives = [[torch.randn(1, 2, 4, 4, requires_grad=True) for _ in range(2)]]
    DynamicContrastiveLoss(weights=[1.0])(anchor, positive, negatives).backward()
    assert anchor[0].grad is not None and anchor[0].grad.abs().sum() > 0
    assert positive[0].grad is None and all(n.grad is None for n in negatives[0])


def test_contras_loss_is_the_authors_type_with_their_keys():
    loss = build_loss({'type': 'ContrasLoss', 'd_func': 'L1', 'loss_weight': 0.1,
                       'weights': [1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0]})
    assert isinstance(loss, DynamicContrastiveLoss) and loss.loss_weight == 0.1
    assert loss.weights == [1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0]
    assert DynamicContrastiveLoss().weights == [1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0]


def test_eq5_errors():
    with pytest.raises(OptionError, match='3 entries but the encoder gives 5'):
        DynamicContrastiveLoss(weights=[1, 1, 1]).check_levels(5)
    with pytest.raises(OptionError, match='d_func'):
        DynamicContrastiveLoss(d_func='cosine')


def log_probs(*probs):
    return torch.tensor([[math.log(p) for p in row] for row in probs], dtype=torch.float64)


def test_eq9_hand_computed():
    teacher = log_probs([0.5, 0.25, 0.25], [0.5, 0.25, 0.25])
    student = log_probs([0.25, 0.25, 0.5], [0.5, 0.25, 0.25])
    # pixel 1: -(0.5 ln .25 + .25 ln .25 + .25 ln .5) = 1.2130076; pixel 2 (entropy): 1.0397208; mean 1.1263642
    pixel1 = -(0.5 * math.log(0.25) + 0.25 * math.log(0.25) + 0.25 * math.log(0.5))
    pixel2 = -(0.5 * math.log(0.5) + 0.5 * math.log(0.25))
    loss = DistributionMappingLoss(loss_weight=0.001)(student, teacher)
    assert loss.item() == pytest.approx(0.001 * (pixel1 + pixel2) / 2, rel=1e-12)
    assert loss.item() == pytest.approx(0.001 * 1.1263642, rel=1e-6)
    # logits are shift-invariant, (B, h, w, K) inputs are averaged over all pixels alike
    loss4d = DistributionMappingLoss(loss_weight=0.001)((student + 3).view(1, 1, 2, 3), teacher.view(1, 1, 2, 3))
    assert loss4d.item() == pytest.approx(loss.item(), rel=1e-12)


def test_celoss_is_cross_entropy_of_probabilities_used_as_logits():
    teacher = log_probs([0.5, 0.25, 0.25])
    student = log_probs([0.25, 0.25, 0.5])
    # F.cross_entropy applies a second softmax to the student probabilities p = (.25, .25, .5)
    log_z = math.log(2 * math.exp(0.25) + math.exp(0.5))
    expected = -(0.5 * (0.25 - log_z) + 0.25 * (0.25 - log_z) + 0.25 * (0.5 - log_z))
    loss = CELoss(loss_weight=0.001)(student, teacher).item()
    assert loss == pytest.approx(0.001 * 1.1265699, rel=1e-6)  # (Eq. 9 would give 1.2130076)
    assert loss == pytest.approx(0.001 * expected, rel=1e-12)
    assert isinstance(build_loss({'type': 'CELoss', 'loss_weight': 0.001}), CELoss)


def test_celoss_sits_at_log_k_where_eq9_does_not():
    torch.manual_seed(0)
    k = 64
    teacher = torch.randn(2, 4, 4, k) * 10
    uniform_student = torch.zeros(2, 4, 4, k)
    # uniform student probabilities stay uniform under the second softmax: exactly log(K), whatever the teacher
    assert CELoss(loss_weight=0.001)(uniform_student, teacher).item() == pytest.approx(0.001 * math.log(k), rel=1e-6)
    # sharp student distributions move CELoss by at most ~1 nat, Eq. 9 by much more
    student = torch.randn(2, 4, 4, k) * 10
    ce = CELoss()(student, teacher).item()
    eq9 = DistributionMappingLoss()(student, teacher).item()
    assert abs(ce - math.log(k)) < 1.0 and eq9 > 5.0
