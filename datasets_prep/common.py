"""Machinery shared by every ``datasets_prep`` script.

Each script runs the same four steps:

1. **Plan.** List the input images, read their sizes from the file headers and work out every entry each output must
   hold (LMDB key or file name, height, width). Bad input (missing or empty folder, a file that is not an image, a
   missing partner, mismatched sizes, an image smaller than the crop) is reported here, naming the file, before
   anything is written.
2. **Skip what is done.** An output whose entries already match the plan is left untouched, so a re-run is a no-op.
   One that exists but differs is an error unless ``--overwrite`` is given.
3. **Build.** A process pool decodes each input image once and returns PNG bytes for every output that needs them;
   the main process streams them into a temporary LMDB (BasicSR's :class:`~basicsr.utils.lmdb_util.LmdbMaker`) or a
   temporary folder, renamed into place only when complete. An interrupted or failed run leaves no output that looks
   complete, and never a half-overwritten one.
4. **Verify** every output (keys, counts, sizes, LR x scale = HR, a sample read through BasicSR's
   ``PairedImageDataset``) and print a one-screen summary.

Sub-images follow BasicSR's ``extract_subimages`` recipe (:func:`crop_starts`) and LMDBs hold exactly what
``make_lmdb_from_imgs`` would store for those sub-images saved as PNG files: the decoded pixels re-encoded as PNG with
``compress_level``, keys without extension and a ``meta_info.txt`` sorted by file name.
"""
import argparse
import math
import multiprocessing
import os
import shutil
import time
import warnings
from dataclasses import dataclass, field
from functools import partial
from os import path as osp
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import cv2
import lmdb
import numpy as np
from PIL import Image
from tqdm import tqdm

import dckd_basicsr  # noqa: F401  (makes basicsr importable on current torchvision)
from basicsr.data.paired_image_dataset import PairedImageDataset
from basicsr.utils import scandir
from basicsr.utils.lmdb_util import LmdbMaker
from basicsr.utils.matlab_functions import imresize
from dckd_basicsr.errors import OptionError

IMG_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp', '.ppm', '.pgm')
TMP_PREFIX = '.tmp_'
FOLDER_PNG_LEVEL = 3  # PNG compression of image folders, as BasicSR's data preparation scripts write them

Shape = Tuple[int, int, int]
Record = Tuple[str, bytes, Shape]  # (key, PNG bytes, (h, w, c)) for one entry of one output
Entry = Tuple[str, int, int]  # (key, h, w) that an output must hold


# ----------------------------------------------------------------------------------------------------------- images
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


def mod_crop(img: np.ndarray, modulo: int) -> np.ndarray:
    """Crop the bottom/right border so that height and width are multiples of ``modulo``."""
    height, width = img.shape[:2]
    return img[:height - height % modulo, :width - width % modulo]


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


def crop_starts(length: int, crop: int, step: int, thresh: int = 0) -> List[int]:
    """Offsets of the sub-images along one axis, placed as BasicSR's ``extract_subimages`` recipe places them.

    One every ``step`` pixels, plus one flush with the far border when more than ``thresh`` pixels would be left.
    """
    if length < crop:
        raise ValueError(f'length {length} is smaller than the crop size {crop}.')
    starts = list(range(0, length - crop + 1, step))
    if length - (starts[-1] + crop) > thresh:
        starts.append(length - crop)
    return starts


def sub_image_boxes(height: int, width: int, crop: int, step: int, thresh: int = 0) -> List[Tuple[int, int]]:
    """Top-left corners (y, x) of all sub-images in row-major order; the i-th (from 1) gets the key suffix _s{i:03d}."""
    return [(y, x) for y in crop_starts(height, crop, step, thresh) for x in crop_starts(width, crop, step, thresh)]


def sub_image_key(stem: str, index: int) -> str:
    return f'{stem}_s{index:03d}'


