"""Frozen VQGAN encoder and codebook (taming-transformers, Esser et al. 2021) for DCKD's feature space.

Only the parts DCKD uses are built: the convolutional encoder, ``quant_conv`` and the codebook. Parameter names follow
taming-transformers' ``VQModel`` (``encoder.down.{i}.block.{j}.conv1``, ``quant_conv``, ``quantize.embedding.weight``
...), so the weights of a taming Lightning checkpoint load unchanged (the decoder and loss weights are ignored).

Two uses, both in one pass (:meth:`VQGANEncoder.encode`):

* multi-level features for the dynamic contrastive loss (Eq. 5): the output of the first residual block of every
  resolution level, i.e. channels 128/128/256/256/512 at strides 1/2/4/8/16 for the ImageNet f16 model. As in the
  authors' feature pass, the tap is taken before that level's attention block (the f16 model has one at the deepest
  level only), and a pass that only needs taps stops right after the deepest tapped block;
* per-pixel code distributions for the distribution mapping loss (Eq. 8): ``softmax(-||z - e_k||^2 / T)`` over the
  codebook vectors ``e_k`` for every latent pixel ``z`` of ``quant_conv(encoder(x))``.

Inputs must have a height and width divisible by ``2 ** (len(ch_mult) - 1)`` (16 for the f16 model); anything else
raises :class:`~dckd_basicsr.errors.OptionError` instead of being padded, because padding would change the features.

The encoder is frozen, yet the student output's pass keeps a graph (the anchor of Eq. 5 needs its gradient). Autograd
would store, per convolution, its input (only needed for weight gradients, which a frozen encoder never computes) and,
per GroupNorm + swish, both the normalised and the activated tensor: about 13 full-resolution 128-channel tensors at
the first level. With frozen weights the blocks store only each GroupNorm's input instead
(:class:`_NormSwish` recomputes the normalisation in the backward pass, :class:`_FrozenConv2d` needs only its weight
for the input gradient): the same values and gradients with about a third of the activation memory.
"""
import inspect
from typing import Callable, List, Optional, Sequence, Tuple

import torch
from basicsr.utils.registry import ARCH_REGISTRY
from torch import Tensor, nn
from torch.nn import functional as F

from dckd_basicsr.errors import OptionError

# taming-transformers' ImageNet VQGAN, f16, 1024 codes (the checkpoint the paper uses).
DEFAULT_DDCONFIG = dict(
    double_z=False, z_channels=256, resolution=256, in_channels=3, out_ch=3, ch=128, ch_mult=[1, 1, 2, 2, 4],
    num_res_blocks=2, attn_resolutions=[16], dropout=0.0)
# ddconfig keys taming's Encoder/Decoder take that this encoder does not read: accepted, with the only value
# this encoder can honour where it builds something (None: any value, the key only concerns the decoder).
UNUSED_DDCONFIG = {'out_ch': None, 'give_pre_end': None, 'resamp_with_conv': True}


def input_size_multiple(ddconfig: Optional[dict] = None) -> int:
    """The multiple an encoder input's height and width must be: ``2 ** (len(ch_mult) - 1)`` (16 for f16)."""
    return 2**(len(dict(DEFAULT_DDCONFIG, **(ddconfig or {}))['ch_mult']) - 1)


TapCallback = Callable[[int, Tensor], None]


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


def _store_less(module: nn.Module, x: Tensor) -> bool:
    """Whether ``module`` can run with :class:`_NormSwish` / :class:`_FrozenConv2d`: autograd records the pass and
    no parameter of ``module`` needs a gradient."""
    return torch.is_grad_enabled() and x.requires_grad and not any(p.requires_grad for p in module.parameters())


class _NormSwish(torch.autograd.Function):
    """``swish(norm(x))`` for a frozen GroupNorm, storing only ``x``: the backward pass recomputes the normalisation
    in the precision the forward pass had (autocast may run GroupNorm in fp32) and applies the swish and GroupNorm
    backward kernels to it directly (no nested autograd call, so profilers and FLOP counters work)."""

    @staticmethod
    def forward(ctx, x: Tensor, norm: nn.GroupNorm) -> Tensor:
        normalized = norm(x)
        ctx.norm, ctx.dtype = norm, normalized.dtype
        ctx.save_for_backward(x)
        return F.silu(normalized)

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        x, = ctx.saved_tensors
        norm = ctx.norm
        x = x.to(ctx.dtype)  # what autocast's fp32 policy for GroupNorm did to a lower-precision input
        batch, channels, pixels = x.size(0), x.size(1), x[0, 0].numel()
        normalized, mean, rstd = torch.ops.aten.native_group_norm(x, norm.weight, norm.bias, batch, channels, pixels,
                                                                  norm.num_groups, norm.eps)
        grad = torch.ops.aten.silu_backward(grad_output.to(normalized.dtype), normalized)
        del normalized
        grad = torch.ops.aten.native_group_norm_backward(grad, x, mean, rstd, norm.weight, batch, channels, pixels,
                                                         norm.num_groups, [True, False, False])[0]
        return grad, None


