"""prepare_div2k.py against BasicSR's sub-image LMDB recipe done the plain way, on the same photos, in one run.

Usage::

    python benchmarks/bench_prepare_div2k.py                       # the DIV2K + Flickr2K photos in ../shared/data
    python benchmarks/bench_prepare_div2k.py --src DIV2K_train_HR --workers 8 --repeat 2

The plain way is the recipe as BasicSR's scripts run it: a process pool cuts every photo into 480x480 sub-images
(step 240, threshold 0) saved as PNG files (compression 3), then ``make_lmdb_from_imgs`` reads them back and writes
the LMDB (one per folder). Ours (``prepare_div2k.py``) encodes the sub-images straight into the LMDBs. Two scenarios:

* ``given LR``: the LR photos exist as files (the official ``DIV2K_train_LR_bicubic``; here made once, untimed,
  with MATLAB bicubic). Plain: sub-images of HR and of every LR folder, then the LMDBs. Ours: ``--lr``.
* ``imresize LR``: LR made from HR inside the timed run. Plain: a pool writes the LR photos as PNG files first.

Both ways use ``--workers`` processes. The LMDBs must hold identical keys, values and meta_info.txt, or the script
exits with status 1. Prints seconds per way (the best of ``--repeat`` runs) and the ratio plain / ours.
"""
import argparse
import contextlib
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from multiprocessing import Pool
from os import path as osp

import cv2
import lmdb
import numpy as np

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from datasets_prep import prepare_div2k  # noqa: E402
from datasets_prep.cli import default_workers  # noqa: E402
from datasets_prep.images import image_size, list_images  # noqa: E402
from datasets_prep.sub_images import sub_image_boxes  # noqa: E402
from basicsr.utils import scandir  # noqa: E402
from basicsr.utils.lmdb_util import make_lmdb_from_imgs  # noqa: E402
from basicsr.utils.matlab_functions import imresize  # noqa: E402

SHARED = osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'shared', 'data')
DEFAULT_SRC = [osp.join(SHARED, 'div2k', 'HR'), osp.join(SHARED, 'flickr2k', 'HR')]
CROP, STEP, THRESH = 480, 240, 0


def plain_positions(length, crop, step, thresh):
    positions = np.arange(0, length - crop + 1, step)
    if length - (positions[-1] + crop) > thresh:
        positions = np.append(positions, length - crop)
    return positions


def plain_cut(task):
    """One photo -> sub-image PNG files, as BasicSR's extract_subimages worker writes them."""
    path, out_dir, crop, step, thresh, suffix = task
    img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    stem = osp.splitext(osp.basename(path))[0]
    stem = stem[:-len(suffix)] if suffix and stem.endswith(suffix) else stem
    index = 0
    for y in plain_positions(img.shape[0], crop, step, thresh):
        for x in plain_positions(img.shape[1], crop, step, thresh):
            index += 1
            sub_image = np.ascontiguousarray(img[y:y + crop, x:x + crop])
            cv2.imwrite(osp.join(out_dir, f'{stem}_s{index:03d}.png'), sub_image, [cv2.IMWRITE_PNG_COMPRESSION, 3])


def plain_downscale(task):
    """One HR photo -> its LR photo file for one scale (MATLAB bicubic, rounded), as an official LR folder holds."""
    path, out_dir, scale = task
    import torch
    torch.set_num_threads(1)
    img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    lr = np.clip(np.round(imresize(img, 1 / scale)), 0, 255).astype(np.uint8)
    stem = osp.splitext(osp.basename(path))[0]
    cv2.imwrite(osp.join(out_dir, f'{stem}x{scale}.png'), lr)


