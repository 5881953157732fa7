"""Batched random degradations on image tensors: DCKD's negatives.

Negatives (DCKD, "Dynamic Contrastive Regularization"): the LQ input plus ``num_neg`` copies degraded with
Real-ESRGAN's first-order operations, each applied per sample with its own probability, in this order:

* Gaussian blur: odd kernel size 3..11, sigma 0.1..2 drawn per axis (axis-aligned), reflect padding
  (BasicSR's ``filter2D``);
* resize: up by x1..1.5 (probability ``resize_up_prob`` = 0.25) or down by x0.5..1 (otherwise), with area, bilinear or
  bicubic interpolation, then back to the input size with the same mode;
* Gaussian noise: sigma 1..30 on the 0..255 scale, the same noise on all channels with probability
  ``gray_noise_prob``, clipped to [0, 1].

BasicSR's ``random_add_gaussian_noise_pt`` is not used: it draws one gray-noise pattern for the whole batch, so
two negatives of one image would carry the same noise up to a scale. Every draw uses the ``generator`` passed in (the
global torch generator of the input's device when None, except the resize factors and modes, which are drawn on the
CPU then, since the output sizes must be known on the host: no device sync);
:class:`~dckd_basicsr.models.kd_model.KDModel` runs its training step on its own saved random stream, so a resumed run
draws the same negatives.
"""
from typing import Dict, Optional, Sequence

import torch
from basicsr.utils.img_process_util import filter2D
from torch import Tensor
from torch.nn import functional as F

from dckd_basicsr.errors import OptionError

RESIZE_MODES = ('area', 'bilinear', 'bicubic')
MAX_KERNEL_SIZE = 11


Generator = Optional[torch.Generator]


def _device(generator: Generator, like: Tensor) -> torch.device:
    return like.device if generator is None else generator.device


def _uniform(n: int, low: float, high: float, generator: Generator, like: Tensor) -> Tensor:
    return torch.rand(n, generator=generator, device=_device(generator, like)) * (high - low) + low


def _chosen(n: int, prob: float, generator: Generator, like: Tensor) -> Tensor:
    return torch.rand(n, generator=generator, device=_device(generator, like)) < prob