class _FrozenConv2d(torch.autograd.Function):
    """A convolution with frozen weights: the input gradient is a transposed convolution of the output gradient with
    the weight, in the precision the forward convolution ran in (under autocast: the lower one), so the input is not
    stored."""

    @staticmethod
    def forward(ctx, x: Tensor, conv: nn.Conv2d) -> Tensor:
        out = conv(x)
        ctx.conv, ctx.dtype, ctx.input_size = conv, out.dtype, x.shape[-2:]
        return out

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        conv = ctx.conv
        stride, padding, dilation = conv.stride, conv.padding, conv.dilation
        # the input rows/columns the strided convolution did not reach get zero gradient (output_padding)
        extra = [size - ((out - 1) * s - 2 * p + d * (k - 1) + 1)
                 for size, out, s, p, d, k in zip(ctx.input_size, grad_output.shape[-2:], stride, padding, dilation,
                                                  conv.kernel_size)]
        grad = F.conv_transpose2d(grad_output.to(ctx.dtype), conv.weight.to(ctx.dtype), None, stride, padding, extra,
                                  conv.groups, dilation)
        return grad, None


def _conv(conv: nn.Conv2d, x: Tensor, store_less: bool) -> Tensor:
    return _FrozenConv2d.apply(x, conv) if store_less else conv(x)


def _norm_swish(norm: nn.GroupNorm, x: Tensor, store_less: bool) -> Tensor:
    return _NormSwish.apply(x, norm) if store_less else F.silu(norm(x))


class ResnetBlock(nn.Module):
    """Pre-activation residual block: (GroupNorm, swish, 3x3 conv) twice, 1x1 shortcut when channels change."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = _group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, 1, 1)
        self.norm2 = _group_norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1)
        if in_channels != out_channels:
            self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1, 1, 0)

    def forward(self, x: Tensor) -> Tensor:
        if not torch.is_grad_enabled():  # the no-grad passes: swish and the residual sum in place (7-10 % faster)
            h = self.conv1(F.silu(self.norm1(x), inplace=True))
            h = self.conv2(self.dropout(F.silu(self.norm2(h), inplace=True)))
            shortcut = self.nin_shortcut(x) if hasattr(self, 'nin_shortcut') else x
            return h.add_(shortcut) if h.dtype == shortcut.dtype else shortcut + h  # autocast: keep the promotion
        store_less = _store_less(self, x)
        h = _conv(self.conv1, _norm_swish(self.norm1, x, store_less), store_less)
        h = _conv(self.conv2, self.dropout(_norm_swish(self.norm2, h, store_less)), store_less)
        shortcut = _conv(self.nin_shortcut, x, store_less) if hasattr(self, 'nin_shortcut') else x
        return shortcut + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all pixels, with a residual connection (1x1 convs for q, k, v, proj_out)."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = _group_norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm(x)
        b, c, height, width = h.shape
        q, k, v = (conv(h).reshape(b, c, height * width).transpose(1, 2) for conv in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(c)) v
        return x + self.proj_out(out.transpose(1, 2).reshape(b, c, height, width))


class Downsample(nn.Module):
    """Stride-2 3x3 convolution after padding one pixel on the right and bottom."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 2, 0)

    def forward(self, x: Tensor) -> Tensor:
        return _conv(self.conv, F.pad(x, (0, 1, 0, 1)), _store_less(self, x))


