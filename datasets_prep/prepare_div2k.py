"""DIV2K (or Flickr2K, DF2K) training photos -> BasicSR sub-image LMDBs for HR and bicubic LR.

Usage::

    python datasets_prep/prepare_div2k.py --hr DIV2K_train_HR --out datasets/DIV2K --scales 2 3 4
    python datasets_prep/prepare_div2k.py --hr DIV2K_train_HR --lr DIV2K_train_LR_bicubic --out datasets/DIV2K

Output (``--prefix DIV2K_train``)::

    <out>/DIV2K_train_HR_sub.lmdb                  480x480 sub-images, keys <image>_s001, <image>_s002, ...
    <out>/DIV2K_train_LR_bicubic_X{s}_sub.lmdb     the same keys, (480/s)x(480/s)

Each LMDB is BasicSR's format (``data.mdb``, ``lock.mdb``, ``meta_info.txt`` with ``<key>.png (h,w,c) 1`` lines)
and holds exactly what BasicSR's recipe gives (``extract_subimages`` with crop 480, step 240, threshold 0, then
``make_lmdb_from_imgs``): 32,208 sub-images for the 800 DIV2K training photos. Sub-images go straight from memory
into the LMDB, without the recipe's PNG files.

LR images are MATLAB bicubic (BasicSR's ``imresize``, rounded), the way the official ``DIV2K_train_LR_bicubic`` was
made, from the whole photo, then cut at the HR positions divided by the scale. With ``--lr`` the official LR folder
(``X2/0001x2.png``, ...) is used instead. HR photos are first cropped to a multiple of the least common multiple of
the scales (12 for 2, 3, 4; a no-op for DIV2K and Flickr2K), so that LR and HR sub-images cover the same pixels.
"""
import argparse
import math
import sys
import time
from dataclasses import dataclass
from functools import partial
from os import path as osp
from typing import Dict, List, Optional, Sequence

if __package__ in (None, ''):  # run as ``python datasets_prep/prepare_div2k.py``
    sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from datasets_prep.build import build_outputs  # noqa: E402
from datasets_prep.cli import add_common_arguments, print_summary  # noqa: E402
from datasets_prep.images import (Record, bicubic_downscale, encode_png, image_size, list_images,  # noqa: E402
                                  read_image, unique_stems)
from datasets_prep.outputs import Output, check_lmdb_key  # noqa: E402
from datasets_prep.sub_images import sub_image_boxes, sub_image_key  # noqa: E402
from datasets_prep.verify import verify_pair  # noqa: E402
from basicsr.data.transforms import mod_crop  # noqa: E402
from dckd_basicsr.errors import OptionError, report_option_errors  # noqa: E402


@dataclass
class SubImageSpec:
    """How every photo is cut, and where its sub-images go."""

    crop: int
    step: int
    thresh: int
    modulo: int
    compress_level: int
    hr_out: str
    lr_out: Dict[int, str]


@dataclass
class Photo:
    stem: str
    path: str
    height: int  # after the mod-crop
    width: int
    lr_paths: Dict[int, str]  # official LR files (--lr), by scale


def lr_name(prefix: str, scale: int) -> str:
    return f'{prefix}_LR_bicubic_X{scale}_sub.lmdb'


def hr_name(prefix: str) -> str:
    return f'{prefix}_HR_sub.lmdb'


def find_lr_file(lr_root: str, stem: str, scale: int) -> str:
    """The official LR file of a photo: ``<lr_root>/X{s}/<stem>x{s}.png`` (or ``<stem>.png``)."""
    folder = osp.join(lr_root, f'X{scale}')
    for name in (f'{stem}x{scale}.png', f'{stem}.png'):
        if osp.isfile(osp.join(folder, name)):
            return osp.join(folder, name)
    raise OptionError(f'--lr: {osp.join(folder, f"{stem}x{scale}.png")} not found (the LR image of {stem}).')


