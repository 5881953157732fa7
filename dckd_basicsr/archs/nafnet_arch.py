"""NAFNet: "Simple Baselines for Image Restoration", Chen, Chu, Zhang, Sun; ECCV 2022 (arXiv 2204.04676).

Written from the paper. Parameter and buffer names follow the official release, so its ``params`` checkpoints load
with ``strict=True``: ``intro``, ``encoders.L.B.*``, ``downs.L``, ``middle_blks.B.*``, ``ups.L.0``,
``decoders.L.B.*``, ``ending``; inside a block ``norm1``, ``conv1``, ``conv2``, ``sca.1``, ``conv3``, ``norm2``,
``conv4``, ``conv5``, ``beta``, ``gamma``.

``NAFNetLocal`` is the same network evaluated with the Test-time Local Converter (TLC) of Chu et al., "Improving
Image Restoration by Revisiting Global Information Aggregation", ECCV 2022, which the NAFNet authors use for their
GoPro numbers: every global average pooling of the channel attention becomes an average over a local window whose
size is ``base_size / train_size`` (1.5 by default) times the feature map size seen at training resolution.
"""
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from dckd_basicsr.errors import OptionError


class LayerNorm2d(nn.Module):
    """Layer normalisation over the channel dimension of an NCHW tensor (per pixel), with affine ``weight``/``bias``."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / (var + self.eps).sqrt()
        return self.weight.view(1, -1, 1, 1) * x + self.bias.view(1, -1, 1, 1)


class SimpleGate(nn.Module):
    """SimpleGate (paper Eq. 4): split the channels in two halves and multiply them."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x.chunk(2, dim=1)
        return x1 * x2


