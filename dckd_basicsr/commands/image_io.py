"""Reading images for a network and writing its results, as BasicSR and Real-ESRGAN's inference script do.

8-bit images are read and written as BasicSR's ``img2tensor`` / ``tensor2img`` do; 16-bit PNG/TIFF in, 16-bit PNG/TIFF
out. Grayscale images go through a 3-channel network as three equal channels and come back as one (a 1-channel network
takes them as they are; it refuses colour images). Output files follow Real-ESRGAN's ``inference_realesrgan.py``:
``<out_dir>/<name>_<suffix>.<ext>``.
"""
import os.path as osp
from dataclasses import dataclass
from typing import List, Optional

import cv2
import numpy as np
from basicsr.utils import img2tensor, scandir, tensor2img
from torch import Tensor

from dckd_basicsr.errors import OptionError

IMG_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp', '.ppm', '.pgm')
# Extensions cv2 writes 16-bit images to; a 16-bit result asked for another one is written as PNG.
SIXTEEN_BIT_EXTENSIONS = ('png', 'tif', 'tiff')


class UnreadableImage(OptionError):
    """An image file that cannot be decoded; ``dckd-infer`` skips it unless told to stop."""


def unreadable_image(path: str) -> str:
    """Why ``cv2`` could not decode ``path``, in words."""
    if not osp.isfile(path):
        return 'no such file.'
    if osp.getsize(path) == 0:
        return 'the file is empty (0 bytes).'
    return 'cannot be read as an image (it is damaged or truncated, or not an image cv2 can decode).'


@dataclass
class LoadedImage:
    """An image as the network sees it: ``tensor`` (1, C, H, W) RGB in [0, 1], plus what is needed to write the
    result as the input was (``max_value`` 255 or 65535, ``gray``, ``alpha`` in [0, 1] or None)."""
    tensor: Tensor
    max_value: int
    gray: bool
    alpha: Optional[np.ndarray]


def read_image(path: str, net_channels: int) -> LoadedImage:
    """Read an 8- or 16-bit image (gray, BGR or BGRA) as BasicSR does (``cv2.imread`` + :func:`img2tensor`)."""
    img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise UnreadableImage(f'{path}: {unreadable_image(path)}')
    if img.dtype == np.uint8:
        max_value = 255
    elif img.dtype == np.uint16:
        max_value = 65535
    else:
        raise OptionError(f'{path}: {img.dtype} pixels; only 8- and 16-bit images are supported.')
    img = img.astype(np.float32) / max_value
    alpha = None
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    if img.ndim == 3 and img.shape[2] == 4:
        img, alpha = img[..., :3], img[..., 3]
    elif img.ndim == 3 and img.shape[2] != 3:
        raise OptionError(f'{path}: {img.shape[2]} channels; expected gray, BGR or BGRA.')
    gray = img.ndim == 2
    if net_channels == 1:
        if not gray:
            raise OptionError(f'{path} is a colour image, but the network takes 1-channel (grayscale) images; convert '
                              'it to grayscale first.')
        tensor = img2tensor(img[..., None], bgr2rgb=False, float32=True)
    elif net_channels == 3:
        if gray:
            img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
        tensor = img2tensor(img, bgr2rgb=True, float32=True)
    else:
        raise OptionError(f'the network takes {net_channels}-channel inputs; dckd-infer reads 1- and 3-channel '
                          'images only.')
    return LoadedImage(tensor.unsqueeze(0), max_value, gray, alpha)


def to_image(output: Tensor, max_value: int, gray: bool) -> np.ndarray:
    """The network output as an image array: BasicSR's :func:`tensor2img` (uint8), or uint16 for 16-bit inputs."""
    if max_value == 255:
        img = tensor2img(output, rgb2bgr=True, out_type=np.uint8)
    else:
        img = (tensor2img(output, rgb2bgr=True, out_type=np.float32) * 65535.0).round().astype(np.uint16)
    if gray and img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    return img


def output_path(input_path: str, out_dir: str, suffix: str, ext: str, rgba: bool, sixteen_bit: bool) -> str:
    """Real-ESRGAN's naming: ``<out_dir>/<name>_<suffix>.<ext>`` (``<name>.<ext>`` for an empty suffix); ``auto``
    keeps the input's extension; RGBA results are PNG, 16-bit ones PNG unless the extension is PNG/TIFF."""
    name, extension = osp.splitext(osp.basename(input_path))
    extension = extension[1:] if ext == 'auto' else ext
    if rgba or (sixteen_bit and extension.lower() not in SIXTEEN_BIT_EXTENSIONS):
        extension = 'png'
    return osp.join(out_dir, f'{name}_{suffix}.{extension}' if suffix else f'{name}.{extension}')


def input_files(path: str) -> List[str]:
    """The image (a file) or the images of a folder (sorted, not recursive)."""
    if osp.isfile(path):
        return [path]
    if osp.isdir(path):
        files = sorted(scandir(path, suffix=IMG_EXTENSIONS + tuple(e.upper() for e in IMG_EXTENSIONS),
                               full_path=True))
        if not files:
            raise OptionError(f'-i {path}: no images ({", ".join(IMG_EXTENSIONS)}) in this folder.')
        return files
    raise OptionError(f'-i {path}: no such file or folder.')