def plan_photos(hr_dirs: Sequence[str], lr_root: Optional[str], scales: Sequence[int], crop: int,
                modulo: int) -> List[Photo]:
    """Every HR photo with its (mod-cropped) size and official LR files, after checking all of them."""
    photos, seen = [], {}
    for hr_dir in hr_dirs:
        for stem, name in unique_stems(hr_dir, list_images(hr_dir)).items():
            path = osp.join(hr_dir, name)
            if stem in seen:
                raise OptionError(f'{path} and {seen[stem]} have the same name; their sub-image keys would clash.')
            seen[stem] = path
            height, width = image_size(path)
            height, width = height - height % modulo, width - width % modulo
            if min(height, width) < crop:
                raise OptionError(f'{path} is {height}x{width} (cropped to a multiple of {modulo}), smaller than '
                                  f'the sub-image size {crop}; remove it or lower --crop-size.')
            check_lmdb_key(sub_image_key(stem, 1), path)
            lr_paths = {}
            for scale in scales if lr_root else ():
                lr_paths[scale] = find_lr_file(lr_root, stem, scale)
                found, expected = image_size(lr_paths[scale]), (height // scale, width // scale)
                if found != expected:
                    raise OptionError(f'{lr_paths[scale]} is {found[0]}x{found[1]}, expected '
                                      f'{expected[0]}x{expected[1]} (HR {path} / {scale}).')
            photos.append(Photo(stem, path, height, width, lr_paths))
    return sorted(photos, key=lambda photo: photo.stem)


def extract_photo(photo: Photo, spec: SubImageSpec, needed: frozenset) -> Dict[str, List[Record]]:
    """Sub-image records of one photo: HR, and LR for every scale whose output is in ``needed``."""
    hr = mod_crop(read_image(photo.path), spec.modulo)
    if hr.shape[:2] != (photo.height, photo.width):
        raise OptionError(f'{photo.path}: decoded size {hr.shape[:2]} differs from its header; the file is damaged.')
    boxes = sub_image_boxes(photo.height, photo.width, spec.crop, spec.step, spec.thresh)
    keys = [sub_image_key(photo.stem, index) for index in range(1, len(boxes) + 1)]
    result = {}
    if spec.hr_out in needed:
        result[spec.hr_out] = [(key, ) + encode_png(hr[y:y + spec.crop, x:x + spec.crop], spec.compress_level)
                               for key, (y, x) in zip(keys, boxes)]
    for scale, out in spec.lr_out.items():
        if out not in needed:
            continue
        if scale in photo.lr_paths:
            lr = read_image(photo.lr_paths[scale])
            if lr.shape[:2] != (photo.height // scale, photo.width // scale):
                raise OptionError(f'{photo.lr_paths[scale]}: decoded size {lr.shape[:2]} differs from its header.')
        else:
            lr = bicubic_downscale(hr, scale)
        size = spec.crop // scale
        result[out] = [(key, ) + encode_png(lr[y // scale:y // scale + size, x // scale:x // scale + size],
                                                   spec.compress_level) for key, (y, x) in zip(keys, boxes)]
    return result


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='prepare_div2k.py', description=__doc__.split('\n\n')[0])
    parser.add_argument('--hr', nargs='+', required=True, metavar='DIR',
                        help='folder(s) of HR photos, e.g. DIV2K_train_HR (several folders make DF2K)')
    parser.add_argument('--lr', metavar='DIR',
                        help='official LR folder with X{s}/<name>x{s}.png (default: make LR with MATLAB bicubic)')
    parser.add_argument('--out', default='datasets/DIV2K', help='output folder (default: %(default)s)')
    parser.add_argument('--scales', nargs='+', type=int, default=[2, 3, 4], help='LR scales (default: 2 3 4)')
    parser.add_argument('--prefix', default='DIV2K_train', help='LMDB name prefix (default: %(default)s)')
    parser.add_argument('--crop-size', type=int, default=480, help='HR sub-image size (default: %(default)s)')
    parser.add_argument('--step', type=int, default=240, help='HR sub-image stride (default: %(default)s)')
    parser.add_argument('--thresh-size', type=int, default=0,
                        help='add a last sub-image flush with the border if more than this many pixels are left '
                        '(default: %(default)s)')
    parser.add_argument('--compress-level', type=int, default=1, choices=range(10),
                        help='PNG compression inside the LMDBs (default: %(default)s, as make_lmdb_from_imgs)')
    add_common_arguments(parser)
    args = parser.parse_args(argv)
    if min(args.scales) < 1:
        raise OptionError(f'--scales {args.scales}: scales must be positive integers.')
    for scale in args.scales:
        for name in ('crop_size', 'step', 'thresh_size'):
            if getattr(args, name) % scale:
                raise OptionError(f'--{name.replace("_", "-")} {getattr(args, name)} is not a multiple of scale '
                                  f'{scale}; LR sub-images must cover exactly the HR ones.')
    return args


def main(argv: Optional[Sequence[str]] = None) -> List[Output]:
    """Build (or skip, when complete) the HR and LR LMDBs, verify them and print a summary. Returns the outputs."""
    args = parse_args(argv)
    started = time.time()
    scales = sorted(set(args.scales))
    spec = SubImageSpec(
        crop=args.crop_size, step=args.step, thresh=args.thresh_size, modulo=math.lcm(*scales),
        compress_level=args.compress_level, hr_out=osp.normpath(osp.join(args.out, hr_name(args.prefix))),
        lr_out={s: osp.normpath(osp.join(args.out, lr_name(args.prefix, s))) for s in scales})
    photos = plan_photos(args.hr, args.lr, scales, spec.crop, spec.modulo)

    keys = [sub_image_key(photo.stem, index) for photo in photos for index in range(
        1, 1 + len(sub_image_boxes(photo.height, photo.width, spec.crop, spec.step, spec.thresh)))]
    outputs = [Output(spec.hr_out, [(key, spec.crop, spec.crop) for key in keys], spec.compress_level)]
    for scale in scales:
        size = spec.crop // scale
        outputs.append(Output(spec.lr_out[scale], [(key, size, size) for key in keys], spec.compress_level))

    build_outputs(outputs, photos, partial(extract_photo, spec=spec), args.workers, args.overwrite,
                         'sub-images')
    checks = [verify_pair(spec.hr_out, spec.lr_out[s], s, samples=args.verify_samples) for s in scales]
    print_summary(f'prepare_div2k: {len(photos)} photos from {", ".join(args.hr)}', outputs, checks, started,
                         args.workers)
    return outputs


if __name__ == '__main__':
    with report_option_errors('prepare_div2k.py'):
        main()
