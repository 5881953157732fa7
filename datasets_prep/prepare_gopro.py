"""GoPro deblurring (GOPRO_Large) -> paired ``input``/``target`` folders or LMDBs, optionally 512x512 training crops.

Usage::

    python datasets_prep/prepare_gopro.py --src GOPRO_Large --out datasets/GoPro
    python datasets_prep/prepare_gopro.py --src GOPRO_Large --out datasets/GoPro --crops --train-format lmdb

``--src`` is the official release (``train/<sequence>/blur/000047.png`` with ``sharp/``; ``--blur blur_gamma`` picks
the gamma-corrected blur) or an already paired layout (``train/input``, ``train/target``, the same for ``test``).

Output (images paired by identical names ``<sequence>_<frame>.png``)::

    <out>/train/{input,target}/GOPR0372_07_00_000047.png   (``--train-format lmdb``: train/{input,target}.lmdb)
    <out>/test/{input,target}/GOPR0384_11_00_000001.png
    <out>/train_crops/{input,target}/<name>_s001.png ...    (``--crops``; or train_crops/{input,target}.lmdb)

The crops are the overlapping 512x512 patches the NAFNet/Restormer authors train on (step 256, threshold 0: 12 per
1280x720 frame), placed like BasicSR's ``extract_subimages``. PNG frames are copied byte for byte into folders; LMDBs
hold the decoded pixels re-encoded as ``make_lmdb_from_imgs`` stores them.
"""
import argparse
import os
import sys
import time
from os import path as osp
from typing import List, Optional, Sequence

if __package__ in (None, ''):  # run as ``python datasets_prep/prepare_gopro.py``
    sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from datasets_prep.cli import add_common_arguments, print_summary  # noqa: E402
from datasets_prep.outputs import Output  # noqa: E402
from datasets_prep.pairs import Pair, PairJob, pair_folders, prepare_pair_sets  # noqa: E402
from dckd_basicsr.errors import OptionError, report_option_errors  # noqa: E402


def find_pairs(split_dir: str, blur: str) -> List[Pair]:
    """All (blurred, sharp) pairs of one split, official or already paired layout."""
    if osp.isdir(osp.join(split_dir, 'input')) or osp.isdir(osp.join(split_dir, 'target')):
        return pair_folders(osp.join(split_dir, 'input'), osp.join(split_dir, 'target'))
    sequences = sorted(name for name in os.listdir(split_dir) if osp.isdir(osp.join(split_dir, name)))
    if not sequences:
        raise OptionError(f'{split_dir}: no sequence folders (<sequence>/{blur}, <sequence>/sharp) and no '
                          'input/target folders.')
    pairs = []
    for sequence in sequences:
        folder = osp.join(split_dir, sequence)
        pairs += pair_folders(osp.join(folder, blur), osp.join(folder, 'sharp'), prefix=f'{sequence}_')
    return pairs


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='prepare_gopro.py', description=__doc__.split('\n\n')[0])
    parser.add_argument('--src', required=True, help='GOPRO_Large folder (with train/ and/or test/)')
    parser.add_argument('--out', default='datasets/GoPro', help='output folder (default: %(default)s)')
    parser.add_argument('--blur', default='blur', choices=('blur', 'blur_gamma'),
                        help='which blurred frames of the official release (default: %(default)s)')
    parser.add_argument('--train-format', default='folder', choices=('folder', 'lmdb'),
                        help='train and train_crops as PNG folders or BasicSR LMDBs (default: %(default)s)')
    parser.add_argument('--crops', action='store_true', help='also write the overlapping training crops')
    parser.add_argument('--crop-size', type=int, default=512, help='crop size (default: %(default)s)')
    parser.add_argument('--step', type=int, default=256, help='crop stride (default: %(default)s)')
    parser.add_argument('--thresh-size', type=int, default=0, help='see prepare_div2k.py (default: %(default)s)')
    parser.add_argument('--compress-level', type=int, default=1, choices=range(10),
                        help='PNG compression inside LMDBs (default: %(default)s)')
    add_common_arguments(parser)
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> List[Output]:
    """Build (or skip, when complete) the GoPro outputs, verify them, print a summary; returns the outputs."""
    args = parse_args(argv)
    started = time.time()
    splits = [split for split in ('train', 'test') if osp.isdir(osp.join(args.src, split))]
    if not splits:
        raise OptionError(f'--src {args.src}: neither train/ nor test/ found (expected the GOPRO_Large layout).')
    suffix = '.lmdb' if args.train_format == 'lmdb' else ''
    sets = []
    for split in splits:
        pairs = find_pairs(osp.join(args.src, split), args.blur)
        jobs = [(split, None, suffix if split == 'train' else '')]
        if split == 'train' and args.crops:
            jobs.append(('train_crops', (args.crop_size, args.step, args.thresh_size), suffix))
        for name, crop, ext in jobs:
            job = PairJob(osp.join(args.out, name, 'input' + ext), osp.join(args.out, name, 'target' + ext),
                                 crop, args.compress_level)
            sets.append((name, pairs, job))
    outputs, checks = prepare_pair_sets(sets, args)
    print_summary(f'prepare_gopro: {args.src}', outputs, checks, started, args.workers)
    return outputs


if __name__ == '__main__':
    with report_option_errors('prepare_gopro.py'):
        main()
