"""DCKD's negatives (dckd_basicsr/distill/negatives.py): the LQ input and ``num_neg`` degraded copies of it (BasicSR's
noise, the authors' blur and resize draws), replayable from recorded draws."""
import math

import pytest
import torch

import dckd_basicsr  # noqa: F401
from dckd_basicsr.distill.negatives import RESIZE_MODES, CopyDraws, NegativeGenerator, gaussian_kernel_1d
from dckd_basicsr.errors import OptionError


def test_negatives_are_the_lq_then_whole_batch_copies_with_basicsr_noise():
    lq = torch.full((2, 3, 16, 16), 0.5)
    lq[1] = 0.25
    generator = NegativeGenerator(num_neg=3, gaussian_noise_prob=1, gray_noise_prob=1)
    torch.manual_seed(0)
    out = generator(lq)
    assert out.shape == (8, 3, 16, 16)
    assert torch.equal(out[:2], lq)
    noise = (out[2:] - lq.repeat(3, 1, 1, 1)).view(3, 2, 3, 16, 16)  # (copy, sample, C, H, W)
    assert torch.equal(noise[:, :, 0], noise[:, :, 1]) and torch.equal(noise[:, :, 1], noise[:, :, 2])  # gray
    sigma = noise[:, :, 0].flatten(2).std(dim=2) * 255
    assert (sigma > 0.5).all() and (sigma < 33).all()
    # BasicSR's random_add_gaussian_noise_pt: one gray pattern per call (copy), scaled per sample
    pattern = noise[:, :, 0] / noise[:, :, 0].flatten(2).std(dim=2)[..., None, None]
    assert torch.allclose(pattern[:, 0], pattern[:, 1], atol=1e-4)
    assert not torch.allclose(pattern[0], pattern[1], atol=0.1)  # copies differ
    torch.manual_seed(0)
    assert torch.equal(generator(lq), out)  # every draw comes from the global torch stream


def test_color_noise_and_disabled_ops():
    lq = torch.full((4, 3, 12, 12), 0.5)
    torch.manual_seed(1)
    out = NegativeGenerator(num_neg=1, gray_noise_prob=0)(lq)
    assert not torch.equal(out[4:, 0], out[4:, 1])
    off = NegativeGenerator(num_neg=2, gaussian_noise_prob=0)(lq)
    assert torch.equal(off, lq.repeat(3, 1, 1, 1))


def test_draws_follow_the_authors_ranges():
    lq = torch.rand(2, 3, 20, 24)
    generator = NegativeGenerator(num_neg=200, gaussian_blur_prob=1, resize_prob=1, gaussian_noise_prob=0.5)
    torch.manual_seed(3)
    draws = generator.draw(lq)
    kernels = [k for d in draws for k in d.blur_kernel]
    assert set(kernels) == {3, 5, 7, 9, 11}
    assert all(0.1 <= s <= 2 for d in draws for s in d.blur_sigma)
    heights = [d.size[0] for d in draws]
    assert min(heights) >= 10 and max(heights) <= 29 and any(h > 20 for h in heights) and any(h < 20 for h in heights)
    assert 0.1 < sum(h > 20 for h in heights) / len(heights) < 0.4  # up with probability 0.25
    # one factor for both sides, truncated: int(20 * s), int(24 * s)
    assert all(abs(d.size[1] / 24 - d.size[0] / 20) < 0.06 for d in draws)
    assert {d.resize_mode for d in draws} == {d.restore_mode for d in draws} == set(RESIZE_MODES)
    noisy = [d for d in draws if d.noise is not None]
    assert 50 < len(noisy) < 150 and all(d.noise.shape == (2, 3) + d.size for d in noisy)


def test_apply_replays_given_draws():
    lq = torch.zeros(1, 1, 15, 15)
    lq[0, 0, 7, 7] = 1
    blurred = NegativeGenerator(num_neg=1).apply(lq, [CopyDraws(blur_kernel=(3, 7), blur_sigma=(0.5, 1.5))])[1, 0]
    # kornia's gaussian_blur2d(x, (3, 7), (0.5, 1.5)): 3 rows and sigma 0.5 along y, 7 columns and sigma 1.5 along x
    y, x = torch.arange(3.) - 1, torch.arange(7.) - 3
    expected = torch.exp(-y**2 / 0.5)[:, None] * torch.exp(-x**2 / 4.5)[None, :]
    assert torch.allclose(blurred[6:9, 4:11], expected / expected.sum(), atol=1e-7)
    assert blurred.sum().item() == pytest.approx(1.0) and blurred[5].abs().max() == 0 and blurred[:, 3].abs().max() == 0

    step = torch.zeros(1, 3, 16, 16)
    step[..., 8:] = 1
    noise = torch.full((1, 3, 8, 8), 0.1)
    draw = CopyDraws(size=(8, 8), resize_mode='area', restore_mode='bicubic', noise=noise)
    out = NegativeGenerator(num_neg=1).apply(step, [draw])[1:]
    # the values of resize and noise are pinned against the authors' negatives by test_golden_dckd; here their layout
    assert out.shape == step.shape
    assert out[..., :4].max() == pytest.approx(0.1, abs=1e-6)  # flat 0 region + 0.1 noise, back at 16x16
    assert out.max() > 1  # bicubic overshoot, not clipped after the resize back


def test_gaussian_kernel_hand_computed():
    e = math.exp(-0.5)
    assert torch.allclose(gaussian_kernel_1d(3, 1.0), torch.tensor([e, 1, e]) / (1 + 2 * e))
    assert gaussian_kernel_1d(11, 2.0).sum().item() == pytest.approx(1.0)


def test_negative_generator_options():
    assert NegativeGenerator.from_options({'train': {'num_neg': 6}, 'resize_prob': 0.3}).num_neg == 6
    assert NegativeGenerator.from_options({'train': {}, 'resize_prob': 0.3}).resize_prob == 0.3
    with pytest.raises(OptionError, match='train.num_neg'):
        NegativeGenerator(num_neg=0)
    with pytest.raises(OptionError, match='gray_noise_prob'):
        NegativeGenerator(gray_noise_prob=1.5)