def gaussian_kernels(sizes: Tensor, sigma_x: Tensor, sigma_y: Tensor, max_size: int = MAX_KERNEL_SIZE) -> Tensor:
    """Axis-aligned Gaussian kernels of odd ``sizes``, each centred in a (max_size, max_size) grid of zeros."""
    radius = max_size // 2
    grid = torch.arange(-radius, radius + 1, device=sizes.device, dtype=sigma_x.dtype)
    y, x = grid.view(1, -1, 1), grid.view(1, 1, -1)
    kernel = torch.exp(-0.5 * ((x / sigma_x.view(-1, 1, 1))**2 + (y / sigma_y.view(-1, 1, 1))**2))
    half = (sizes.view(-1, 1, 1) // 2).to(sigma_x.dtype)
    kernel = kernel * ((x.abs() <= half) & (y.abs() <= half))
    return kernel / kernel.sum(dim=(1, 2), keepdim=True)


class NegativeGenerator:
    """Make DCKD's negative inputs: the LQ batch followed by ``num_neg`` randomly degraded copies of it.

    Defaults are the paper's best setting (noise only). Ranges are options too, for experiments.
    """

    def __init__(self, num_neg: int = 4, gaussian_noise_prob: float = 1.0, gray_noise_prob: float = 0.5,
                 gaussian_blur_prob: float = 0.0, resize_prob: float = 0.0, noise_range: Sequence[float] = (1, 30),
                 blur_kernel_range: Sequence[int] = (3, MAX_KERNEL_SIZE), blur_sigma: Sequence[float] = (0.1, 2.0),
                 resize_up_prob: float = 0.25, resize_up_range: Sequence[float] = (1.0, 1.5),
                 resize_down_range: Sequence[float] = (0.5, 1.0)):
        if not isinstance(num_neg, int) or num_neg < 1:
            raise OptionError(f'train.num_neg: {num_neg!r}; it must be an integer >= 1 (the paper uses 4).')
        probs = dict(gaussian_noise_prob=gaussian_noise_prob, gray_noise_prob=gray_noise_prob,
                     gaussian_blur_prob=gaussian_blur_prob, resize_prob=resize_prob, resize_up_prob=resize_up_prob)
        for key, value in probs.items():
            if not 0 <= value <= 1:
                raise OptionError(f'train.{key}: {value}; a probability must lie in [0, 1].')
        low, high = blur_kernel_range
        if low % 2 == 0 or high % 2 == 0 or not 1 <= low <= high:
            raise OptionError(f'train.blur_kernel_range: {list(blur_kernel_range)}; give two odd sizes, low <= high.')
        self.num_neg = num_neg
        self.noise_prob, self.gray_prob = gaussian_noise_prob, gray_noise_prob
        self.blur_prob, self.resize_prob, self.resize_up_prob = gaussian_blur_prob, resize_prob, resize_up_prob
        self.noise_range, self.blur_kernel_range, self.blur_sigma = noise_range, (low, high), blur_sigma
        self.resize_up_range, self.resize_down_range = resize_up_range, resize_down_range

    @classmethod
    def from_options(cls, opt: Dict) -> 'NegativeGenerator':
        """Build from the authors' keys, looked up in ``opt['train']`` first, then at the top level of ``opt``."""
        names = ('num_neg', 'gaussian_noise_prob', 'gray_noise_prob', 'gaussian_blur_prob', 'resize_prob',
                 'noise_range', 'blur_kernel_range', 'blur_sigma', 'resize_up_prob', 'resize_up_range',
                 'resize_down_range')
        train_opt = opt.get('train') or {}
        kwargs = {name: train_opt.get(name, opt.get(name)) for name in names}
        return cls(**{name: value for name, value in kwargs.items() if value is not None})

    def blur(self, x: Tensor, generator: Generator = None) -> Tensor:
        n = x.size(0)
        low, high = self.blur_kernel_range
        sizes = torch.randint(low // 2, high // 2 + 1, (n, ), generator=generator, device=_device(generator, x)) * 2 + 1
        sigma_x = _uniform(n, *self.blur_sigma, generator, x)
        sigma_y = _uniform(n, *self.blur_sigma, generator, x)
        kernels = gaussian_kernels(sizes, sigma_x, sigma_y, max_size=high).to(x)
        return filter2D(x, kernels)

    def resize(self, x: Tensor, generator: Generator = None) -> Tensor:
        n, _, height, width = x.shape
        # Output sizes are needed on the host: without a generator, draw them from the CPU stream (no device sync).
        like = x if generator is not None else x.new_empty(0, device='cpu')
        up = _chosen(n, self.resize_up_prob, generator, like)
        scale = torch.where(up, _uniform(n, *self.resize_up_range, generator, like),
                            _uniform(n, *self.resize_down_range, generator, like))
        modes = torch.randint(len(RESIZE_MODES), (n, ), generator=generator, device=_device(generator, like))
        outputs = []
        for sample, s, m in zip(x, scale.tolist(), modes.tolist()):
            mode = RESIZE_MODES[m]
            size = (max(1, round(height * s)), max(1, round(width * s)))
            align = {} if mode == 'area' else {'align_corners': False}
            small = F.interpolate(sample[None], size=size, mode=mode, **align)
            outputs.append(F.interpolate(small, size=(height, width), mode=mode, **align))
        return torch.cat(outputs).clamp_(0, 1)

    def noise(self, x: Tensor, generator: Generator = None) -> Tensor:
        n, _, height, width = x.shape
        device = _device(generator, x)
        sigma = _uniform(n, *self.noise_range, generator, x).view(n, 1, 1, 1).to(x) / 255.
        gray = _chosen(n, self.gray_prob, generator, x).view(n, 1, 1, 1)
        color_noise = torch.randn(x.shape, generator=generator, device=device).to(x)
        gray_noise = torch.randn((n, 1, height, width), generator=generator, device=device).to(x)
        return (x + torch.where(gray, gray_noise, color_noise) * sigma).clamp_(0, 1)

    def degrade(self, x: Tensor, generator: Generator = None) -> Tensor:
        """One random degradation per sample of ``x`` (each op applied with its own probability)."""
        n = x.size(0)
        for prob, op in ((self.blur_prob, self.blur), (self.resize_prob, self.resize), (self.noise_prob, self.noise)):
            if prob > 0:
                chosen = _chosen(n, prob, generator, x).view(n, 1, 1, 1)
                x = torch.where(chosen, op(x, generator), x)
        return x

    def __call__(self, lq: Tensor, generator: Generator = None) -> Tensor:
        """(num_neg + 1) * B inputs, negative-major: ``[lq, degraded_1, ..., degraded_num_neg]``."""
        repeated = lq.repeat(self.num_neg, 1, 1, 1)
        return torch.cat([lq, self.degrade(repeated, generator)])
