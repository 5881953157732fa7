"""Checking finished outputs as BasicSR will read them: keys, counts, sizes, LR x scale = HR, and a sample of pairs
decoded through BasicSR's ``PairedImageDataset``; and, for any existing LMDB or image folder, every record decoded.

Usage::

    python datasets_prep/verify.py --verify datasets/DIV2K/DIV2K_train_HR_sub.lmdb [more LMDBs or folders]

lists, per LMDB or folder, every key (or file) that BasicSR cannot decode as an image, with the reason, and exits
with status 1 when there is one (0 when every record decodes, 2 for a path that is neither an LMDB nor a folder).
A training run meets such a record as ``datasets.<phase>: sample N cannot be decoded as an image`` (or skips it,
up to ``datasets.<phase>.max_bad_samples``).
"""
import argparse
import sys
from os import path as osp
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

if __package__ in (None, ''):  # run as ``python datasets_prep/verify.py``
    sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import lmdb  # noqa: E402
from tqdm import tqdm  # noqa: E402

import dckd_basicsr  # noqa: F401,E402  (makes basicsr importable on current torchvision)
from basicsr.data.paired_image_dataset import PairedImageDataset  # noqa: E402
from basicsr.utils import imfrombytes, scandir  # noqa: E402
from datasets_prep.images import IMG_EXTENSIONS, image_size  # noqa: E402
from datasets_prep.outputs import lmdb_keys, read_lmdb_meta  # noqa: E402
from dckd_basicsr.data.decoding import UndecodableImageError  # noqa: E402
from dckd_basicsr.errors import OptionError, report_option_errors  # noqa: E402


def output_entries(path: str) -> Dict[str, Tuple[int, int]]:
    """key -> (h, w) of a finished output, from meta_info.txt (LMDB) or the PNG headers (folder)."""
    if path.endswith('.lmdb'):
        return {key: shape[:2] for key, shape in read_lmdb_meta(path)}
    return {osp.splitext(name)[0]: image_size(osp.join(path, name)) for name in scandir(path)}


def paired_dataset(gt: str, lq: str, scale: int, filename_tmpl: str = '{}') -> PairedImageDataset:
    """BasicSR's ``PairedImageDataset`` over an output pair, configured as a validation set (no random crop)."""
    io_backend = {'type': 'lmdb'} if gt.endswith('.lmdb') else {'type': 'disk'}
    return PairedImageDataset({
        'dataroot_gt': gt,
        'dataroot_lq': lq,
        'io_backend': io_backend,
        'filename_tmpl': filename_tmpl,
        'phase': 'val',
        'scale': scale
    })


def verify_pair(gt: str, lq: str, scale: int = 1, filename_tmpl: str = '{}', exact: bool = True,
                samples: int = 8) -> str:
    """Check a (GT, LQ) output pair as BasicSR will read it; returns a one-line description.

    Every GT key has its LQ partner (``filename_tmpl``) and nothing else is there; LQ size x ``scale`` equals the GT
    size (``exact``), or is within ``scale - 1`` pixels of it (benchmarks whose GT keeps its original size;
    ``PairedImageDataset`` crops it at validation); for LMDBs, every meta_info key is in data.mdb. ``samples`` pairs,
    evenly spread, are decoded through ``PairedImageDataset``.
    """
    gt_entries, lq_entries = output_entries(gt), output_entries(lq)
    expected = {filename_tmpl.format(key): key for key in gt_entries}
    missing = sorted(set(expected) - set(lq_entries))
    extra = sorted(set(lq_entries) - set(expected))
    if missing or extra:
        raise RuntimeError(f'{lq} does not pair with {gt}: missing {missing[:3]}, unexpected {extra[:3]}.')
    for lq_key, gt_key in expected.items():
        (gh, gw), (lh, lw) = gt_entries[gt_key], lq_entries[lq_key]
        if exact:
            fits = (gh, gw) == (lh * scale, lw * scale)
        else:
            fits = 0 <= gh - lh * scale < scale and 0 <= gw - lw * scale < scale
        if not fits:
            raise RuntimeError(f'{gt}/{gt_key} is {gh}x{gw} but {lq}/{lq_key} is {lh}x{lw} (scale {scale}).')
    for path in (gt, lq):
        if path.endswith('.lmdb') and set(lmdb_keys(path)) != set(output_entries(path)):
            raise RuntimeError(f'{path}: the keys in data.mdb differ from meta_info.txt.')
    dataset = paired_dataset(gt, lq, scale, filename_tmpl)
    if len(dataset) != len(gt_entries):
        raise RuntimeError(f'PairedImageDataset finds {len(dataset)} pairs in {gt} / {lq}, not {len(gt_entries)}.')
    count = min(samples, len(dataset))
    for index in sorted({round(i * (len(dataset) - 1) / max(count - 1, 1)) for i in range(count)}):
        item = dataset[index]
        if tuple(item['gt'].shape[-2:]) != tuple(s * scale for s in item['lq'].shape[-2:]):
            raise RuntimeError(f'PairedImageDataset read mismatched sizes for {item["gt_path"]}.')
    return f'{osp.basename(lq)} x{scale} -> {osp.basename(gt)}: {len(gt_entries)} pairs ok, {count} read back'


