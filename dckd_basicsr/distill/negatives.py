"""Random degradations on image tensors: DCKD's negatives.

Negatives (DCKD, "Dynamic Contrastive Regularization"): the LQ batch followed by ``num_neg`` degraded copies of it,
``[lq, copy_1, ..., copy_num_neg]``, all restored by the history model in one batched pass. As in the authors' code,
every copy is the whole batch degraded with Real-ESRGAN's first-order operations, one random choice per copy and
operation, in this order:

* Gaussian blur (probability ``gaussian_blur_prob``): odd kernel height and width in 3..11 and sigma in 0.1..2 per
  axis (axis-aligned), reflect border: kornia's ``gaussian_blur2d``, computed here with BasicSR's ``filter2D``;
* resize (probability ``resize_prob``): up by a factor in [1, 1.5) with probability ``resize_up_prob`` = 0.25,
  else down by one in [0.5, 1), to ``int(size * factor)`` with area, bilinear or bicubic interpolation
  (``align_corners=False``);
* Gaussian noise (probability ``gaussian_noise_prob``), at the resized size: BasicSR's
  ``random_add_gaussian_noise_pt`` with sigma 1..30 on the 0..255 scale and gray noise with probability
  ``gray_noise_prob``, both per sample, clipped to [0, 1]. BasicSR draws one gray pattern per call, so the gray
  samples of a copy share it, each with its own sigma;
* back to the input size when resized, with a newly drawn mode and no clipping afterwards.

Drawing is split from applying (:meth:`NegativeGenerator.draw` returns one :class:`CopyDraws` per copy,
:meth:`NegativeGenerator.apply` uses them), so given draws replay exactly. Every draw comes from the global torch
generators, which :class:`~dckd_basicsr.models.kd_model.KDModel` swaps for the model's own saved stream during the
training step (a resumed run draws the same negatives): the choices, kernel parameters and sizes from the CPU one
(they are needed on the host, so a GPU never has to synchronise for them), the noise on the input's device (BasicSR's
noise function asks the device whether any sample is gray: one synchronisation per noisy copy).
"""
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from basicsr.data.degradations import random_generate_gaussian_noise_pt
from basicsr.utils.img_process_util import filter2D
from torch import Tensor
from torch.nn import functional as F

from dckd_basicsr.errors import OptionError
from dckd_basicsr.options import check_unit_interval, train_option

RESIZE_MODES = ('area', 'bilinear', 'bicubic')


@dataclass
class CopyDraws:
    """The random choices of one degraded copy of the batch (None: that operation is skipped).

    Attributes:
        blur_kernel: Blur kernel (height, width), odd.
        blur_sigma: Blur sigma (along y, along x).
        size: Resized (height, width).
        resize_mode: Interpolation mode to ``size``.
        restore_mode: Interpolation mode back to the input size.
        noise: Additive noise (B, C, height, width) at the resized size, before clipping.
    """
    blur_kernel: Optional[Tuple[int, int]] = None
    blur_sigma: Optional[Tuple[float, float]] = None
    size: Optional[Tuple[int, int]] = None
    resize_mode: Optional[str] = None
    restore_mode: Optional[str] = None
    noise: Optional[Tensor] = None


def gaussian_kernel_1d(size: int, sigma: float, dtype: torch.dtype = torch.float32,
                       device: Optional[torch.device] = None) -> Tensor:
    """kornia's ``get_gaussian_kernel1d``: ``exp(-x^2 / (2 sigma^2))`` at ``x = -(size // 2) .. size // 2``,
    normalised to sum 1, computed in ``dtype``."""
    x = torch.arange(size, dtype=dtype, device=device) - size // 2
    sigma = torch.tensor(sigma, dtype=dtype, device=device)
    kernel = torch.exp(-x.pow(2) / (2 * sigma.pow(2)))
    return kernel / kernel.sum()


