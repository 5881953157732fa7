"""Progressive patches (dckd_basicsr/training/progressive.py): the stage schedule, the crop and sub-sample of a batch,
the option errors, the ProgressivePatches mixin on a BasicSR model, and a shipped Restormer option file trained with
them."""
import glob
import random
import re
from os import path as osp

import pytest
import torch

import dckd_basicsr  # noqa: F401  (the patched build_model)
import basicsr.models
from basicsr.utils.registry import MODEL_REGISTRY

from helpers import REPO
from dckd_basicsr.errors import OptionError
from dckd_basicsr.training.progressive import ProgressivePatches, ProgressivePatchSchedule

SCHEDULE = dict(iters=[92000, 64000, 48000, 36000, 36000, 24000], gt_sizes=[128, 160, 192, 256, 320, 384],
                mini_batch_sizes=[8, 5, 4, 2, 1, 1], gt_size=384, batch_size=8)


def test_progressive_stages():
    schedule = ProgressivePatchSchedule(**SCHEDULE)
    expected = {1: 0, 92000: 0, 92001: 1, 156000: 1, 156001: 2, 204001: 3, 240001: 4, 276000: 4, 276001: 5,
                300000: 5, 450000: 5}
    assert {i: schedule.stage(i) for i in expected} == expected


def test_progressive_crop_and_subsample():
    schedule = ProgressivePatchSchedule(**dict(SCHEDULE, gt_size=64, gt_sizes=[16, 32, 32, 48, 64, 64]), scale=2)
    gt = torch.arange(8 * 3 * 64 * 64, dtype=torch.float32).reshape(8, 3, 64, 64)
    lq = gt[..., ::2, ::2].clone()  # LQ pixel (i, j) <-> GT pixel (2i, 2j)
    rng = random.Random(3)
    lq_c, gt_c = schedule(lq, gt, 100000, rng=rng)  # stage 1: 5 images, GT 32 / LQ 16
    assert gt_c.shape == (5, 3, 32, 32) and lq_c.shape == (5, 3, 16, 16)
    assert torch.equal(gt_c[..., ::2, ::2], lq_c)  # still aligned
    check = random.Random(3)
    indices = sorted(check.sample(range(8), k=5))
    top, left = int(16 * check.random()), int(16 * check.random())
    assert torch.equal(gt_c, gt[indices][..., 2 * top:2 * top + 32, 2 * left:2 * left + 32])
    lq_c, gt_c = schedule(lq, gt, 300000)  # last stage: one whole 64 px image
    assert gt_c.shape == (1, 3, 64, 64) and torch.equal(gt_c[..., ::2, ::2], lq_c)
    assert any(torch.equal(gt_c[0], image) for image in gt)
    lq_c, gt_c = schedule(lq[:1], gt[:1], 1)  # a short last batch keeps its images; stage 0 crops 16 px
    assert gt_c.shape == (1, 3, 16, 16) and lq_c.shape == (1, 3, 8, 8)


def test_progressive_option_errors():
    assert ProgressivePatchSchedule.from_options({'datasets': {'train': {'gt_size': 64}}}) is None
    train = dict(gt_size=64, batch_size_per_gpu=4, iters=[10, 10], gt_sizes=[32, 64], mini_batch_sizes=[4, 2])
    assert ProgressivePatchSchedule.from_options({'scale': 1, 'datasets': {'train': train}}).ends == [10, 20]
    for bad, message in [(dict(gt_sizes=[32, 96]), 'gt_sizes'), (dict(mini_batch_sizes=[8, 2]), 'mini_batch_sizes'),
                         (dict(iters=[10]), 'same length'), (dict(gt_sizes=None), 'missing datasets.train.gt_sizes')]:
        with pytest.raises(OptionError, match=message):
            ProgressivePatchSchedule.from_options({'scale': 1, 'datasets': {'train': dict(train, **bad)}})