def check_lmdb_key(key: str, source: str) -> None:
    """BasicSR reads LMDB keys back as ``line.split('.')[0]`` of meta_info.txt lines; refuse names that break that."""
    if '.' in key or any(ch.isspace() for ch in key) or not key.isascii():
        raise OptionError(f'{source}: its name gives the LMDB key {key!r}; BasicSR LMDB keys must be ASCII without '
                          "'.' or spaces. Rename the file.")


def lcm(values: Iterable[int]) -> int:
    result = 1
    for value in values:
        result = result * value // math.gcd(result, value)
    return result


# ---------------------------------------------------------------------------------------------------------- outputs
def read_lmdb_meta(lmdb_path: str) -> List[Tuple[str, Shape]]:
    """(key, (h, w, c)) of every line of a BasicSR ``meta_info.txt``."""
    entries = []
    with open(osp.join(lmdb_path, 'meta_info.txt')) as f:
        for line in f:
            name, shape = line.split()[:2]
            entries.append((osp.splitext(name)[0], tuple(int(v) for v in shape.strip('()').split(','))))
    return entries


def lmdb_keys(lmdb_path: str) -> List[str]:
    """Every key stored in an LMDB's data.mdb."""
    env = lmdb.open(lmdb_path, readonly=True, lock=False, readahead=False)
    try:
        with env.begin() as txn:
            return [key.decode('ascii') for key in txn.cursor().iternext(keys=True, values=False)]
    finally:
        env.close()


@dataclass
class Output:
    """One LMDB (path ending in ``.lmdb``) or PNG folder that a script writes, and the entries it must hold."""

    path: str
    entries: List[Entry]
    compress_level: int = 1
    status: str = 'planned'
    _maker: Optional[LmdbMaker] = field(default=None, init=False, repr=False)
    _written: int = field(default=0, init=False, repr=False)

    def __post_init__(self):
        self.path = osp.normpath(self.path)
        self.entries = sorted(self.entries)

    @property
    def is_lmdb(self) -> bool:
        return self.path.endswith('.lmdb')

    @property
    def tmp_path(self) -> str:
        return osp.join(osp.dirname(self.path), TMP_PREFIX + osp.basename(self.path))

    def existing_entries(self) -> Optional[List[Entry]]:
        """Entries of the finished output on disk (None if there is none); unreadable contents count as a mismatch."""
        if not osp.exists(self.path):
            return None
        try:
            if self.is_lmdb:
                meta = read_lmdb_meta(self.path)
                if len(lmdb_keys(self.path)) != len(meta):
                    return []
                return sorted((key, shape[0], shape[1]) for key, shape in meta)
            return sorted((osp.splitext(name)[0], ) + image_size(osp.join(self.path, name))
                          for name in scandir(self.path))
        except (OSError, ValueError, lmdb.Error):
            return []

    def needs_build(self, overwrite: bool) -> bool:
        """Whether to (re)build; an error if it exists, differs from the plan and ``overwrite`` is not set."""
        existing = self.existing_entries()
        if existing is None or overwrite:
            return True
        if existing == self.entries:
            self.status = 'skipped'
            return False
        raise OptionError(f'{self.path} already exists but does not match the input ({len(existing)} entries, '
                          f'{len(self.entries)} expected). Pass --overwrite to rebuild it, or remove it.')

    def open(self) -> None:
        self.remove(self.tmp_path)  # left over from an interrupted run
        os.makedirs(osp.dirname(self.path) or '.', exist_ok=True)
        self._written = 0
        if self.is_lmdb:
            # upper bound of the data size: raw pixels, 4 channels, plus a page per value; the map is only reserved
            map_size = sum(h * w * 4 + 8192 for _, h, w in self.entries) * 2 + (64 << 20)
            self._maker = LmdbMaker(self.tmp_path, map_size=map_size, compress_level=self.compress_level)
        else:
            os.makedirs(self.tmp_path)

    def put(self, key: str, data: bytes, shape: Shape) -> None:
        if self.is_lmdb:
            self._maker.put(data, key, shape)
        else:
            with open(osp.join(self.tmp_path, f'{key}.png'), 'wb') as f:
                f.write(data)
        self._written += 1

    def commit(self) -> None:
        """Finish the temporary output and move it into place (replacing an old one only now)."""
        if self.is_lmdb:
            self._maker.close()
            self._maker = None
            meta_file = osp.join(self.tmp_path, 'meta_info.txt')
            with open(meta_file) as f:
                lines = f.readlines()
            with open(meta_file, 'w') as f:  # make_lmdb_from_imgs lists sorted file names
                f.writelines(sorted(lines, key=lambda line: line.split(' ')[0]))
        if self._written != len(self.entries):
            raise RuntimeError(f'{self.path}: wrote {self._written} entries, planned {len(self.entries)}.')
        if osp.exists(self.path):
            old = osp.join(osp.dirname(self.path), '.old_' + osp.basename(self.path))
            self.remove(old)
            os.rename(self.path, old)
            os.rename(self.tmp_path, self.path)
            self.remove(old)
        else:
            os.rename(self.tmp_path, self.path)
        self.status = 'built'

    def abort(self) -> None:
        if self._maker is not None:
            self._maker.txn.abort()
            self._maker.env.close()
            self._maker.txt_file.close()
            self._maker = None
        self.remove(self.tmp_path)

    @staticmethod
    def remove(path: str) -> None:
        if osp.isdir(path):
            shutil.rmtree(path)

    def size_text(self) -> str:
        sizes = sorted({(h, w) for _, h, w in self.entries})
        if len(sizes) == 1:
            return f'{sizes[0][0]}x{sizes[0][1]}'
        areas = sorted(sizes, key=lambda s: s[0] * s[1])
        return f'{areas[0][0]}x{areas[0][1]} .. {areas[-1][0]}x{areas[-1][1]}'


