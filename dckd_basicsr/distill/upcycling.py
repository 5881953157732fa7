"""DUKD's data upcycling (Zhang et al., "Data Upcycling Knowledge Distillation for Image Super-Resolution", 2023).

Two new student inputs per training batch, made from the pairs (LQ ``x``, GT ``y``) the loader gives, on which the
frozen teacher's output is the label (:class:`dckd_basicsr.models.dukd_model.DUKDModel` uses them):

* zoom-in (:func:`zoom_in_tiles`): LQ-sized tiles of the GT patch. The GT patch is ``scale x scale`` LQ-sized tiles
  on a grid; ``n`` grid positions, drawn once for the whole batch (:func:`random_grid_positions`), are cut from
  every sample. The teacher restores them to patches ``scale`` times larger, of detail finer than any GT;
* zoom-out (:func:`matlab_bicubic_downscale`): the LQ input downscaled by ``1 / scale`` with MATLAB's bicubic
  ``imresize`` (anti-aliased), as the LQ of the training data was made from the GT.

:func:`matlab_bicubic_downscale` is BasicSR's ``imresize`` (same weights, from BasicSR's
``calculate_weights_indices``, and the same symmetric border) written as two matrix products, so it runs batched
and on the tensors' device.
"""
import functools
import math
from typing import List, Optional, Sequence, Tuple

import torch
from basicsr.utils.matlab_functions import calculate_weights_indices
from torch import Tensor


@functools.lru_cache(maxsize=32)
def _resize_matrix(in_length: int, scale: float, antialiasing: bool = True) -> Tensor:
    """(out, in) matrix of BasicSR's ``imresize`` along one axis, the symmetric border folded in."""
    out_length = math.ceil(in_length * scale)
    weights, indices, sym_len_s, _ = calculate_weights_indices(in_length, out_length, scale, 'cubic', 4, antialiasing)
    matrix = torch.zeros(out_length, in_length, dtype=torch.float64)
    for i in range(out_length):
        for k in range(weights.size(1)):
            padded = int(indices[i][k])  # index into the border-extended signal
            if padded < sym_len_s:
                source = sym_len_s - 1 - padded
            elif padded < sym_len_s + in_length:
                source = padded - sym_len_s
            else:
                source = in_length - 1 - (padded - sym_len_s - in_length)
            matrix[i, source] += float(weights[i][k])
    return matrix


def matlab_bicubic_downscale(x: Tensor, scale: int) -> Tensor:
    """(B, C, H, W) -> (B, C, ceil(H / scale), ceil(W / scale)), MATLAB ``imresize(x, 1 / scale, 'bicubic')``."""
    rows = _resize_matrix(x.size(-2), 1 / scale).to(x)
    cols = _resize_matrix(x.size(-1), 1 / scale).to(x)
    return rows @ x @ cols.t()


def random_grid_positions(scale: int, count: int, generator: Optional[torch.Generator] = None) -> List[Tuple[int, int]]:
    """``count`` distinct (row, column) cells of the ``scale x scale`` grid, in random order (one permutation)."""
    if not 1 <= count <= scale * scale:
        raise ValueError(f'{count} zoom-in tiles asked for, but a x{scale} GT patch holds 1 to {scale * scale}.')
    order = torch.randperm(scale * scale, generator=generator)[:count].tolist()
    return [divmod(cell, scale) for cell in order]


def zoom_in_tiles(gt: Tensor, tile_size: Tuple[int, int], positions: Sequence[Tuple[int, int]]) -> Tensor:
    """The GT tiles of ``tile_size`` (h, w) at grid cells ``positions``, batched tile-major: ``(len(positions) * B,
    C, h, w)``, the B samples' first tile, then their second, ..."""
    h, w = tile_size
    if any(not (0 <= i and (i + 1) * h <= gt.size(-2) and 0 <= j and (j + 1) * w <= gt.size(-1)) for i, j in positions):
        raise ValueError(f'grid cells {list(positions)} of {h}x{w} tiles do not fit a {gt.size(-2)}x{gt.size(-1)} GT.')
    return torch.cat([gt[..., i * h:(i + 1) * h, j * w:(j + 1) * w] for i, j in positions])
