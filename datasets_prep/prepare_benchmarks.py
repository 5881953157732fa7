"""SR benchmark sets (Set5, Set14, B100, Urban100, Manga109, or any folder of HR images) -> HR + bicubic LR folders.

Usage::

    python datasets_prep/prepare_benchmarks.py --src benchmark --out datasets/Benchmark_SR --scales 2 3 4

``--src`` holds one folder per set. Accepted inside a set folder: ``HR/`` (the EDSR ``benchmark`` archive, with its
``LR_bicubic/X{s}/<name>x{s}.png``), ``GTmod12/`` (with ``LRbicx{s}/``), ``GT/``, or the HR images themselves (PNG,
JPEG, BMP...). ``--src`` may also be a single set folder. ``BSD100``/``BSDS100`` are written as ``B100``.

Output, matching ``filename_tmpl: '{}x4'`` in the option files::

    <out>/<Set>/HR/<name>.png
    <out>/<Set>/LR_bicubic/X{s}/<name>x{s}.png

``--modcrop scale`` (default): ``HR`` keeps the original size and each ``X{s}`` image is ``imresize`` of the HR cropped
to a multiple of ``s``; ``PairedImageDataset`` crops the HR the same way at validation, so every scale is evaluated on
the mod-``s`` crop, the usual protocol of the SR papers. ``--modcrop lcm``: ``HR`` is stored cropped to a multiple of
the least common multiple of the scales (BasicSR's ``GTmod12`` for 2, 3, 4) and every LR is ``imresize`` of it.

LR images are MATLAB bicubic (BasicSR's ``imresize``, rounded). When the distribution ships LR images they are used
as they are (they are the MATLAB originals the published numbers were measured on), after checking their sizes;
``--regenerate-lr`` makes them all with ``imresize`` instead. PNG sources are copied byte for byte.
"""
import argparse
import math
import os
import sys
import time
from dataclasses import dataclass
from functools import partial
from os import path as osp
from typing import Dict, List, Optional, Sequence

if __package__ in (None, ''):  # run as ``python datasets_prep/prepare_benchmarks.py``
    sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from datasets_prep.build import build_outputs  # noqa: E402
from datasets_prep.cli import add_common_arguments, print_summary  # noqa: E402
from datasets_prep.images import (FOLDER_PNG_LEVEL, IMG_EXTENSIONS, Record, bicubic_downscale, image_size,  # noqa: E402
                                  list_images, png_record, read_image, unique_stems)
from datasets_prep.outputs import Output  # noqa: E402
from datasets_prep.verify import verify_pair  # noqa: E402
from basicsr.data.transforms import mod_crop  # noqa: E402
from dckd_basicsr.errors import OptionError, report_option_errors  # noqa: E402

CANONICAL_NAMES = {'set5': 'Set5', 'set14': 'Set14', 'b100': 'B100', 'bsd100': 'B100', 'bsds100': 'B100',
                   'urban100': 'Urban100', 'manga109': 'Manga109'}
HR_FOLDERS = ('HR', 'GTmod12', 'GT')
LR_FOLDERS = ('LR_bicubic/X{s}', 'LRbicx{s}')


@dataclass
class BenchImage:
    set_name: str
    stem: str
    path: str
    hr_size: tuple  # stored HR size (after the lcm crop with --modcrop lcm)
    lr_paths: Dict[int, str]  # LR shipped with the distribution, by scale


@dataclass
class BenchSpec:
    out: str
    scales: List[int]
    modulo: int  # 1 with --modcrop scale

    def hr_out(self, set_name: str) -> str:
        return osp.normpath(osp.join(self.out, set_name, 'HR'))

    def lr_out(self, set_name: str, scale: int) -> str:
        return osp.normpath(osp.join(self.out, set_name, 'LR_bicubic', f'X{scale}'))


def find_sets(src: str) -> Dict[str, str]:
    """Set name -> set folder under ``src`` (or ``src`` itself when it is one set)."""
    if not osp.isdir(src):
        raise OptionError(f'--src {src}: no such folder.')

    def is_set(folder):
        return any(osp.isdir(osp.join(folder, name)) for name in HR_FOLDERS) or any(
            osp.splitext(name)[1].lower() in IMG_EXTENSIONS for name in os.listdir(folder))

    candidates = [src] if is_set(src) else [osp.join(src, name) for name in sorted(os.listdir(src))
                                             if not name.startswith('.') and osp.isdir(osp.join(src, name))]
    sets = {}
    for folder in filter(is_set, candidates):
        name = osp.basename(osp.normpath(folder))
        name = CANONICAL_NAMES.get(name.lower(), name)
        if name in sets:
            raise OptionError(f'{folder} and {sets[name]} are both {name}; keep only one.')
        sets[name] = folder
    if not sets:
        raise OptionError(f'--src {src}: no benchmark sets found (expected <Set>/HR/*.png or <Set>/*.png).')
    return sets


def hr_folder(set_dir: str) -> str:
    for name in HR_FOLDERS:
        if osp.isdir(osp.join(set_dir, name)):
            return osp.join(set_dir, name)
    return set_dir


def shipped_lr(set_dir: str, stem: str, scale: int) -> Optional[str]:
    """The distribution's LR file of an image, None if the set ships no LR folder for this scale."""
    for pattern in LR_FOLDERS:
        folder = osp.join(set_dir, pattern.format(s=scale))
        if osp.isdir(folder):
            for name in sorted(os.listdir(folder)):
                if osp.splitext(name)[0] in (f'{stem}x{scale}', stem):
                    return osp.join(folder, name)
            raise OptionError(f'{folder} has no LR image for {stem} ({stem}x{scale}.png); complete the folder or '
                              'pass --regenerate-lr.')
    return None


