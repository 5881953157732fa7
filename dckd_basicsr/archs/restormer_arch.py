"""Restormer: "Restormer: Efficient Transformer for High-Resolution Image Restoration", Zamir, Arora, Khan, Hayat,
Khan, Yang; CVPR 2022 (arXiv 2111.09881).

Written from the paper. Parameter names follow the official release, so its ``params`` checkpoints load with
``strict=True``: ``patch_embed.proj``, ``encoder_level{1,2,3}``, ``down{1_2,2_3,3_4}.body.0``, ``latent``,
``up{4_3,3_2,2_1}.body.0``, ``reduce_chan_level{3,2}``, ``decoder_level{3,2,1}``, ``refinement``, ``output``
(``skip_conv`` for the dual-pixel task); inside a block ``norm1.body``, ``attn.{temperature, qkv, qkv_dwconv,
project_out}``, ``norm2.body``, ``ffn.{project_in, dwconv, project_out}``.
"""
from typing import Sequence

import torch
import torch.nn.functional as F
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from dckd_basicsr.errors import OptionError


class BiasFreeLayerNorm(nn.Module):
    """Channel LayerNorm without the mean subtraction and bias: ``x / sqrt(var + 1e-5) * weight``."""

    def __init__(self, normalized_shape: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(normalized_shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var = x.var(-1, keepdim=True, unbiased=False)
        return x / torch.sqrt(var + 1e-5) * self.weight


class WithBiasLayerNorm(nn.Module):
    """Channel LayerNorm: ``(x - mean) / sqrt(var + 1e-5) * weight + bias``."""

    def __init__(self, normalized_shape: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(normalized_shape))
        self.bias = nn.Parameter(torch.zeros(normalized_shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(-1, keepdim=True)
        var = x.var(-1, keepdim=True, unbiased=False)
        return (x - mean) / torch.sqrt(var + 1e-5) * self.weight + self.bias


class LayerNorm(nn.Module):
    """LayerNorm over the channels of an NCHW tensor at every pixel; ``LayerNorm_type`` 'BiasFree' or 'WithBias'."""

    def __init__(self, dim: int, layer_norm_type: str):
        super().__init__()
        if layer_norm_type == 'BiasFree':
            self.body = BiasFreeLayerNorm(dim)
        elif layer_norm_type == 'WithBias':
            self.body = WithBiasLayerNorm(dim)
        else:
            raise OptionError(f"Restormer: LayerNorm_type must be 'BiasFree' or 'WithBias', got {layer_norm_type!r}.")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        x = self.body(x.flatten(2).transpose(1, 2))  # (b, h*w, c)
        return x.transpose(1, 2).reshape(b, c, h, w)


class FeedForward(nn.Module):
    """Gated-Dconv Feed-forward Network (GDFN, paper Eq. 3-4): ``W0 (gelu(Wd1 W1 x) * Wd2 W2 x)``."""

    def __init__(self, dim: int, ffn_expansion_factor: float, bias: bool):
        super().__init__()
        hidden = int(dim * ffn_expansion_factor)
        self.project_in = nn.Conv2d(dim, hidden * 2, kernel_size=1, bias=bias)
        self.dwconv = nn.Conv2d(hidden * 2, hidden * 2, kernel_size=3, padding=1, groups=hidden * 2, bias=bias)
        self.project_out = nn.Conv2d(hidden, dim, kernel_size=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(x1) * x2)


class Attention(nn.Module):
    """Multi-Dconv head Transposed Attention (MDTA, paper Eq. 1-2).

    Queries, keys and values from a 1x1 conv followed by a 3x3 depth-wise conv; attention across channels
    (a ``C/heads x C/heads`` map per head) of L2-normalised queries and keys, scaled by a learnable temperature.
    """

    def __init__(self, dim: int, num_heads: int, bias: bool):
        super().__init__()
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv = nn.Conv2d(dim, dim * 3, kernel_size=1, bias=bias)
        self.qkv_dwconv = nn.Conv2d(dim * 3, dim * 3, kernel_size=3, padding=1, groups=dim * 3, bias=bias)
        self.project_out = nn.Conv2d(dim, dim, kernel_size=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv_dwconv(self.qkv(x)).chunk(3, dim=1)
        q, k, v = (t.reshape(b, self.num_heads, c // self.num_heads, h * w) for t in (q, k, v))
        q = F.normalize(q, dim=-1)
        k = F.normalize(k, dim=-1)
        attn = ((q @ k.transpose(-2, -1)) * self.temperature).softmax(dim=-1)
        out = (attn @ v).reshape(b, c, h, w)
        return self.project_out(out)


class TransformerBlock(nn.Module):
    """Restormer block: ``x + MDTA(LN(x))``, then ``x + GDFN(LN(x))``."""

    def __init__(self, dim: int, num_heads: int, ffn_expansion_factor: float, bias: bool, layer_norm_type: str):
        super().__init__()
        self.norm1 = LayerNorm(dim, layer_norm_type)
        self.attn = Attention(dim, num_heads, bias)
        self.norm2 = LayerNorm(dim, layer_norm_type)
        self.ffn = FeedForward(dim, ffn_expansion_factor, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class OverlapPatchEmbed(nn.Module):
    """3x3 convolution from the image to ``embed_dim`` features."""

    def __init__(self, in_c: int = 3, embed_dim: int = 48, bias: bool = False):
        super().__init__()
        self.proj = nn.Conv2d(in_c, embed_dim, kernel_size=3, stride=1, padding=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class Downsample(nn.Module):
    """Halve the channels with a 3x3 conv, then pixel-unshuffle by 2 (channels x2 overall, resolution / 2)."""

    def __init__(self, n_feat: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(n_feat, n_feat // 2, 3, 1, 1, bias=False), nn.PixelUnshuffle(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class Upsample(nn.Module):
    """Double the channels with a 3x3 conv, then pixel-shuffle by 2 (channels / 2 overall, resolution x2)."""

    def __init__(self, n_feat: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(n_feat, n_feat * 2, 3, 1, 1, bias=False), nn.PixelShuffle(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _blocks(num: int, dim: int, heads: int, ffn_expansion_factor: float, bias: bool, layer_norm_type: str):
    return nn.Sequential(
        *[TransformerBlock(dim, heads, ffn_expansion_factor, bias, layer_norm_type) for _ in range(num)])


@ARCH_REGISTRY.register()
class Restormer(nn.Module):
    """Restormer (paper Fig. 2): a 4-level encoder-decoder of transformer blocks plus refinement blocks.

    Args:
        inp_channels: Input channels (6 for the dual-pixel defocus task).
        out_channels: Output channels.
        dim: Channels of level 1; levels 2, 3, 4 have ``2*dim``, ``4*dim``, ``8*dim``. Decoder level 1 and the
            refinement blocks work on ``2*dim`` (the level-1 skip is concatenated without reduction).
        num_blocks: Blocks of levels 1-4 (the decoder levels 3, 2, 1 reuse the counts of the encoder levels).
        num_refinement_blocks: Blocks at full resolution after the decoder.
        heads: Attention heads per level.
        ffn_expansion_factor: GDFN expansion (hidden channels ``int(dim * factor)``).
        bias: Bias in the convolutions.
        LayerNorm_type: 'WithBias' (deblurring, deraining) or 'BiasFree' (dual-pixel defocus deblurring).
        dual_pixel_task: Dual-pixel defocus deblurring: a 1x1 skip conv from level 1 replaces the global residual.
        pad_multiple: Inputs are reflect-padded (bottom, right) to a multiple of this and the output is cropped back,
            as the official test scripts do (8 for the three downsamplings); 1 turns padding off.
    """

    def __init__(self,
                 inp_channels: int = 3,
                 out_channels: int = 3,
                 dim: int = 48,
                 num_blocks: Sequence[int] = (4, 6, 6, 8),
                 num_refinement_blocks: int = 4,
                 heads: Sequence[int] = (1, 2, 4, 8),
                 ffn_expansion_factor: float = 2.66,
                 bias: bool = False,
                 LayerNorm_type: str = 'WithBias',  # noqa: N803 (the official option name)
                 dual_pixel_task: bool = False,
                 pad_multiple: int = 8):
        super().__init__()
        args = dict(ffn_expansion_factor=ffn_expansion_factor, bias=bias, layer_norm_type=LayerNorm_type)
        self.patch_embed = OverlapPatchEmbed(inp_channels, dim)

        self.encoder_level1 = _blocks(num_blocks[0], dim, heads[0], **args)
        self.down1_2 = Downsample(dim)
        self.encoder_level2 = _blocks(num_blocks[1], dim * 2, heads[1], **args)
        self.down2_3 = Downsample(dim * 2)
        self.encoder_level3 = _blocks(num_blocks[2], dim * 4, heads[2], **args)
        self.down3_4 = Downsample(dim * 4)
        self.latent = _blocks(num_blocks[3], dim * 8, heads[3], **args)

        self.up4_3 = Upsample(dim * 8)
        self.reduce_chan_level3 = nn.Conv2d(dim * 8, dim * 4, kernel_size=1, bias=bias)
        self.decoder_level3 = _blocks(num_blocks[2], dim * 4, heads[2], **args)
        self.up3_2 = Upsample(dim * 4)
        self.reduce_chan_level2 = nn.Conv2d(dim * 4, dim * 2, kernel_size=1, bias=bias)
        self.decoder_level2 = _blocks(num_blocks[1], dim * 2, heads[1], **args)
        self.up2_1 = Upsample(dim * 2)
        self.decoder_level1 = _blocks(num_blocks[0], dim * 2, heads[0], **args)

        self.refinement = _blocks(num_refinement_blocks, dim * 2, heads[0], **args)

        self.dual_pixel_task = dual_pixel_task
        if self.dual_pixel_task:
            self.skip_conv = nn.Conv2d(dim, dim * 2, kernel_size=1, bias=bias)
        self.output = nn.Conv2d(dim * 2, out_channels, kernel_size=3, stride=1, padding=1, bias=bias)
        self.pad_multiple = pad_multiple

    def forward(self, inp_img: torch.Tensor) -> torch.Tensor:
        _, _, h, w = inp_img.shape
        inp_img = self.pad_image(inp_img)

        inp_enc_level1 = self.patch_embed(inp_img)
        out_enc_level1 = self.encoder_level1(inp_enc_level1)
        out_enc_level2 = self.encoder_level2(self.down1_2(out_enc_level1))
        out_enc_level3 = self.encoder_level3(self.down2_3(out_enc_level2))
        latent = self.latent(self.down3_4(out_enc_level3))

        x = self.reduce_chan_level3(torch.cat([self.up4_3(latent), out_enc_level3], 1))
        x = self.decoder_level3(x)
        x = self.reduce_chan_level2(torch.cat([self.up3_2(x), out_enc_level2], 1))
        x = self.decoder_level2(x)
        x = self.decoder_level1(torch.cat([self.up2_1(x), out_enc_level1], 1))
        x = self.refinement(x)

        if self.dual_pixel_task:
            x = self.output(x + self.skip_conv(inp_enc_level1))
        else:
            x = self.output(x) + inp_img
        return x[:, :, :h, :w]

    def pad_image(self, x: torch.Tensor) -> torch.Tensor:
        """Reflect-pad height and width (bottom, right) to multiples of ``pad_multiple`` (replicate if too small)."""
        m = self.pad_multiple
        _, _, h, w = x.shape
        pad_h, pad_w = (m - h % m) % m, (m - w % m) % m
        if pad_h == 0 and pad_w == 0:
            return x
        mode = 'reflect' if pad_h < h and pad_w < w else 'replicate'
        return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
