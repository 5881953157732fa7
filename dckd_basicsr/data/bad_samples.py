"""Undecodable samples in a training run: one error naming the phase, the file or LMDB record and the sample index,
or, with ``datasets.<phase>.max_bad_samples: N``, up to ``N`` such samples skipped with one warning each.

Two halves, because a DataLoader's workers are separate processes:

* :class:`SampleGuard` wraps the dataset (in each worker, or in the main process with ``num_worker_per_gpu: 0``). A
  sample that cannot be decoded (:class:`~dckd_basicsr.data.decoding.UndecodableImageError`) is replaced by the next
  one of the dataset that can, and the sample it returns reports what it replaced (``bad_samples``). It decides
  nothing else (it stops only when no sample at all can be decoded), so the workers need no shared counter.
* :class:`CountedLoader` wraps the DataLoader in the training process. It takes the reports off every batch (the
  model never sees them), in the sampler's order, so the outcome does not depend on the number of workers: the first
  time it meets a sample index it warns, and when the phase has met more than ``max_bad_samples`` distinct
  undecodable samples it raises :class:`~dckd_basicsr.errors.BadSampleError`. The default, 0, fails at the first.

Counting distinct indices means a bad sample met again in a later epoch is not counted twice. Each training process
(rank) counts the samples it meets: a dataset with at most ``N`` undecodable samples never stops a run, and one with
more stops it as soon as one rank has met ``N + 1`` of them (within the first epoch with one process). A resumed run
counts again from zero.
"""
from typing import Any, Callable, Dict, Iterator, List

from torch.utils.data import Dataset

from dckd_basicsr.data.decoding import UndecodableImageError, last_read
from dckd_basicsr.errors import BadSampleError, OptionError

# The key under which a sample reports the undecodable samples it replaced: one "<index>\t<file or record>\t<why>"
# line each, '' for none.
REPORT_KEY = 'bad_samples'


def max_bad_samples(dataset_opt: Dict[str, Any], phase: str) -> int:
    """``datasets.<phase>.max_bad_samples``: a count >= 0 (default 0)."""
    value = dataset_opt.get('max_bad_samples', 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise OptionError(f'datasets.{phase}.max_bad_samples: {value!r}; use a whole number >= 0 (default 0: the '
                          'first undecodable sample stops the run).')
    return value


def phase_of(opt: Dict[str, Any], dataset_opt: Dict[str, Any]) -> str:
    """The ``datasets`` key whose block is ``dataset_opt`` (``train``, ``val``, ``val_2``, ...)."""
    for phase, block in (opt.get('datasets') or {}).items():
        if block is dataset_opt:
            return phase
    return dataset_opt.get('phase', 'train')


def guarded(build_dataset: Callable[[Dict[str, Any]], Any], opt: Dict[str, Any]) -> Callable[[Dict[str, Any]], Any]:
    """``build_dataset`` whose datasets are wrapped in a :class:`SampleGuard` for their phase of ``opt``."""

    def build(dataset_opt: Dict[str, Any]) -> Any:
        phase = phase_of(opt, dataset_opt)
        return SampleGuard(build_dataset(dataset_opt), phase, max_bad_samples(dataset_opt, phase))

    return build


def undecodable_message(phase: str, index: int, place: str, reason: str, count: int, limit: int) -> str:
    """The error of the undecodable sample ``index`` that makes ``count`` distinct ones, over ``limit``."""
    if limit == 0:
        over = ''
    else:
        over = f' That makes {count} undecodable samples, more than datasets.{phase}.max_bad_samples ({limit}).'
    return (f'datasets.{phase}: sample {index} cannot be decoded as an image: {place} ({reason}).{over} Replace or '
            'remove it (python datasets_prep/verify.py --verify <lmdb or folder> lists every bad record), or let '
            f'the run skip such samples, one warning each, with datasets.{phase}.max_bad_samples: N.')


class SampleGuard(Dataset):
    """A dataset whose undecodable samples are replaced by the next decodable one and reported (see the module
    docstring); every other attribute is the wrapped dataset's (BasicSR's validation reads ``dataset.opt``)."""

    def __init__(self, dataset: Any, phase: str, limit: int):
        self.dataset = dataset
        self.phase = phase
        self.limit = limit

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str) -> Any:
        if name == 'dataset' or name.startswith('__'):  # not set yet (unpickling in a worker)
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, index: int) -> Any:
        reports: List[str] = []
        size = len(self.dataset)
        for offset in range(size):
            current = (index + offset) % size
            try:
                sample = self.dataset[current]
            except UndecodableImageError as error:
                reports.append(f'{current}\t{last_read(self.dataset)}\t{error}')
                continue
            if isinstance(sample, dict):
                sample[REPORT_KEY] = '\n'.join(reports)
            elif reports:  # nowhere to report: such a dataset cannot skip samples
                bad, place, reason = reports[0].split('\t')
                raise BadSampleError(undecodable_message(self.phase, int(bad), place, reason, 1, 0))
            return sample
        raise BadSampleError(f'datasets.{self.phase}: none of its {size} samples can be decoded as an image (the '
                             f'last one tried: {reports[-1].split(chr(9), 1)[1].replace(chr(9), ", ")}).')


class CountedLoader:
    """A DataLoader over a :class:`SampleGuard` whose batches have their reports taken off and counted (see the
    module docstring); every other attribute is the DataLoader's."""

    def __init__(self, loader: Any):
        self.loader = loader
        self.seen: Dict[int, str] = {}

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name: str) -> Any:
        if name == 'loader' or name.startswith('__'):
            raise AttributeError(name)
        return getattr(self.loader, name)

    def __iter__(self) -> Iterator[Any]:
        batches = iter(self.loader)
        try:
            while True:
                try:
                    batch = next(batches)
                except StopIteration:
                    return
                except BadSampleError as error:  # raised in a worker: the DataLoader prefixes the worker's traceback
                    raise BadSampleError(str(error).rpartition('BadSampleError: ')[2].strip()) from None
                if isinstance(batch, dict) and REPORT_KEY in batch:
                    reports = batch.pop(REPORT_KEY)
                    for report in [reports] if isinstance(reports, str) else reports:
                        for line in filter(None, report.split('\n')):
                            self.count(line)
                yield batch
        finally:
            del batches  # the DataLoader's workers end now, not whenever an exception's traceback is dropped

    def count(self, report: str) -> None:
        """Warn about a sample index met for the first time; past the limit, stop the run."""
        from basicsr.utils import get_root_logger
        index, place, reason = report.split('\t')
        if int(index) in self.seen:
            return
        self.seen[int(index)] = place
        dataset = self.loader.dataset
        if len(self.seen) > dataset.limit:
            raise BadSampleError(undecodable_message(dataset.phase, int(index), place, reason, len(self.seen),
                                                     dataset.limit))
        get_root_logger().warning(
            f'datasets.{dataset.phase}: skipped sample {index}, which cannot be decoded as an image: {place} '
            f'({reason}); the '
            f'next decodable sample is used in its place ({len(self.seen)} of datasets.{dataset.phase}.'
            f'max_bad_samples: {dataset.limit}).')
