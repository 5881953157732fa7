"""Undecodable training and validation samples: one error naming the phase, the LMDB path and key (or the file) and the
sample index; ``datasets.<phase>.max_bad_samples: N`` skips up to N distinct ones with one warning each, counted in
the training process whatever the number of DataLoader workers; clean data reaches the model unchanged."""
import copy
import logging
from pathlib import Path

import basicsr.train
import lmdb
import pytest
import torch
from basicsr.data.paired_image_dataset import PairedImageDataset
from basicsr.utils.lmdb_util import make_lmdb_from_imgs

import dckd_basicsr  # noqa: F401  (the patches)
from helpers import basicsr_messages, make_pairs, sr_train_options
from dckd_basicsr.data.bad_samples import CountedLoader, max_bad_samples
from dckd_basicsr.errors import BadSampleError, OptionError

LOGGER = logging.getLogger('basicsr')


def _run_options(data: dict, backend: str = 'disk', workers: int = 0, **train: object) -> dict:
    """Options as parse_options completes them for a one-process CPU run (phase and scale in every dataset)."""
    opt = sr_train_options(data, datasets__train__num_worker_per_gpu=workers,
                           datasets__train__io_backend={'type': backend},
                           datasets__val__io_backend={'type': backend}, datasets__train__batch_size_per_gpu=1,
                           datasets__train__use_rot=False, datasets__train__use_hflip=False)
    opt['datasets']['train'].update(train)
    opt.update(dist=False, rank=0, world_size=1, is_train=True)
    for phase, dataset_opt in opt['datasets'].items():
        dataset_opt.update(phase=phase.split('_')[0], scale=opt['scale'])
    return opt


def _loaders(opt: dict):
    train_loader, _, val_loaders, _, _ = basicsr.train.create_train_val_dataloader(copy.deepcopy(opt), LOGGER)
    return train_loader, val_loaders


def _epoch(loader) -> list:
    return [batch['gt_path'][0] for batch in loader]


def _index(loader, stem: str) -> int:
    return [Path(paths['gt_path']).stem for paths in loader.dataset.paths].index(stem)


def _lmdbs(tmp_path: Path, data: dict) -> dict:
    for key in ('gt', 'lq'):
        names = sorted(p.name for p in Path(data[key]).iterdir())
        make_lmdb_from_imgs(data[key], str(tmp_path / f'{key}.lmdb'), names, [n[:-4] for n in names], map_size=1 << 24)
    return {key: str(tmp_path / f'{key}.lmdb') for key in ('gt', 'lq')}


def _corrupt_record(lmdb_path: str, key: str, value: bytes) -> None:
    env = lmdb.open(lmdb_path, map_size=1 << 24)
    with env.begin(write=True) as txn:
        txn.put(key.encode('ascii'), value)
    env.close()


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:100])


@pytest.mark.parametrize('workers', [0, 2])
def test_an_undecodable_lmdb_record_names_the_phase_the_lmdb_the_key_and_the_index(tmp_path, workers):
    """In a worker process too: one message, without the worker's traceback the DataLoader puts around it."""
    data = _lmdbs(tmp_path, make_pairs(tmp_path / 'data', count=4))
    _corrupt_record(data['lq'], '0002', b'not an image')
    train_loader, _ = _loaders(_run_options(data, backend='lmdb', workers=workers))
    with pytest.raises(BadSampleError) as error:
        _epoch(train_loader)
    assert str(error.value) == (
        f"datasets.train: sample 2 cannot be decoded as an image: LMDB {data['lq']}, key 0002 (12 bytes that OpenCV "
        'cannot decode as an image (corrupt or truncated)). Replace or remove it (python datasets_prep/verify.py '
        '--verify <lmdb or folder> lists every bad record), or let the run skip such samples, one warning each, '
        'with datasets.train.max_bad_samples: N.')


def test_a_truncated_validation_file_is_named_with_its_phase(tmp_path):
    data = make_pairs(tmp_path / 'data', count=3)
    opt = _run_options(data)
    opt['datasets']['val_2'] = dict(copy.deepcopy(opt['datasets']['val']), name='second')
    _truncate(Path(data['gt']) / '0001.png')
    _, val_loaders = _loaders(opt)
    index = _index(val_loaders[1], '0001')  # BasicSR lists a folder in directory order
    with pytest.raises(BadSampleError, match=rf"^datasets.val_2: sample {index} cannot be decoded as an image: file "
                                             rf"{data['gt']}/0001.png \(100 bytes .*max_bad_samples: N.$"):
        _epoch(val_loaders[1])