def test_progressive_patches_on_srmodel():
    opt = {
        'is_train': True, 'num_gpu': 0, 'dist': False, 'scale': 1, 'model_type': 'SRModel',
        'network_g': dict(type='NAFNet', width=4, middle_blk_num=1, enc_blk_nums=[1], dec_blk_nums=[1]),
        'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None},
        'datasets': {'train': dict(gt_size=32, batch_size_per_gpu=4, iters=[1, 1], gt_sizes=[16, 32],
                                   mini_batch_sizes=[2, 4])},
        'train': {'ema_decay': 0, 'optim_g': {'type': 'Adam', 'lr': 1e-3}, 'total_iter': 2,
                  'scheduler': {'type': 'MultiStepLR', 'milestones': [10], 'gamma': 0.5},
                  'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0}},
    }
    model = basicsr.models.build_model(opt)  # the plugin's build_model adds the mixin when the options ask for it
    assert isinstance(model, ProgressivePatches) and type(model).__name__ == 'SRModel'
    data = {'lq': torch.rand(4, 3, 32, 32), 'gt': torch.rand(4, 3, 32, 32)}
    model.feed_data(data)
    model.optimize_parameters(1)
    assert model.lq.shape == (2, 3, 16, 16) and model.output.shape == (2, 3, 16, 16)
    model.feed_data(data)
    model.optimize_parameters(2)
    assert model.output.shape == (4, 3, 32, 32)
    model.feed_data({'lq': torch.rand(1, 3, 40, 24)})  # validation path: feed_data + test, untouched
    model.test()
    assert model.output.shape == (1, 3, 40, 24)
    plain = basicsr.models.build_model(dict(opt, datasets={'train': {'gt_size': 32}}))
    assert type(plain) is MODEL_REGISTRY.get('SRModel')


# ---------------------------------------------------------------- a shipped option file, trained
@pytest.mark.slow
def test_restormer_scratch_option_file_trains_with_progressive_patches(tmp_path):
    """The shipped option file, full-size student, through ``python -m dckd_basicsr.train``; only sizes and counts
    are overridden. Checks the progressive stages reach the model and odd-sized frames validate."""
    import subprocess
    import sys

    import cv2
    import numpy as np
    rng = np.random.default_rng(0)
    for split, count, (h, w) in (('train_crops', 2, (48, 48)), ('test', 1, (36, 44))):
        for sub in ('input', 'target'):
            folder = tmp_path / 'datasets' / 'GoPro' / split / sub
            folder.mkdir(parents=True)
            for i in range(count):
                cv2.imwrite(str(folder / f'GOPR0001_{i:06d}.png'), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    force = ['num_gpu=0', 'datasets:train:num_worker_per_gpu=0', 'datasets:train:batch_size_per_gpu=2',
             'datasets:train:gt_size=32', 'datasets:train:gt_sizes=[16,32,32,32,32,32]',
             'datasets:train:iters=[1,1,1,1,1,1]', 'datasets:train:mini_batch_sizes=[2,1,1,1,1,1]',
             'train:total_iter=2', 'val:val_freq=2', 'logger:print_freq=1', 'logger:use_tb_logger=false']
    option_file = osp.join(REPO, 'options', 'train', 'Restormer', 'train_Restormer_Deblur_Scratch.yml')
    proc = subprocess.run([sys.executable, '-m', 'dckd_basicsr.train', '-opt', option_file, '--force_yml'] + force,
                          cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**__import__('os').environ, 'CUDA_VISIBLE_DEVICES': '', 'OMP_NUM_THREADS': '2'})
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = ''.join(open(p).read() for p in glob.glob(str(tmp_path / 'experiments' / '*' / 'train_*.log')))
    assert 'stage 1/6 from iter 1: patch 16, batch 2' in log and 'stage 2/6 from iter 2: patch 32, batch 1' in log
    assert re.search(r'Validation GoPro\n\s+# psnr: [\d.]+', log)
