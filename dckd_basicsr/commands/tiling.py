"""Running a network on a whole image or on overlapping tiles, with validation's padding rule for every call.

With ``tile`` > 0 the image is cut into ``tile x tile`` tiles, each run with ``tile_pad`` pixels of context on every
side (clipped at the image border), so images larger than the device memory fit. For a convolutional network whose
receptive field radius is at most ``tile_pad`` the tiled result equals the whole-image one (up to float rounding);
networks with global operations (RCAN's and NAFNet's channel attention, Restormer's channel attention, SwinIR's
shifted windows) see a different context per tile, so the result differs slightly near tile seams.
"""
import contextlib
from typing import Callable, List, Optional, Tuple

import torch
from torch import Tensor
from tqdm import tqdm

from dckd_basicsr.archs.padding import padded_forward
from dckd_basicsr.errors import OptionError


def tile_boxes(height: int, width: int, tile: int, tile_pad: int) -> List[Tuple[Tuple[int, int, int, int], ...]]:
    """Tiles covering the image: ``(y0, y1, x0, x1)`` of the part a tile writes and ``(py0, py1, px0, px1)`` of the
    input it reads (that part plus ``tile_pad`` pixels of context, clipped at the image border)."""
    boxes = []
    for y0 in range(0, height, tile):
        for x0 in range(0, width, tile):
            y1, x1 = min(y0 + tile, height), min(x0 + tile, width)
            padded = (max(y0 - tile_pad, 0), min(y1 + tile_pad, height), max(x0 - tile_pad, 0),
                      min(x1 + tile_pad, width))
            boxes.append(((y0, y1, x0, x1), padded))
    return boxes


def restore(net: Callable[[Tensor], Tensor],
            img: Tensor,
            pad_multiple: int = 1,
            tile: int = 0,
            tile_pad: int = 10,
            device: Optional[torch.device] = None,
            dtype: Optional[torch.dtype] = None,
            progress: bool = False) -> Tensor:
    """Run ``net`` on ``img`` (``(1, C, H, W)`` in [0, 1]) with validation's padding rule, whole or in tiles.

    The input and the assembled output stay on ``img``'s device (the CPU for a tiled run, so only one tile at a time
    occupies the accelerator); every network call runs on ``device`` in ``dtype``. The scale is read from the output.

    Args:
        net: The network (or any callable image -> image).
        img: Input batch.
        pad_multiple: Each call's input is padded to a multiple of this (:func:`padded_forward`).
        tile: Tile size in input pixels; 0 runs the whole image at once.
        tile_pad: Context on every side of a tile, in input pixels.
        device: Where the network runs; ``img``'s device when None.
        dtype: ``torch.float16`` / ``torch.bfloat16`` run the network under ``torch.autocast`` in that precision
            (weights stay float32); None or float32 runs it in float32.
        progress: Show a tqdm bar over the tiles.

    Returns:
        The output, float32, on ``img``'s device.
    """
    device = device or img.device
    reduced = dtype is not None and dtype != torch.float32

    def run(x: Tensor) -> Tensor:
        precision = torch.autocast(device.type, dtype=dtype) if reduced else contextlib.nullcontext()
        with torch.no_grad(), precision:
            return padded_forward(net, x.to(device), pad_multiple).float().to(img.device)

    height, width = img.shape[-2:]
    if tile <= 0 or (tile >= height and tile >= width):
        return run(img)
    boxes = tile_boxes(height, width, tile, tile_pad)
    output = None
    scale = None
    for (y0, y1, x0, x1), (py0, py1, px0, px1) in tqdm(boxes, desc='tiles', unit='tile', leave=False,
                                                      disable=not progress):
        out = run(img[..., py0:py1, px0:px1])
        if output is None:
            scale = out.shape[-2] // (py1 - py0)
            if out.shape[-2] != scale * (py1 - py0) or out.shape[-1] != scale * (px1 - px0):
                raise OptionError(f'the network maps a {py1 - py0}x{px1 - px0} tile to {out.shape[-2]}x'
                                  f'{out.shape[-1]}: not an integer scale, so it cannot be tiled.')
            output = img.new_zeros(img.shape[0], out.shape[1], height * scale, width * scale, dtype=torch.float32)
        output[..., y0 * scale:y1 * scale, x0 * scale:x1 * scale] = \
            out[..., (y0 - py0) * scale:(y1 - py0) * scale, (x0 - px0) * scale:(x1 - px0) * scale]
    return output