def _missing_ancestor(folder: str) -> Optional[str]:
    """The highest folder on the way to ``folder`` that does not exist yet (None if ``folder`` exists)."""
    top = None
    while folder and not osp.exists(folder):
        top, folder = folder, osp.dirname(folder)
    return top


def _remove_created_folders(outputs: Sequence[Output], created: Sequence[str]) -> None:
    """After a failed build, remove the (now empty) parent folders that the build created."""
    for output in outputs:
        folder = osp.dirname(output.path)
        while any(folder == top or folder.startswith(top + os.sep) for top in created):
            try:
                os.rmdir(folder)
            except OSError:  # not empty: something else lives there
                break
            folder = osp.dirname(folder)


def _init_worker() -> None:
    import torch
    torch.set_num_threads(1)  # one process per core; imresize would otherwise oversubscribe


def build_outputs(outputs: Sequence[Output], items: Sequence, worker: Callable, workers: int, overwrite: bool,
                  desc: str) -> List[Output]:
    """Build the outputs that are missing (or all with ``overwrite``); returns those built.

    ``worker(item, needed=frozenset_of_output_paths)`` must return ``{output_path: [Record, ...]}`` for the outputs
    in ``needed``. Items are processed in a pool of ``workers`` processes (in this process if ``workers <= 1``).
    """
    todo = [output for output in outputs if output.needs_build(overwrite)]
    if not todo:
        return []
    by_path = {output.path: output for output in todo}
    func = partial(worker, needed=frozenset(by_path))
    created = [top for top in {_missing_ancestor(osp.dirname(output.path)) for output in todo} if top]
    pool = None
    try:
        for output in todo:
            output.open()
        if workers > 1 and len(items) > 1:
            methods = multiprocessing.get_all_start_methods()
            context = multiprocessing.get_context('fork' if 'fork' in methods else None)
            pool = context.Pool(min(workers, len(items)), initializer=_init_worker)
            results = pool.imap(func, items)
        else:
            results = map(func, items)
        for result in tqdm(results, total=len(items), desc=desc, unit='image', dynamic_ncols=True,
                           disable=None):  # no bar when stderr is not a terminal (redirected to a file)
            for path, records in result.items():
                for record in records:
                    by_path[path].put(*record)
        for output in todo:
            output.commit()
    except BaseException:
        for output in todo:
            output.abort()
        _remove_created_folders(todo, created)
        raise
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
    return todo


