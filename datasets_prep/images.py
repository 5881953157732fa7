"""Images as BasicSR's data scripts read and write them: listing, header sizes, decoding, PNG records, MATLAB bicubic
downscaling and reflect padding."""
import warnings
from os import path as osp
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
from PIL import Image

import dckd_basicsr  # noqa: F401  (makes basicsr importable on current torchvision)
from basicsr.utils import scandir
from basicsr.utils.matlab_functions import imresize
from dckd_basicsr.errors import OptionError

IMG_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp', '.ppm', '.pgm')
FOLDER_PNG_LEVEL = 3  # PNG compression of image folders, as BasicSR's data preparation scripts write them

Shape = Tuple[int, int, int]
Record = Tuple[str, bytes, Shape]  # (key, PNG bytes, (h, w, c)) for one entry of one output


def list_images(folder: str) -> List[str]:
    """Sorted names of the image files directly inside ``folder``; an error naming the folder if there are none."""
    if not osp.isdir(folder):
        raise OptionError(f'{folder}: no such folder.')
    names = sorted(name for name in scandir(folder) if osp.splitext(name)[1].lower() in IMG_EXTENSIONS)
    if not names:
        raise OptionError(f'{folder}: no images found (expected {", ".join(IMG_EXTENSIONS)} files).')
    return names


def unique_stems(folder: str, names: Sequence[str]) -> Dict[str, str]:
    """Map file stem to file name, refusing two files that differ only by extension."""
    stems = {}
    for name in names:
        stem = osp.splitext(name)[0]
        if stem in stems:
            raise OptionError(f'{osp.join(folder, name)} and {stems[stem]} have the same name; keep only one.')
        stems[stem] = name
    return stems


def image_size(path: str) -> Tuple[int, int]:
    """(height, width) from the file header, without decoding; an error naming the file if it is not an image."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', Image.DecompressionBombWarning)
            with Image.open(path) as img:
                width, height = img.size
    except Exception as error:  # PIL raises several types for files that are not images
        raise OptionError(f'{path}: cannot be read as an image ({error}). Replace or remove the file.') from None
    return height, width


def read_image(path: str) -> np.ndarray:
    """Decode an image as BasicSR's scripts do (``cv2.IMREAD_UNCHANGED``: BGR, grey stays 2-D, 16-bit kept)."""
    img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise OptionError(f'{path}: cannot be decoded (corrupt or truncated file). Replace or remove the file.')
    return img


def encode_png(img: np.ndarray, compress_level: int) -> Tuple[bytes, Shape]:
    """PNG bytes and (h, w, c) of an image, as ``make_lmdb_from_imgs`` encodes and describes it."""
    ok, buffer = cv2.imencode('.png', np.ascontiguousarray(img), [cv2.IMWRITE_PNG_COMPRESSION, compress_level])
    if not ok:
        raise RuntimeError(f'OpenCV could not encode an image of shape {img.shape} as PNG.')
    channels = 1 if img.ndim == 2 else img.shape[2]
    return buffer.tobytes(), (img.shape[0], img.shape[1], channels)


def png_record(key: str, img: np.ndarray, compress_level: int, source: Optional[str] = None) -> Record:
    """A record for ``img``; when ``source`` is a PNG file holding exactly ``img``, its bytes are kept unchanged."""
    if source is not None and source.lower().endswith('.png'):
        with open(source, 'rb') as f:
            data = f.read()
        channels = 1 if img.ndim == 2 else img.shape[2]
        return key, data, (img.shape[0], img.shape[1], channels)
    return (key, ) + encode_png(img, compress_level)


def bicubic_downscale(img: np.ndarray, scale: int) -> np.ndarray:
    """MATLAB ``imresize(img, 1/scale)`` (bicubic, antialiased) via BasicSR's ``imresize``.

    Works on the integer pixel values and rounds and clips to the input dtype, as MATLAB does for integer images (the
    official ``DIV2K_train_LR_bicubic`` and benchmark LR images were made this way). ``img`` must be mod-cropped.
    """
    if img.shape[0] % scale or img.shape[1] % scale:
        raise ValueError(f'image of size {img.shape[:2]} is not a multiple of scale {scale}; mod-crop it first.')
    out = imresize(img, 1 / scale)
    info = np.iinfo(img.dtype)
    out = np.clip(np.round(out), info.min, info.max).astype(img.dtype)
    assert out.shape[:2] == (img.shape[0] // scale, img.shape[1] // scale), out.shape
    return out


def pad_to_min_size(img: np.ndarray, size: int) -> np.ndarray:
    """Reflect-pad the bottom and right of ``img`` up to ``size`` pixels per side (unchanged when large enough).

    BasicSR's ``paired_random_crop`` cannot cut a ``gt_size`` patch from a smaller image; the Restormer authors pad
    such deraining images with reflection before cropping, which padding once here reproduces.
    """
    pad_h, pad_w = max(0, size - img.shape[0]), max(0, size - img.shape[1])
    if not pad_h and not pad_w:
        return img
    return cv2.copyMakeBorder(img, 0, pad_h, 0, pad_w, cv2.BORDER_REFLECT)