class Encoder(nn.Module):
    """taming-transformers' encoder: ``conv_in``, ``len(ch_mult)`` resolution levels, a middle block, ``conv_out``."""

    def __init__(self, ch: int = 128, ch_mult: Sequence[int] = (1, 1, 2, 2, 4), num_res_blocks: int = 2,
                 attn_resolutions: Sequence[int] = (16, ), dropout: float = 0.0, in_channels: int = 3,
                 resolution: int = 256, z_channels: int = 256, double_z: bool = False):
        super().__init__()
        self.num_levels = len(ch_mult)
        self.num_res_blocks = num_res_blocks
        self.conv_in = nn.Conv2d(in_channels, ch, 3, 1, 1)
        self.down = nn.ModuleList()
        channels, res = ch, resolution
        for level, mult in enumerate(ch_mult):
            stage = nn.Module()
            stage.block = nn.ModuleList()
            stage.attn = nn.ModuleList()
            for _ in range(num_res_blocks):
                stage.block.append(ResnetBlock(channels, ch * mult, dropout))
                channels = ch * mult
                if res in attn_resolutions:
                    stage.attn.append(AttnBlock(channels))
            if level != self.num_levels - 1:
                stage.downsample = Downsample(channels)
                res //= 2
            self.down.append(stage)
        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(channels, channels, dropout)
        self.mid.attn_1 = AttnBlock(channels)
        self.mid.block_2 = ResnetBlock(channels, channels, dropout)
        self.norm_out = _group_norm(channels)
        self.conv_out = nn.Conv2d(channels, 2 * z_channels if double_z else z_channels, 3, 1, 1)
        self.tap_channels = [ch * mult for mult in ch_mult]

    def forward(self, x: Tensor, taps: Sequence[int] = (), full_rows: Optional[int] = None,
                on_tap: Optional[TapCallback] = None) -> Tuple[List, Tensor]:
        """Run the encoder, recording the first block's output (before attention) of every level in ``taps``.

        After the last tap only the first ``full_rows`` samples continue (all when None); with ``full_rows=0`` the
        pass stops there and the returned output is None. With ``on_tap``, each tap is handed to
        ``on_tap(tap_index, feature)`` as soon as it is computed instead of being collected (the list stays empty).
        """
        taps = sorted(set(taps))
        last_tap = taps[-1] if taps else -1
        features = []
        h = _conv(self.conv_in, x, _store_less(self.conv_in, x))
        for level, stage in enumerate(self.down):
            for index, block in enumerate(stage.block):
                h = block(h)
                if index == 0 and level in taps:  # the authors' tap: the block output, before the level's attention
                    if on_tap is None:
                        features.append(h)
                    else:
                        on_tap(taps.index(level), h)
                    if level == last_tap:
                        if full_rows == 0:
                            return features, None
                        if full_rows is not None:
                            h = h[:full_rows]
                if len(stage.attn) > 0:
                    h = stage.attn[index](h)
            if level != self.num_levels - 1:
                h = stage.downsample(h)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        return features, self.conv_out(F.silu(self.norm_out(h)))


class Codebook(nn.Module):
    """The VQ codebook, named like taming's ``VectorQuantizer`` so ``quantize.embedding.weight`` loads."""

    def __init__(self, n_embed: int, embed_dim: int):
        super().__init__()
        self.embedding = nn.Embedding(n_embed, embed_dim)


