"""Paired images (a degraded input and its clean target under the same name): pairing two folders, planning and
building their outputs, whole or as overlapping sub-images (GoPro, deraining)."""
import argparse
from dataclasses import dataclass
from functools import partial
from os import path as osp
from typing import Dict, List, Optional, Sequence, Tuple

from datasets_prep.build import build_outputs
from datasets_prep.images import (FOLDER_PNG_LEVEL, Record, encode_png, image_size, list_images, pad_to_min_size,
                                  png_record, read_image, unique_stems)
from datasets_prep.outputs import Output, check_lmdb_key
from datasets_prep.sub_images import sub_image_boxes, sub_image_key
from datasets_prep.verify import verify_pair
from dckd_basicsr.errors import OptionError


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