# ------------------------------------------------------------------------------------------------------ verification
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


# ---------------------------------------------------------------------------------------------------- paired images
@dataclass
class Pair:
    """A degraded input and its clean target, stored under ``name`` (no extension) in the outputs."""

    name: str
    input: str
    target: str


def pair_folders(input_dir: str, target_dir: str, prefix: str = '') -> List[Pair]:
    """Pair the images of two folders by file name (extension aside); an error naming any file without a partner."""
    inputs = unique_stems(input_dir, list_images(input_dir))
    targets = unique_stems(target_dir, list_images(target_dir))
    for own_dir, own, other_dir, other in ((input_dir, inputs, target_dir, targets),
                                           (target_dir, targets, input_dir, inputs)):
        alone = sorted(set(own) - set(other))
        if alone:
            more = f' (and {len(alone) - 1} more)' if len(alone) > 1 else ''
            raise OptionError(f'{osp.join(own_dir, own[alone[0]])}{more} has no partner in {other_dir}.')
    return [Pair(prefix + stem, osp.join(input_dir, inputs[stem]), osp.join(target_dir, targets[stem]))
            for stem in sorted(inputs)]


@dataclass
class PairJob:
    """Where one set of pairs goes and how: whole images (``crop`` None) or overlapping sub-images."""

    input_out: str
    target_out: str
    crop: Optional[Tuple[int, int, int]] = None  # (size, step, thresh)
    compress_level: int = 1
    pad_to: int = 0  # reflect-pad images smaller than this (bottom/right) so that random crops of it fit


def pad_to_min_size(img: np.ndarray, size: int) -> np.ndarray:
    """Reflect-pad the bottom and right of ``img`` up to ``size`` pixels per side (unchanged when large enough).

    BasicSR's ``paired_random_crop`` cannot cut a ``gt_size`` patch from a smaller image; the Restormer authors pad
    such deraining images with reflection before cropping, which padding once here reproduces.
    """
    pad_h, pad_w = max(0, size - img.shape[0]), max(0, size - img.shape[1])
    if not pad_h and not pad_w:
        return img
    return cv2.copyMakeBorder(img, 0, pad_h, 0, pad_w, cv2.BORDER_REFLECT)

    def __post_init__(self):
        self.input_out, self.target_out = osp.normpath(self.input_out), osp.normpath(self.target_out)


def plan_pairs(pairs: Sequence[Pair], job: PairJob) -> Tuple[Output, Output]:
    """The two outputs of a set of pairs, after checking that every pair has one size (and fits the crop)."""
    entries = []
    for pair in pairs:
        size = image_size(pair.input)
        if image_size(pair.target) != size:
            raise OptionError(f'{pair.input} is {size[0]}x{size[1]} but {pair.target} is '
                              f'{"x".join(map(str, image_size(pair.target)))}; pairs must have the same size.')
        if job.crop is None:
            keys = [(pair.name, max(size[0], job.pad_to), max(size[1], job.pad_to))]
        else:
            crop, step, thresh = job.crop
            if min(size) < crop:
                raise OptionError(f'{pair.input} is {size[0]}x{size[1]}, smaller than the crop size {crop}.')
            boxes = sub_image_boxes(size[0], size[1], crop, step, thresh)
            keys = [(sub_image_key(pair.name, i), crop, crop) for i in range(1, len(boxes) + 1)]
        for key, _, _ in keys:
            if job.input_out.endswith('.lmdb'):
                check_lmdb_key(key, pair.input)
        entries.extend(keys)
    level = job.compress_level if job.input_out.endswith('.lmdb') else FOLDER_PNG_LEVEL
    return Output(job.input_out, entries, level), Output(job.target_out, entries, level)