@ARCH_REGISTRY.register()
class VQGANEncoder(nn.Module):
    """Frozen taming VQGAN encoder, ``quant_conv`` and codebook, for DCKD's contrastive taps and code distributions.

    Args:
        embed_dim: Dimension of the codebook vectors (taming's ``embed_dim``). Default: 256.
        n_embed: Number of codebook vectors (taming's ``n_embed``). Default: 1024.
        ddconfig: taming's encoder config (``ch``, ``ch_mult``, ``num_res_blocks``, ``attn_resolutions``, ``dropout``,
            ``in_channels``, ``resolution``, ``z_channels``, ``double_z``). taming's keys for the decoder side are
            accepted and ignored (``out_ch``, ``give_pre_end``), ``resamp_with_conv`` must be true; any other key is
            an error. Default: the ImageNet f16 model.
        input_range: Range the images are mapped to before encoding. The authors feed the [0, 1] images unchanged
            (default, ``[0, 1]``); taming was trained on ``[-1, 1]``, which ``[-1, 1]`` selects.
        temperature: T in ``softmax(-||z - e_k||^2 / T)`` (Eq. 8 uses 1). Default: 1.
        feature_levels: Resolution levels whose first block output is a contrastive tap. Default: all levels.
    """

    def __init__(self, embed_dim: int = 256, n_embed: int = 1024, ddconfig: Optional[dict] = None,
                 input_range: Sequence[float] = (0, 1), temperature: float = 1.0,
                 feature_levels: Optional[Sequence[int]] = None):
        super().__init__()
        config = dict(DEFAULT_DDCONFIG, **(ddconfig or {}))
        for key, honoured in UNUSED_DDCONFIG.items():
            value = config.pop(key, honoured)
            if honoured is not None and value != honoured:
                raise OptionError(f'network_vqgan.ddconfig.{key}: {value}; this encoder supports only {honoured} '
                                  "(taming's f16 models use it).")
        accepted = inspect.signature(Encoder).parameters
        unknown = sorted(set(config) - set(accepted))
        if unknown:
            raise OptionError(f'network_vqgan.ddconfig.{unknown[0]}: unknown key; taming\'s ddconfig keys are '
                              f'{", ".join(sorted([*accepted, *UNUSED_DDCONFIG]))}.')
        self.encoder = Encoder(**config)
        self.quant_conv = nn.Conv2d(config['z_channels'], embed_dim, 1)
        self.quantize = Codebook(n_embed, embed_dim)
        if list(input_range) not in ([0, 1], [-1, 1]):
            raise OptionError(f'network_vqgan.input_range: {list(input_range)}; use [0, 1] or [-1, 1].')
        self.input_range = tuple(input_range)
        if temperature <= 0:
            raise OptionError(f'network_vqgan.temperature: {temperature}; it must be > 0.')
        self.temperature = float(temperature)
        num_levels = self.encoder.num_levels
        self.feature_levels = list(range(num_levels)) if feature_levels is None else sorted(feature_levels)
        if not self.feature_levels or not all(0 <= level < num_levels for level in self.feature_levels):
            raise OptionError(f'network_vqgan.feature_levels: {feature_levels}; use levels in 0..{num_levels - 1}.')
        self.size_multiple = input_size_multiple(config)

    @property
    def num_feature_levels(self) -> int:
        return len(self.feature_levels)

    @property
    def feature_channels(self) -> List[int]:
        return [self.encoder.tap_channels[level] for level in self.feature_levels]

    def _prepare(self, x: Tensor) -> Tensor:
        height, width = x.shape[-2:]
        if height % self.size_multiple or width % self.size_multiple:
            multiple = self.size_multiple
            raise OptionError(f'the VQGAN encoder got a {height}x{width} image; height and width must be multiples '
                              f'of {multiple}: choose gt_size / patch sizes divisible by {multiple}.')
        return x * 2 - 1 if self.input_range == (-1, 1) else x

    def code_logits(self, z: Tensor) -> Tensor:
        """Eq. 8 before the softmax: ``-||z - e_k||^2 / T`` for every latent pixel, shape (B, h, w, n_embed).

        Always in fp32, also under autocast: the expansion ``|z|^2 + |e|^2 - 2 z.e`` cancels too much in 16 bits.
        """
        with torch.autocast(device_type=z.device.type, enabled=False):
            z = z.float().permute(0, 2, 3, 1)
            codes = self.quantize.embedding.weight.float()
            squared = (z.pow(2).sum(-1, keepdim=True) + codes.pow(2).sum(-1) - 2 * torch.matmul(z, codes.t()))
            return -squared / self.temperature

    def code_distribution(self, x: Tensor) -> Tensor:
        """Eq. 8: per-pixel distribution over the codebook of ``quant_conv(encoder(x))``, shape (B, h, w, n_embed)."""
        return self.encode(x, taps=False)[1].softmax(dim=-1)

    def features(self, x: Tensor) -> List[Tensor]:
        """Contrastive taps only; the pass stops after the last tapped level."""
        return self.encode(x, full_rows=0)[0]

    def encode(self, x: Tensor, taps: bool = True, full_rows: Optional[int] = None,
               on_tap: Optional[TapCallback] = None) -> Tuple[List, Optional[Tensor]]:
        """One encoder pass returning the contrastive taps of all samples and the code logits of the first rows.

        Args:
            x: Images (B, 3, H, W) in [0, 1], H and W multiples of :attr:`size_multiple`.
            taps: Record the contrastive taps (else the returned list is empty).
            full_rows: Only the first ``full_rows`` samples go on past the last tap to ``quant_conv`` and the code
                logits (all when None, none when 0, in which case the logits are None).
            on_tap: Called as ``on_tap(level_index, feature)`` with each tap as soon as it is computed, instead of
                collecting the taps (see :meth:`Encoder.forward`).

        Returns:
            (list of B-row tap tensors, code logits (full_rows, h, w, n_embed) or None).
        """
        levels = self.feature_levels if taps else ()
        features, z = self.encoder(self._prepare(x), levels, full_rows if taps else None, on_tap)
        return features, (None if z is None else self.code_logits(self.quant_conv(z)))

    def forward(self, x: Tensor) -> Tuple[List, Tensor]:
        return self.encode(x)


@ARCH_REGISTRY.register()
class VQGAN(VQGANEncoder):
    """The authors' type name (``network_vqgan.type: VQGAN``); same as :class:`VQGANEncoder`."""
