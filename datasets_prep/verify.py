"""Checking finished outputs as BasicSR will read them: keys, counts, sizes, LR x scale = HR, and a sample of pairs
decoded through BasicSR's ``PairedImageDataset``."""
from os import path as osp
from typing import Dict, Tuple

import dckd_basicsr  # noqa: F401  (makes basicsr importable on current torchvision)
from basicsr.data.paired_image_dataset import PairedImageDataset
from basicsr.utils import scandir
from datasets_prep.images import image_size
from datasets_prep.outputs import lmdb_keys, read_lmdb_meta


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