def plan_images(sets: Dict[str, str], spec: BenchSpec, regenerate_lr: bool) -> List[BenchImage]:
    images = []
    for set_name, set_dir in sets.items():
        folder = hr_folder(set_dir)
        for stem, name in unique_stems(folder, list_images(folder)).items():
            path = osp.join(folder, name)
            height, width = image_size(path)
            hr_size = (height - height % spec.modulo, width - width % spec.modulo)
            if min(hr_size) < max(spec.scales):
                raise OptionError(f'{path} is {height}x{width}, too small for scale {max(spec.scales)}.')
            lr_paths = {}
            for scale in spec.scales:
                lr_path = None if regenerate_lr else shipped_lr(set_dir, stem, scale)
                if lr_path is None:
                    continue
                expected = (hr_size[0] // scale, hr_size[1] // scale)
                found = image_size(lr_path)
                if found != expected:
                    raise OptionError(f'{lr_path} is {found[0]}x{found[1]}, expected {expected[0]}x{expected[1]} '
                                      f'for {path} at x{scale}; pass --regenerate-lr to make the LR images anew.')
                lr_paths[scale] = lr_path
            images.append(BenchImage(set_name, stem, path, hr_size, lr_paths))
    return images


def process_image(image: BenchImage, spec: BenchSpec, needed: frozenset) -> Dict[str, List[Record]]:
    """HR and LR records of one benchmark image for the outputs in ``needed``."""
    original = read_image(image.path)
    hr = mod_crop(original, spec.modulo)
    level = FOLDER_PNG_LEVEL
    result = {}
    out = spec.hr_out(image.set_name)
    if out in needed:
        unchanged = hr.shape == original.shape
        result[out] = [png_record(image.stem, hr, level, image.path if unchanged else None)]
    for scale in spec.scales:
        out = spec.lr_out(image.set_name, scale)
        if out not in needed:
            continue
        key = f'{image.stem}x{scale}'
        if scale in image.lr_paths:
            lr = read_image(image.lr_paths[scale])
            result[out] = [png_record(key, lr, level, image.lr_paths[scale])]
        else:
            result[out] = [png_record(key, bicubic_downscale(mod_crop(hr, scale), scale), level)]
    return result


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='prepare_benchmarks.py', description=__doc__.split('\n\n')[0])
    parser.add_argument('--src', required=True, help='folder of benchmark sets (or one set folder)')
    parser.add_argument('--out', default='datasets/Benchmark_SR', help='output folder (default: %(default)s)')
    parser.add_argument('--scales', nargs='+', type=int, default=[2, 3, 4], help='LR scales (default: 2 3 4)')
    parser.add_argument('--sets', nargs='+', metavar='NAME', help='only these sets (default: all found)')
    parser.add_argument('--modcrop', choices=('scale', 'lcm'), default='scale',
                        help="'scale': HR kept whole, LR from the mod-s crop; 'lcm': HR stored cropped to a multiple "
                        'of the LCM of the scales (default: %(default)s)')
    parser.add_argument('--regenerate-lr', action='store_true',
                        help='make every LR image with imresize even when the distribution ships LR images')
    add_common_arguments(parser)
    args = parser.parse_args(argv)
    if min(args.scales) < 1:
        raise OptionError(f'--scales {args.scales}: scales must be positive integers.')
    return args


def main(argv: Optional[Sequence[str]] = None) -> List[Output]:
    """Build (or skip, when complete) every set's HR and LR folders, verify them, print a summary; returns outputs."""
    args = parse_args(argv)
    started = time.time()
    scales = sorted(set(args.scales))
    spec = BenchSpec(args.out, scales, math.lcm(*scales) if args.modcrop == 'lcm' else 1)
    sets = find_sets(args.src)
    if args.sets:
        wanted = {CANONICAL_NAMES.get(name.lower(), name) for name in args.sets}
        unknown = sorted(wanted - set(sets))
        if unknown:
            raise OptionError(f'--sets: {", ".join(unknown)} not found in {args.src} (found: {", ".join(sets)}).')
        sets = {name: folder for name, folder in sets.items() if name in wanted}
    images = plan_images(sets, spec, args.regenerate_lr)

    outputs = []
    for set_name in sets:
        members = [image for image in images if image.set_name == set_name]
        outputs.append(Output(spec.hr_out(set_name), [(i.stem, ) + i.hr_size for i in members]))
        for scale in scales:
            outputs.append(Output(spec.lr_out(set_name, scale),
                                         [(f'{i.stem}x{scale}', i.hr_size[0] // scale, i.hr_size[1] // scale)
                                          for i in members]))
    build_outputs(outputs, images, partial(process_image, spec=spec), args.workers, args.overwrite,
                         'benchmark images')
    checks = [
        verify_pair(spec.hr_out(name), spec.lr_out(name, s), s, f'{{}}x{s}', exact=args.modcrop == 'lcm',
                           samples=args.verify_samples) for name in sets for s in scales
    ]
    checks = [f'{name}: ' + check for name, check in zip([n for n in sets for _ in scales], checks)]
    print_summary(f'prepare_benchmarks: {len(images)} images in {len(sets)} sets', outputs, checks, started,
                         args.workers)
    return outputs


if __name__ == '__main__':
    with report_option_errors('prepare_benchmarks.py'):
        main()
