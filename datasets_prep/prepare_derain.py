"""Deraining sets (Rain13K training; Test100, Rain100H, Rain100L, Test2800, Test1200) -> paired folders or LMDBs.

Usage, with the MPRNet/Restormer downloads (``Datasets/train/Rain13K/{input,target}``,
``Datasets/test/<Set>/{input,target}``)::

    python datasets_prep/prepare_derain.py --train Datasets/train/Rain13K --test Datasets/test --out datasets

``--train`` is one folder with ``input/`` (rainy) and ``target/`` (clean); ``--test`` is a folder of test sets, each
with ``input/`` and ``target/`` (or a single such set). Images pair by name, extension aside.

Output::

    <out>/Rain13K/train/{input,target}/<name>.png     (``--train-format lmdb``: Rain13K/train/{input,target}.lmdb)
    <out>/Derain/<Set>/{input,target}/<name>.png

Training pairs smaller than ``--pad-to`` (384, the largest Restormer patch) are reflect-padded at the bottom/right,
as the Restormer authors pad them before cropping; test sets are never padded. Every image is written as PNG
(JPEG sources are decoded once, so input and target share the ``.png`` extension that
``PairedImageDataset`` expects); PNG sources are copied byte for byte.
"""
import argparse
import os
import sys
import time
from os import path as osp
from typing import Dict, List, Optional, Sequence

if __package__ in (None, ''):  # run as ``python datasets_prep/prepare_derain.py``
    sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from datasets_prep.cli import add_common_arguments, print_summary  # noqa: E402
from datasets_prep.outputs import Output  # noqa: E402
from datasets_prep.pairs import PairJob, pair_folders, prepare_pair_sets  # noqa: E402
from dckd_basicsr.errors import OptionError, report_option_errors  # noqa: E402

TEST_SETS = ('Test100', 'Rain100H', 'Rain100L', 'Test2800', 'Test1200')


def is_paired(folder: str) -> bool:
    return osp.isdir(osp.join(folder, 'input')) and osp.isdir(osp.join(folder, 'target'))


def find_test_sets(test_dir: str) -> Dict[str, str]:
    """Set name -> folder with input/ and target/, under ``test_dir`` (or ``test_dir`` itself)."""
    if not osp.isdir(test_dir):
        raise OptionError(f'--test {test_dir}: no such folder.')
    if is_paired(test_dir):
        return {osp.basename(osp.normpath(test_dir)): test_dir}
    canonical = {name.lower(): name for name in TEST_SETS}
    sets = {canonical.get(name.lower(), name): osp.join(test_dir, name) for name in sorted(os.listdir(test_dir))
            if is_paired(osp.join(test_dir, name))}
    if not sets:
        raise OptionError(f'--test {test_dir}: no test sets found (expected <Set>/input and <Set>/target).')
    return sets


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='prepare_derain.py', description=__doc__.split('\n\n')[0])
    parser.add_argument('--train', metavar='DIR', help='training folder with input/ and target/ (Rain13K)')
    parser.add_argument('--test', metavar='DIR', help='folder of test sets, each with input/ and target/')
    parser.add_argument('--sets', nargs='+', metavar='NAME', help='only these test sets (default: all found)')
    parser.add_argument('--out', default='datasets', help='root of Rain13K/ and Derain/ (default: %(default)s)')
    parser.add_argument('--train-format', default='folder', choices=('folder', 'lmdb'),
                        help='Rain13K/train as PNG folders or BasicSR LMDBs (default: %(default)s)')
    parser.add_argument('--pad-to', type=int, default=384, metavar='N',
                        help='reflect-pad training pairs smaller than N pixels per side at the bottom/right, so that '
                        'gt_size N crops fit (some Rain13K images are 481x321; 0 turns it off; default: %(default)s)')
    parser.add_argument('--compress-level', type=int, default=1, choices=range(10),
                        help='PNG compression inside LMDBs (default: %(default)s)')
    add_common_arguments(parser)
    args = parser.parse_args(argv)
    if not args.train and not args.test:
        parser.error('give --train, --test or both.')
    return args


def main(argv: Optional[Sequence[str]] = None) -> List[Output]:
    """Build (or skip, when complete) the deraining outputs, verify them, print a summary; returns the outputs."""
    args = parse_args(argv)
    started = time.time()
    groups = []  # (label, folder with input/ and target/, output folder, '' or '.lmdb')
    if args.train:
        if not is_paired(args.train):
            raise OptionError(f'--train {args.train}: expected input/ and target/ folders inside.')
        ext = '.lmdb' if args.train_format == 'lmdb' else ''
        groups.append(('Rain13K train', args.train, osp.join(args.out, 'Rain13K', 'train'), ext))
    if args.test:
        sets = find_test_sets(args.test)
        if args.sets:
            unknown = sorted(set(args.sets) - set(sets))
            if unknown:
                raise OptionError(f'--sets: {", ".join(unknown)} not found in {args.test} (found: {", ".join(sets)}).')
            sets = {name: folder for name, folder in sets.items() if name in args.sets}
        groups += [(name, folder, osp.join(args.out, 'Derain', name), '') for name, folder in sets.items()]

    sets = []
    for label, folder, out, ext in groups:
        pairs = pair_folders(osp.join(folder, 'input'), osp.join(folder, 'target'))
        pad_to = args.pad_to if label == 'Rain13K train' else 0
        sets.append((label, pairs, PairJob(osp.join(out, 'input' + ext), osp.join(out, 'target' + ext),
                                                  compress_level=args.compress_level, pad_to=pad_to)))
    outputs, checks = prepare_pair_sets(sets, args)
    print_summary('prepare_derain', outputs, checks, started, args.workers)
    return outputs


if __name__ == '__main__':
    with report_option_errors('prepare_derain.py'):
        main()