@pytest.mark.parametrize('workers', [0, 2])
def test_max_bad_samples_skips_distinct_samples_then_stops_the_same_way_with_workers(tmp_path, workers):
    data = make_pairs(tmp_path / 'data', count=6)
    for name in ('0001.png', '0004.png'):
        _truncate(Path(data['lq']) / name)
    train_loader, _ = _loaders(_run_options(data, workers=workers, max_bad_samples=2))
    bad = {_index(train_loader, '0001'): '0001', _index(train_loader, '0004'): '0004'}
    sampler = train_loader.batch_sampler.sampler
    sampler.set_epoch(0)
    order = [index % 6 for index in sampler]
    with basicsr_messages() as records:
        for epoch in range(3):  # the two bad samples are met in every epoch but counted once
            sampler.set_epoch(epoch)
            paths = _epoch(train_loader)
            assert len(paths) == 6 and all('0001' not in p and '0004' not in p for p in paths)
    first = [index for index in order if index in bad][0]
    assert len(records) == 2 and records[0].startswith(f'datasets.train: skipped sample {first}, which cannot be '
                                                       f'decoded as an image: file {data["lq"]}/{bad[first]}.png')
    assert records[0].endswith('the next decodable sample is used in its place (1 of datasets.train.max_bad_samples: '
                               '2).')

    train_loader, _ = _loaders(_run_options(data, workers=workers, max_bad_samples=1))
    train_loader.batch_sampler.sampler.set_epoch(0)
    second = [index for index in order if index in bad][1]
    with basicsr_messages() as records, pytest.raises(BadSampleError) as error:
        _epoch(train_loader)
    assert len(records) == 1
    assert str(error.value).startswith(f'datasets.train: sample {second} cannot be decoded as an image: file '
                                       f'{data["lq"]}/{bad[second]}.png (100 bytes that OpenCV cannot decode as an '
                                       'image (corrupt or truncated)). That makes 2 undecodable samples, more than '
                                       'datasets.train.max_bad_samples (1).')


def test_a_dataset_without_one_decodable_sample_stops_whatever_the_limit(tmp_path):
    data = make_pairs(tmp_path / 'data', count=3)
    for path in Path(data['gt']).iterdir():
        _truncate(path)
    train_loader, _ = _loaders(_run_options(data, max_bad_samples=10))
    with pytest.raises(BadSampleError, match=r'^datasets.train: none of its 3 samples can be decoded as an image '
                                             rf"\(the last one tried: file {data['gt']}/\d+.png, 100 bytes that "
                                             r'OpenCV cannot decode as an image \(corrupt or truncated\)\).$'):
        _epoch(train_loader)
    # raised in a DataLoader worker, the error comes back with the worker's traceback around it: one message again
    worker_error = BadSampleError('Caught BadSampleError in DataLoader worker process 1.\nOriginal Traceback (most '
                                  'recent call last):\n  File "x.py", line 1, in f\ndckd_basicsr.errors.'
                                  'BadSampleError: datasets.train: none of its 3 samples ...\n')

    class FailingLoader:
        dataset = train_loader.dataset

        def __iter__(self):
            raise worker_error
            yield

    with pytest.raises(BadSampleError) as error:
        list(CountedLoader(FailingLoader()))
    assert str(error.value) == 'datasets.train: none of its 3 samples ...'


@pytest.mark.parametrize('prefetch_mode', [None, 'cpu'])
def test_clean_batches_reach_the_model_as_basicsr_builds_them(tmp_path, prefetch_mode):
    data = make_pairs(tmp_path / 'data', count=3)
    opt = _run_options(data, prefetch_mode=prefetch_mode)
    train_loader, val_loaders = _loaders(opt)
    train_loader.batch_sampler.sampler.set_epoch(0)
    indices = list(train_loader.batch_sampler.sampler)
    paths = train_loader.dataset.paths
    assert [batch['lq_path'][0] for batch in train_loader] == [paths[index]['lq_path'] for index in indices]
    assert all(sorted(batch) == ['gt', 'gt_path', 'lq', 'lq_path'] for batch in train_loader)
    val = PairedImageDataset(copy.deepcopy(opt['datasets']['val']))
    assert val_loaders[0].dataset.opt['name'] == 'toyval' and len(val_loaders[0]) == 3
    for index, batch in enumerate(val_loaders[0]):
        assert sorted(batch) == ['gt', 'gt_path', 'lq', 'lq_path']
        assert torch.equal(batch['lq'][0], val[index]['lq']) and torch.equal(batch['gt'][0], val[index]['gt'])


@pytest.mark.parametrize('value', [-1, 1.5, 'all', True])
def test_max_bad_samples_must_be_a_count(value):
    with pytest.raises(OptionError, match=rf'^datasets.val_2.max_bad_samples: {value!r}; use a whole number >= 0'):
        max_bad_samples({'max_bad_samples': value}, 'val_2')