def plain_recipe(photos, lr_root, out, scales, workers, make_lr, stages):
    """Sub-image folders with a pool, then make_lmdb_from_imgs per folder; LR photo files first if ``make_lr``.

    Adds the seconds of each stage to ``stages``.
    """
    started = time.perf_counter()
    with Pool(workers) as pool:
        if make_lr:
            for s in scales:
                os.makedirs(osp.join(lr_root, f'X{s}'), exist_ok=True)
            pool.map(plain_downscale, [(p, osp.join(lr_root, f'X{s}'), s) for s in scales for p in photos], 1)
            stages['LR photos'] = time.perf_counter() - started
            started = time.perf_counter()
        folders = {'HR': (photos, CROP, STEP, THRESH, '')}
        for s in scales:
            lr_photos = sorted(osp.join(lr_root, f'X{s}', name) for name in os.listdir(osp.join(lr_root, f'X{s}')))
            folders[f'LR_bicubic_X{s}'] = (lr_photos, CROP // s, STEP // s, THRESH // s, f'x{s}')
        tasks = []
        for name, (paths, crop, step, thresh, suffix) in folders.items():
            os.makedirs(osp.join(out, f'sub_{name}'))
            tasks += [(p, osp.join(out, f'sub_{name}'), crop, step, thresh, suffix) for p in paths]
        pool.map(plain_cut, tasks, 1)
    stages['sub-image PNGs'] = time.perf_counter() - started
    started = time.perf_counter()
    for name in folders:
        folder = osp.join(out, f'sub_{name}')
        paths = sorted(scandir(folder, suffix='png', recursive=False))
        make_lmdb_from_imgs(folder, osp.join(out, f'DIV2K_train_{name}_sub.lmdb'), paths,
                            [p.split('.png')[0] for p in paths])
    stages['make_lmdb_from_imgs'] = time.perf_counter() - started


def lmdb_contents(path):
    env = lmdb.open(path, readonly=True, lock=False, readahead=False)
    with env.begin() as txn:
        items = list(txn.cursor().iternext())
    env.close()
    with open(osp.join(path, 'meta_info.txt')) as f:
        return items, f.read()


def cpu_seconds():
    """User + system time of this process and of its finished children (the pool workers, once joined)."""
    return sum(r.ru_utime + r.ru_stime for r in map(resource.getrusage, (resource.RUSAGE_SELF,
                                                                         resource.RUSAGE_CHILDREN)))


def timed(func):
    """(wall seconds, CPU seconds) of ``func()``, with its printing and progress bars silenced."""
    wall, cpu = time.perf_counter(), cpu_seconds()
    with open(os.devnull, 'w') as null, contextlib.redirect_stdout(null), contextlib.redirect_stderr(null):
        func()
    return time.perf_counter() - wall, cpu_seconds() - cpu


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--src', nargs='+', default=DEFAULT_SRC, help='folder(s) of HR photos')
    parser.add_argument('--scales', nargs='+', type=int, default=[2, 3, 4])
    parser.add_argument('--workers', type=int, default=default_workers())
    parser.add_argument('--repeat', type=int, default=1, help='runs per way; the best is reported')
    parser.add_argument('--work-dir', help='scratch folder (default: a temporary folder, removed at the end)')
    args = parser.parse_args()

    photos = sorted(osp.join(d, n) for d in args.src for n in list_images(d))
    work = args.work_dir or tempfile.mkdtemp(prefix='bench_div2k_')
    given_lr = osp.join(work, 'given_LR')
    timed(lambda: plain_recipe(photos, given_lr, osp.join(work, 'setup'), args.scales, args.workers, True, {}))
    names = ['HR'] + [f'LR_bicubic_X{s}' for s in args.scales]
    ours_args = ['--hr', *args.src, '--scales', *map(str, args.scales), '--workers', str(args.workers)]
    rows = []
    try:
        for scenario, make_lr in (('given LR', False), ('imresize LR', True)):
            best = {'plain': (float('inf'), ), 'ours': (float('inf'), )}
            best_stages = {}
            for run in range(args.repeat):
                plain_out, ours_out = osp.join(work, f'plain{run}'), osp.join(work, f'ours{run}')
                lr_root = osp.join(plain_out, 'LR') if make_lr else given_lr
                os.makedirs(plain_out)
                extra = [] if make_lr else ['--lr', given_lr]
                stages = {}
                plain = timed(lambda: plain_recipe(photos, lr_root, plain_out, args.scales, args.workers, make_lr,
                                                   stages))
                if plain < best['plain']:
                    best['plain'], best_stages = plain, stages
                ours = timed(lambda: prepare_div2k.main(ours_args + extra + ['--out', ours_out]))
                best['ours'] = min(best['ours'], ours)
                for name in names:
                    lmdb_name = f'DIV2K_train_{name}_sub.lmdb'
                    if lmdb_contents(osp.join(plain_out, lmdb_name)) != lmdb_contents(osp.join(ours_out, lmdb_name)):
                        print(f'MISMATCH: {lmdb_name} differs between the plain recipe and prepare_div2k.py')
                        sys.exit(1)
                shutil.rmtree(plain_out)
                shutil.rmtree(ours_out)
            rows.append((scenario, best['plain'], best['ours'], best_stages))
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)

    count = sum(len(sub_image_boxes(*image_size(p), CROP, STEP, THRESH)) for p in photos)
    print(f'{len(photos)} photos from {", ".join(args.src)}: {count} sub-images x {len(names)} LMDBs '
          f'(HR + x{", x".join(map(str, args.scales))}); {args.workers} workers; best of {args.repeat}; '
          f'{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs')
    print('LMDBs identical (keys, values, meta_info.txt) in every run.')
    print('| scenario | plain recipe: wall s (CPU s) | plain stages, wall s | prepare_div2k.py: wall s (CPU s) | '
          'plain / ours: wall (CPU) |')
    print('|---|---|---|---|---|')
    for scenario, plain, ours, stages in rows:
        detail = ', '.join(f'{name} {seconds:.2f}' for name, seconds in stages.items())
        print(f'| {scenario} | {plain[0]:.2f} ({plain[1]:.2f}) | {detail} | {ours[0]:.2f} ({ours[1]:.2f}) | '
              f'{plain[0] / ours[0]:.2f}x ({plain[1] / ours[1]:.2f}x) |')


if __name__ == '__main__':
    main()
