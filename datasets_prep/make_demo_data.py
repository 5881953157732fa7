"""A small DIV2K-like training set and a held-out benchmark built from scikit-image's bundled photos (no download).

Usage::

    python datasets_prep/make_demo_data.py --out datasets/demo

Layout (the same as the full datasets under ``datasets/``, so demo option files differ only by the path prefix)::

    datasets/demo/DIV2K/DIV2K_train_HR_sub.lmdb              178 sub-images, 192x192, keys <photo>_s001 ...
    datasets/demo/DIV2K/DIV2K_train_LR_bicubic_X2_sub.lmdb   the same keys, 96x96
    datasets/demo/DIV2K/DIV2K_train_LR_bicubic_X4_sub.lmdb   the same keys, 48x48
    datasets/demo/Benchmark_SR/Demo/HR/{chelsea,motorcycle,camera}.png
    datasets/demo/Benchmark_SR/Demo/LR_bicubic/X2/<name>x2.png   (filename_tmpl: '{}x2')
    datasets/demo/Benchmark_SR/Demo/LR_bicubic/X4/<name>x4.png   (filename_tmpl: '{}x4')

Training photos (colour): astronaut, coffee, rocket, hubble_deep_field, immunohistochemistry, cropped to multiples of
12 (so the HR LMDB is the same for any ``--scales``; runs for other scales add their LR LMDB next to it) and cut into
192x192 sub-images with step 96, a small version of DIV2K's 480/240. The ``Demo`` test set holds other photos:
chelsea (300x451), the left view of stereo_motorcycle (500x741) and camera (512x512, greyscale, like Set14's bridge).
Both are made by :mod:`prepare_div2k` and :mod:`prepare_benchmarks` (MATLAB bicubic LR; HR kept whole, LR from the
mod-s crop), so the demo runs the same code as the real data. Takes a few seconds; re-running is a no-op.
"""
import argparse
import os
import sys
import tempfile
import time
from os import path as osp
from typing import Callable, Dict, List, Optional, Sequence

import cv2
import numpy as np

if __package__ in (None, ''):  # run as ``python datasets_prep/make_demo_data.py``
    sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from datasets_prep import prepare_benchmarks, prepare_div2k  # noqa: E402
from datasets_prep.cli import default_workers  # noqa: E402
from datasets_prep.outputs import Output  # noqa: E402
from basicsr.data.transforms import mod_crop  # noqa: E402
from dckd_basicsr.errors import report_option_errors  # noqa: E402

CROP_SIZE, STEP = 192, 96
TRAIN_MODULO = 12  # lcm of the demo scales 2, 3, 4: the HR LMDB is the same whichever scales are asked for
TEST_SET = 'Demo'


def _photos() -> Dict[str, Dict[str, Callable[[], np.ndarray]]]:
    """Photos shipped inside the scikit-image wheel; those that need a download (pooch) are never used."""
    from skimage import data
    return {
        'train': {
            'astronaut': data.astronaut,
            'coffee': data.coffee,
            'rocket': data.rocket,
            'hubble_deep_field': data.hubble_deep_field,
            'immunohistochemistry': data.immunohistochemistry,
        },
        'test': {
            'chelsea': data.chelsea,
            'motorcycle': lambda: data.stereo_motorcycle()[0],
            'camera': data.camera,
        },
    }


def write_photos(folder: str, photos: Dict[str, Callable[[], np.ndarray]], modulo: int = 1) -> None:
    os.makedirs(folder, exist_ok=True)
    for name, load in photos.items():
        img = mod_crop(load(), modulo)
        if img.ndim == 3:
            img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
        if not cv2.imwrite(osp.join(folder, f'{name}.png'), img):
            raise RuntimeError(f'could not write {osp.join(folder, name)}.png')


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='make_demo_data.py', description=__doc__.split('\n\n')[0])
    parser.add_argument('--out', default='datasets/demo', help='output folder (default: %(default)s)')
    parser.add_argument('--scales', nargs='+', type=int, default=[2, 4], choices=(2, 3, 4),
                        help='LR scales (default: 2 4)')
    parser.add_argument('--workers', type=int, default=min(2, default_workers()),
                        help='processes (default: %(default)s)')
    parser.add_argument('--overwrite', action='store_true', help='rebuild the outputs even if they are complete')
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> List[Output]:
    """Write the demo training LMDBs and test folders (or keep them when complete); returns all outputs."""
    args = parse_args(argv)
    started = time.time()
    scales = [str(s) for s in sorted(set(args.scales))]
    shared = ['--scales', *scales, '--workers', str(args.workers), '--verify-samples', '4']
    shared += ['--overwrite'] if args.overwrite else []
    photos = _photos()
    with tempfile.TemporaryDirectory(prefix='dckd_demo_') as tmp:
        write_photos(osp.join(tmp, 'train'), photos['train'], TRAIN_MODULO)
        write_photos(osp.join(tmp, TEST_SET), photos['test'])
        outputs = prepare_div2k.main([
            '--hr', osp.join(tmp, 'train'), '--out', osp.join(args.out, 'DIV2K'), '--crop-size', str(CROP_SIZE),
            '--step', str(STEP), *shared
        ])
        outputs += prepare_benchmarks.main(
            ['--src', osp.join(tmp, TEST_SET), '--out', osp.join(args.out, 'Benchmark_SR'), *shared])
    print(f'demo data ready in {args.out} ({time.time() - started:.1f} s)')
    return outputs


if __name__ == '__main__':
    with report_option_errors('make_demo_data.py'):
        main()