def decode_problem(content: Optional[bytes]) -> Optional[str]:
    """Why BasicSR cannot decode ``content`` as an image (its ``imfrombytes``, as its datasets call it), or None."""
    try:
        imfrombytes(content, float32=True)
    except UndecodableImageError as error:
        return str(error)
    return None


def undecodable_records(path: str) -> Iterator[Tuple[str, Optional[str]]]:
    """``(key or file name, problem or None)`` for every record of an LMDB (every key in data.mdb, and every
    meta_info.txt key missing from it) or every image file of a folder."""
    if path.endswith('.lmdb') or osp.isfile(osp.join(path, 'data.mdb')):
        listed = {key for key, _ in read_lmdb_meta(path)} if osp.isfile(osp.join(path, 'meta_info.txt')) else set()
        env = lmdb.open(path, readonly=True, lock=False, readahead=False)
        try:
            with env.begin() as txn:
                for key, value in txn.cursor():
                    listed.discard(key.decode('ascii'))
                    yield key.decode('ascii'), decode_problem(value)
        finally:
            env.close()
        for key in sorted(listed):
            yield key, 'listed in meta_info.txt but missing from data.mdb'
    elif osp.isdir(path):
        for name in sorted(scandir(path, recursive=True)):
            if osp.splitext(name)[1].lower() in IMG_EXTENSIONS:
                with open(osp.join(path, name), 'rb') as file:
                    yield name, decode_problem(file.read())
    else:
        raise OptionError(f'--verify {path}: neither an LMDB nor a folder.')


def verify_records(path: str) -> List[Tuple[str, str]]:
    """Decode every record of ``path``; print and return the bad ones."""
    bad, total = [], 0
    for key, problem in tqdm(undecodable_records(path), desc=osp.basename(osp.normpath(path)), unit=' records',
                             disable=None, leave=False):
        total += 1
        if problem is not None:
            bad.append((key, problem))
    if bad:
        print(f'{path}: {len(bad)} of {total} records cannot be decoded:')
        for key, problem in bad:
            print(f'  {key}: {problem}')
    else:
        print(f'{path}: all {total} records decode.')
    return bad


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``--verify PATH [PATH ...]``: every record of each LMDB or folder decoded; the exit status (1: a bad record)."""
    parser = argparse.ArgumentParser(prog='verify.py', description='Decode every record of existing LMDBs or image '
                                     'folders as BasicSR reads them and list the keys (files) that cannot be decoded.')
    parser.add_argument('--verify', nargs='+', required=True, metavar='PATH', help='LMDBs or image folders')
    args = parser.parse_args(argv)
    bad = [record for path in args.verify for record in verify_records(path)]
    return 1 if bad else 0


if __name__ == '__main__':
    with report_option_errors('verify.py'):
        sys.exit(main())
