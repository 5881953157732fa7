"""Where the sub-images of a photo lie, placed as BasicSR's ``extract_subimages`` recipe places them, and their keys."""
from typing import List, Tuple


def crop_starts(length: int, crop: int, step: int, thresh: int = 0) -> List[int]:
    """Offsets of the sub-images along one axis, placed as BasicSR's ``extract_subimages`` recipe places them.

    One every ``step`` pixels, plus one flush with the far border when more than ``thresh`` pixels would be left.
    """
    if length < crop:
        raise ValueError(f'length {length} is smaller than the crop size {crop}.')
    starts = list(range(0, length - crop + 1, step))
    if length - (starts[-1] + crop) > thresh:
        starts.append(length - crop)
    return starts


def sub_image_boxes(height: int, width: int, crop: int, step: int, thresh: int = 0) -> List[Tuple[int, int]]:
    """Top-left corners (y, x) of all sub-images in row-major order; the i-th (from 1) gets the key suffix _s{i:03d}."""
    return [(y, x) for y in crop_starts(height, crop, step, thresh) for x in crop_starts(width, crop, step, thresh)]


def sub_image_key(stem: str, index: int) -> str:
    return f'{stem}_s{index:03d}'