def gaussian_blur(x: Tensor, kernel: Tuple[int, int], sigma: Tuple[float, float]) -> Tensor:
    """kornia's ``gaussian_blur2d(x, kernel, sigma)`` (reflect border): the outer product of the two normalised 1-D
    kernels, zero-padded to a square and applied by BasicSR's ``filter2D``."""
    height, width = kernel
    size = max(height, width)
    column = gaussian_kernel_1d(height, sigma[0], x.dtype, x.device)
    row = gaussian_kernel_1d(width, sigma[1], x.dtype, x.device)
    square = F.pad(column[:, None] * row[None, :], ((size - width) // 2, ) * 2 + ((size - height) // 2, ) * 2)
    return filter2D(x, square[None])


def _interpolate(x: Tensor, size: Tuple[int, int], mode: str) -> Tensor:
    return F.interpolate(x, size=size, mode=mode, align_corners=None if mode == 'area' else False)


class NegativeGenerator:
    """Make DCKD's negative inputs: the LQ batch followed by ``num_neg`` randomly degraded copies of it.

    Defaults are the paper's best setting (noise only); the ranges are options too, for experiments.

    Args:
        num_neg: Degraded copies (the negatives are these plus the LQ input). Default: 4.
        gaussian_noise_prob: Probability that a copy gets Gaussian noise. Default: 1.
        gray_noise_prob: Probability that a sample's noise is gray (the same on all channels). Default: 0.5.
        gaussian_blur_prob: Probability that a copy is blurred. Default: 0.
        resize_prob: Probability that a copy is resized and back. Default: 0.
        noise_range: Noise sigma range on the 0..255 scale. Default: [1, 30].
        blur_kernel_range: Odd kernel sizes, low and high. Default: [3, 11].
        blur_sigma: Blur sigma range. Default: [0.1, 2].
        resize_up_prob: Probability that a resize goes up. Default: 0.25.
        resize_up_range: Upscaling factor range. Default: [1, 1.5].
        resize_down_range: Downscaling factor range. Default: [0.5, 1].
    """

    def __init__(self, num_neg: int = 4, gaussian_noise_prob: float = 1.0, gray_noise_prob: float = 0.5,
                 gaussian_blur_prob: float = 0.0, resize_prob: float = 0.0, noise_range: Sequence[float] = (1, 30),
                 blur_kernel_range: Sequence[int] = (3, 11), blur_sigma: Sequence[float] = (0.1, 2.0),
                 resize_up_prob: float = 0.25, resize_up_range: Sequence[float] = (1.0, 1.5),
                 resize_down_range: Sequence[float] = (0.5, 1.0)):
        if not isinstance(num_neg, int) or num_neg < 1:
            raise OptionError(f'train.num_neg: {num_neg!r}; it must be an integer >= 1 (the paper uses 4).')
        probs = dict(gaussian_noise_prob=gaussian_noise_prob, gray_noise_prob=gray_noise_prob,
                     gaussian_blur_prob=gaussian_blur_prob, resize_prob=resize_prob, resize_up_prob=resize_up_prob)
        for key, value in probs.items():
            check_unit_interval(f'train.{key}', value)
        low, high = blur_kernel_range
        if low % 2 == 0 or high % 2 == 0 or not 1 <= low <= high:
            raise OptionError(f'train.blur_kernel_range: {list(blur_kernel_range)}; give two odd sizes, low <= high.')
        self.num_neg = num_neg
        self.noise_prob, self.gray_prob = gaussian_noise_prob, gray_noise_prob
        self.blur_prob, self.resize_prob, self.resize_up_prob = gaussian_blur_prob, resize_prob, resize_up_prob
        self.noise_range, self.blur_kernel_range, self.blur_sigma = list(noise_range), (low, high), blur_sigma
        self.resize_up_range, self.resize_down_range = resize_up_range, resize_down_range

    @classmethod
    def from_options(cls, opt: Dict) -> 'NegativeGenerator':
        """Build from the authors' keys, looked up in ``opt['train']`` first, then at the top level of ``opt``."""
        names = ('num_neg', 'gaussian_noise_prob', 'gray_noise_prob', 'gaussian_blur_prob', 'resize_prob',
                 'noise_range', 'blur_kernel_range', 'blur_sigma', 'resize_up_prob', 'resize_up_range',
                 'resize_down_range')
        kwargs = {name: train_option(opt, name) for name in names}
        return cls(**{name: value for name, value in kwargs.items() if value is not None})

    def draw(self, lq: Tensor) -> List[CopyDraws]:
        """The random choices of the ``num_neg`` copies of ``lq`` (B, C, H, W)."""

        def uniform(low: float, high: float) -> float:
            return torch.rand(()).item() * (high - low) + low

        batch, channels, height, width = lq.shape
        low, high = self.blur_kernel_range
        draws = []
        for _ in range(self.num_neg):
            copy = CopyDraws()
            if torch.rand(()).item() < self.blur_prob:
                copy.blur_kernel = tuple(int(k) * 2 + 1 for k in torch.randint(low // 2, high // 2 + 1, (2, )))
                copy.blur_sigma = (uniform(*self.blur_sigma), uniform(*self.blur_sigma))
            if torch.rand(()).item() < self.resize_prob:
                up = torch.rand(()).item() < self.resize_up_prob
                scale = uniform(*(self.resize_up_range if up else self.resize_down_range))
                copy.size = (max(1, int(height * scale)), max(1, int(width * scale)))
                copy.resize_mode, copy.restore_mode = (RESIZE_MODES[int(m)] for m in torch.randint(3, (2, )))
            if torch.rand(()).item() < self.noise_prob:
                size = copy.size or (height, width)
                # only the shape, dtype and device of the image are read
                like = lq.new_empty((batch, channels) + size)
                copy.noise = random_generate_gaussian_noise_pt(like, self.noise_range, self.gray_prob)
            draws.append(copy)
        return draws

    def apply(self, lq: Tensor, draws: Sequence[CopyDraws]) -> Tensor:
        """``[lq, copy_1, ..., copy_N]`` concatenated along the batch, copy ``j`` degraded as ``draws[j - 1]`` says."""
        copies = [lq]
        for copy in draws:
            x = lq
            if copy.blur_kernel is not None:
                x = gaussian_blur(x, copy.blur_kernel, copy.blur_sigma)
            if copy.size is not None:
                x = _interpolate(x, copy.size, copy.resize_mode)
            if copy.noise is not None:  # random_add_gaussian_noise_pt(clip=True, rounds=False) with the drawn noise
                x = torch.clamp(x + copy.noise.to(x), 0, 1)
            if copy.size is not None:
                x = _interpolate(x, lq.shape[-2:], copy.restore_mode)
            copies.append(x)
        return torch.cat(copies)

    def __call__(self, lq: Tensor) -> Tensor:
        """(num_neg + 1) * B inputs, negative-major: ``[lq, degraded_1, ..., degraded_num_neg]``."""
        return self.apply(lq, self.draw(lq))