class NAFBlock(nn.Module):
    """Nonlinear-activation-free block (paper Fig. 3c).

    Two residual halves, each scaled by a learnable per-channel factor initialised to zero (``beta``, ``gamma``):
    LayerNorm -> 1x1 conv (x2 channels) -> 3x3 depth-wise conv -> SimpleGate -> simplified channel attention
    (Eq. 5: global pooling + 1x1 conv, multiplied in) -> 1x1 conv; then LayerNorm -> 1x1 conv (x2) -> SimpleGate ->
    1x1 conv.
    """

    def __init__(self, c: int, dw_expand: int = 2, ffn_expand: int = 2, drop_out_rate: float = 0.):
        super().__init__()
        dw_channel = c * dw_expand
        self.conv1 = nn.Conv2d(c, dw_channel, 1)
        self.conv2 = nn.Conv2d(dw_channel, dw_channel, 3, padding=1, groups=dw_channel)
        self.conv3 = nn.Conv2d(dw_channel // 2, c, 1)
        # Index 0 is the pooling (no weights), so the 1x1 conv is ``sca.1`` as in the official checkpoints.
        self.sca = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(dw_channel // 2, dw_channel // 2, 1))
        self.sg = SimpleGate()

        ffn_channel = ffn_expand * c
        self.conv4 = nn.Conv2d(c, ffn_channel, 1)
        self.conv5 = nn.Conv2d(ffn_channel // 2, c, 1)

        self.norm1 = LayerNorm2d(c)
        self.norm2 = LayerNorm2d(c)
        self.dropout1 = nn.Dropout(drop_out_rate) if drop_out_rate > 0. else nn.Identity()
        self.dropout2 = nn.Dropout(drop_out_rate) if drop_out_rate > 0. else nn.Identity()

        self.beta = nn.Parameter(torch.zeros((1, c, 1, 1)))
        self.gamma = nn.Parameter(torch.zeros((1, c, 1, 1)))

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        x = self.sg(self.conv2(self.conv1(self.norm1(inp))))
        x = self.conv3(x * self.sca(x))
        y = inp + self.dropout1(x) * self.beta

        x = self.conv5(self.sg(self.conv4(self.norm2(y))))
        return y + self.dropout2(x) * self.gamma


@ARCH_REGISTRY.register()
class NAFNet(nn.Module):
    """NAFNet (paper Fig. 2/3): a U-Net of NAF blocks with a global residual.

    Args:
        img_channel: Input and output channels.
        width: Channels of the first level; each of the ``len(enc_blk_nums)`` downsamplings (2x2 conv, stride 2)
            doubles them, each upsampling (1x1 conv + PixelShuffle) halves them.
        middle_blk_num: Blocks at the lowest resolution.
        enc_blk_nums: Blocks per encoder level, top level first.
        dec_blk_nums: Blocks per decoder level, lowest level first.
        drop_out_rate: Dropout inside the blocks (0 in the GoPro models).

    Inputs whose height or width is not a multiple of ``2 ** len(enc_blk_nums)`` are zero-padded at the bottom and
    right and the output is cropped back, as the official implementation does, so full-size GoPro frames work.
    """

    def __init__(self,
                 img_channel: int = 3,
                 width: int = 16,
                 middle_blk_num: int = 1,
                 enc_blk_nums: Sequence[int] = (),
                 dec_blk_nums: Sequence[int] = (),
                 drop_out_rate: float = 0.):
        super().__init__()
        self.intro = nn.Conv2d(img_channel, width, 3, padding=1)
        self.ending = nn.Conv2d(width, img_channel, 3, padding=1)

        self.encoders = nn.ModuleList()
        self.decoders = nn.ModuleList()
        self.ups = nn.ModuleList()
        self.downs = nn.ModuleList()

        chan = width
        for num in enc_blk_nums:
            self.encoders.append(nn.Sequential(*[NAFBlock(chan, drop_out_rate=drop_out_rate) for _ in range(num)]))
            self.downs.append(nn.Conv2d(chan, 2 * chan, 2, 2))
            chan = chan * 2
        self.middle_blks = nn.Sequential(*[NAFBlock(chan, drop_out_rate=drop_out_rate) for _ in range(middle_blk_num)])
        for num in dec_blk_nums:
            self.ups.append(nn.Sequential(nn.Conv2d(chan, chan * 2, 1, bias=False), nn.PixelShuffle(2)))
            chan = chan // 2
            self.decoders.append(nn.Sequential(*[NAFBlock(chan, drop_out_rate=drop_out_rate) for _ in range(num)]))

        self.padder_size = 2**len(self.encoders)

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        _, _, h, w = inp.shape
        inp = self.check_image_size(inp)
        x = self.intro(inp)

        skips = []
        for encoder, down in zip(self.encoders, self.downs):
            x = encoder(x)
            skips.append(x)
            x = down(x)
        x = self.middle_blks(x)
        for decoder, up, skip in zip(self.decoders, self.ups, skips[::-1]):
            x = decoder(up(x) + skip)

        x = self.ending(x) + inp
        return x[:, :, :h, :w]

    def check_image_size(self, x: torch.Tensor) -> torch.Tensor:
        """Zero-pad height and width (bottom, right) to multiples of ``2 ** number of levels``."""
        _, _, h, w = x.size()
        mod_pad_h = (self.padder_size - h % self.padder_size) % self.padder_size
        mod_pad_w = (self.padder_size - w % self.padder_size) % self.padder_size
        return F.pad(x, (0, mod_pad_w, 0, mod_pad_h))


class LocalAvgPool2d(nn.Module):
    """Average over a ``kernel_size`` window around each pixel (TLC), the image-border outputs replicated outward.

    The window mean is computed from an integral image over the valid positions (output ``(h - k + 1, w - k + 1)``)
    and the result is replicate-padded back to ``(h, w)``. When the window covers the whole feature map this is the
    global average pooling the network was trained with.
    """

    def __init__(self, kernel_size: Tuple[int, int]):
        super().__init__()
        self.kernel_size = tuple(kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, _, h, w = x.shape
        if self.kernel_size[0] >= h and self.kernel_size[1] >= w:
            return F.adaptive_avg_pool2d(x, 1)
        k1, k2 = min(h, self.kernel_size[0]), min(w, self.kernel_size[1])
        s = F.pad(x.cumsum(dim=-1).cumsum(dim=-2), (1, 0, 1, 0))
        out = (s[:, :, k1:, k2:] + s[:, :, :-k1, :-k2] - s[:, :, :-k1, k2:] - s[:, :, k1:, :-k2]) / (k1 * k2)
        _h, _w = out.shape[2:]
        pad = ((w - _w) // 2, (w - _w + 1) // 2, (h - _h) // 2, (h - _h + 1) // 2)
        return F.pad(out, pad, mode='replicate')

    def extra_repr(self) -> str:
        return f'kernel_size={self.kernel_size}'


@ARCH_REGISTRY.register()
class NAFNetLocal(NAFNet):
    """NAFNet with Test-time Local Converter statistics; the same parameters as :class:`NAFNet`.

    Args:
        train_size: Training input size ``(N, C, H, W)`` (only ``H`` and ``W`` are used); default 256x256.
        base_size: Window size at the top level; default ``1.5 * train_size``. At every level the window is
            ``base_size / train_size`` times the feature map the network saw there during training (so
            ``base_size // f`` at downsampling factor ``f``).
        fast_imp: The authors' approximate fast pooling; not supported (only ``False``).
        **kwargs: :class:`NAFNet` arguments.
    """

    def __init__(self,
                 *args,
                 train_size: Sequence[int] = (1, 3, 256, 256),
                 base_size: Optional[Sequence[int]] = None,
                 fast_imp: bool = False,
                 **kwargs):
        super().__init__(*args, **kwargs)
        if fast_imp:
            raise OptionError('NAFNetLocal: fast_imp: true (the authors\' approximate pooling) is not supported; '
                              'use fast_imp: false.')
        train_h, train_w = int(train_size[-2]), int(train_size[-1])
        if base_size is None:
            base_size = (int(train_h * 1.5), int(train_w * 1.5))
        elif isinstance(base_size, int):
            base_size = (base_size, base_size)
        # Feature map size of each level for a training-size input (padded as in forward), as the authors' TLC
        # derives its windows from a dummy forward at ``train_size``.
        pad_h = -(-train_h // self.padder_size) * self.padder_size
        pad_w = -(-train_w // self.padder_size) * self.padder_size
        for factor, blocks in self._blocks_by_factor():
            kernel = ((pad_h // factor) * base_size[0] // train_h, (pad_w // factor) * base_size[1] // train_w)
            for block in blocks:
                # ``sca.0`` has no parameters, so replacing it keeps the state dict unchanged.
                block.sca[0] = LocalAvgPool2d(kernel)

    def _blocks_by_factor(self) -> List[Tuple[int, List[NAFBlock]]]:
        levels = [(2**i, list(enc)) for i, enc in enumerate(self.encoders)]
        levels.append((2**len(self.encoders), list(self.middle_blks)))
        n = len(self.decoders)
        levels += [(2**(n - 1 - i), list(dec)) for i, dec in enumerate(self.decoders)]
        return levels