def pair_worker(pair: Pair, job: PairJob, needed: frozenset) -> Dict[str, List[Record]]:
    """Decode one pair (which also checks it) and return its records for the outputs of ``job`` in ``needed``."""
    result = {}
    images = {path: read_image(path) for path in (pair.input, pair.target)}
    if images[pair.input].shape[:2] != images[pair.target].shape[:2]:
        raise OptionError(f'{pair.input} and {pair.target} have different sizes; pairs must have the same size.')
    padded = min(images[pair.input].shape[:2]) < job.pad_to
    if padded:
        images = {path: pad_to_min_size(img, job.pad_to) for path, img in images.items()}
    for out, source in ((job.input_out, pair.input), (job.target_out, pair.target)):
        if out not in needed:
            continue
        img, lmdb_out = images[source], out.endswith('.lmdb')
        level = job.compress_level if lmdb_out else FOLDER_PNG_LEVEL
        if job.crop is None:
            # PNG files go to folders unchanged; LMDBs hold the re-encoded pixels, as make_lmdb_from_imgs stores them
            result[out] = [png_record(pair.name, img, level, None if lmdb_out or padded else source)]
        else:
            crop, step, thresh = job.crop
            boxes = sub_image_boxes(img.shape[0], img.shape[1], crop, step, thresh)
            result[out] = [(sub_image_key(pair.name, i), ) + encode_png(img[y:y + crop, x:x + crop], level)
                           for i, (y, x) in enumerate(boxes, 1)]
    return result


def prepare_pair_sets(sets: Sequence[Tuple[str, Sequence[Pair], PairJob]],
                      args: argparse.Namespace) -> Tuple[List[Output], List[str]]:
    """Plan every (label, pairs, job) first, so that bad input stops the run before anything is written; then build
    and verify each set. Returns all outputs and the verification lines."""
    planned = [(label, pairs, job, plan_pairs(pairs, job)) for label, pairs, job in sets]
    for *_, outputs in planned:
        for output in outputs:
            output.needs_build(args.overwrite)  # raises for an existing output that does not match
    all_outputs, checks = [], []
    for label, pairs, job, outputs in planned:
        build_outputs(outputs, pairs, partial(pair_worker, job=job), args.workers, args.overwrite, label)
        all_outputs += outputs
        checks.append(f'{label}: ' + verify_pair(job.target_out, job.input_out, samples=args.verify_samples))
    return all_outputs, checks


# -------------------------------------------------------------------------------------------------- command lines
def default_workers() -> int:
    return max(1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count() or 1))


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--workers', type=int, default=default_workers(),
                        help='processes that decode, resize and encode images (default: %(default)s; 1 = no pool)')
    parser.add_argument('--overwrite', action='store_true',
                        help='rebuild outputs that already exist (by default finished outputs are kept and skipped; '
                        'an existing output that does not match the input is an error)')
    parser.add_argument('--verify-samples', type=int, default=8,
                        help='pairs per output decoded through PairedImageDataset at the end (default: %(default)s)')


def print_summary(title: str, outputs: Sequence[Output], checks: Sequence[str], started: float, workers: int) -> None:
    """One screen: every output with its status, count and sizes, the verification lines and the time taken."""
    width = max(len(output.path) for output in outputs) if outputs else 0
    lines = ['', f'== {title} ==']
    for output in outputs:
        lines.append(f'  {output.path:<{width}}  {output.status:<7}  {len(output.entries):>7} images  '
                     f'{output.size_text()}')
    lines += ['  verified: ' + check for check in checks]
    built = sum(output.status == 'built' for output in outputs)
    lines.append(f'  {built} built, {len(outputs) - built} already complete; '
                 f'{time.time() - started:.1f} s with {workers} worker(s)')
    print('\n'.join(lines), flush=True)
