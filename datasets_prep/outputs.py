"""One LMDB or PNG folder that a script writes (:class:`Output`): planned, skipped when complete, built into a
temporary path and moved into place only when complete; and reading a finished BasicSR LMDB's keys back."""
import os
import shutil
from dataclasses import dataclass, field
from os import path as osp
from typing import List, Optional, Tuple

import lmdb

import dckd_basicsr  # noqa: F401  (makes basicsr importable on current torchvision)
from basicsr.utils import scandir
from basicsr.utils.lmdb_util import LmdbMaker
from datasets_prep.images import Shape, image_size
from dckd_basicsr.errors import OptionError

TMP_PREFIX = '.tmp_'

Entry = Tuple[str, int, int]  # (key, h, w) that an output must hold


def check_lmdb_key(key: str, source: str) -> None:
    """BasicSR reads LMDB keys back as ``line.split('.')[0]`` of meta_info.txt lines; refuse names that break that."""
    if '.' in key or any(ch.isspace() for ch in key) or not key.isascii():
        raise OptionError(f'{source}: its name gives the LMDB key {key!r}; BasicSR LMDB keys must be ASCII without '
                          "'.' or spaces. Rename the file.")


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
