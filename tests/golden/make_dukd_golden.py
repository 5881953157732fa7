"""Write the DUKD golden fixtures ``tests/data/golden/dukd_*.pt`` from the DUKD authors' own code.

Run once, by hand, in a virtual environment that has PyPI basicsr and the authors' DUKD code but NOT this plugin;
neither the tests nor CI run it. The fixtures were made with:

* DUKD: github.com/yun224/DUKD at commit 6960273e08cf7958b844b750910446bbbddb3746 (its ``models/`` folder);
* Python 3.11.7, torch 2.14.1, torchvision 0.29.1, basicsr 1.4.2, numpy 2.4.6, on CPU;
* the commands, from this repository's root (``<mirror>``: a clone of the DUKD repository)::

      python3 -m venv /tmp/venv_ref_dukd
      /tmp/venv_ref_dukd/bin/pip install torch==2.14.1 torchvision==0.29.1 basicsr==1.4.2
      mkdir -p /tmp/dukd_ref/models
      for f in __init__ base_kd_model dukd_model fakd_model; do
          git -C <mirror> show HEAD:models/$f.py > /tmp/dukd_ref/models/$f.py; done
      OMP_NUM_THREADS=1 /tmp/venv_ref_dukd/bin/python tests/golden/make_dukd_golden.py --dukd /tmp/dukd_ref \
          --out tests/data/golden

  Re-running it rewrites the five files byte for byte.

For each configuration it builds tiny BasicSR RCAN or SwinIR students and teachers (seeded), a fixed batch, and runs
the authors' ``DUKD.optimize_parameters`` for one iteration, recording:

* the random draws: the zoom-in tile permutation and the label-consistency masks (``np.random`` of their module is
  wrapped), stored as grid cells and as masks named like :data:`dckd_basicsr.distill.invertible_ops.INVERTIBLE_OPS`
  (their op ``h`` flips dim -2, our ``vflip``; their ``v`` flips dim -1, our ``hflip``);
* every loss term in call order (``cri_pix`` and ``cri_kd`` are wrapped; their code does not log ``l_zoom_in``);
* the student's gradients at each of the two optimizer steps (``optimizer_g.step`` is wrapped);
* the student's weights after the iteration (the EMA copy, ``ema_decay`` 0.5, is checked to be their mean with
  the initial weights, and not stored).

The reference teacher is put in eval mode after it is built: their code leaves it in train mode (a defect: SwinIR's
stochastic depth would make its labels random); the tiny networks have no stochastic depth in the student either.
Their label-consistency inverse has an order defect (it re-applies the ops in forward order, wrong when a transpose
follows exactly one flip): the seeds of the ``golden`` configurations are chosen so that no tile has that
combination (checked here and in the test), and the ``defect`` configuration records one that has it, for the test
that shows the defect's effect.
"""
import argparse
import os
import copy
import sys
from collections import OrderedDict

import numpy as np
import torch
import torchvision.transforms.functional

sys.modules.setdefault('torchvision.transforms.functional_tensor', torchvision.transforms.functional)

OPS = {'i': 'invert', 'h': 'vflip', 'v': 'hflip', 't': 'transpose'}  # their names -> ours (same order)


def tiny_rcan(groups, scale):
    return dict(type='RCAN', num_in_ch=3, num_out_ch=3, num_feat=4, num_group=groups, num_block=1, squeeze_factor=2,
                upscale=scale, res_scale=1, img_range=255.0, rgb_mean=[0.4488, 0.4371, 0.4040])


def tiny_swinir(dim, depths, scale):
    # pixelshuffledirect: BasicSR's pixelshuffle upsampler has 64 fixed channels, too large for a small fixture
    return dict(type='SwinIR', upscale=scale, in_chans=3, img_size=8, window_size=4, img_range=1.0, depths=depths,
                embed_dim=dim, num_heads=[2] * len(depths), mlp_ratio=2, upsampler='pixelshuffledirect',
                resi_connection='1conv', drop_path_rate=0.0)


def configurations():
    """name -> (student, teacher, scale, LQ size, train keys, draw rule).

    Draw rule (the NumPy seed is the first that satisfies it): ``golden``, every op on some tile and no tile with a
    transpose and exactly one flip; ``shipped``, no such tile; ``defect``, at least one such tile."""
    return {
        'rcan_golden': (tiny_rcan(1, 2), tiny_rcan(2, 2), 2, 8,
                        dict(pixel_weight=5.0, noisy_prob=0.5, n_gt_sub=[3], zoom_out=True), 'golden'),
        'rcan_shipped_x4': (tiny_rcan(1, 4), tiny_rcan(2, 4), 4, 8,  # DUKD's RCAN x4 file: noisy.prob 0
                            dict(pixel_weight=1.0, noisy_prob=0.0, n_gt_sub=[1], zoom_out=False), 'shipped'),
        'swinir_golden': (tiny_swinir(4, [2], 2), tiny_swinir(8, [2], 2), 2, 8,
                          dict(pixel_weight=1.0, noisy_prob=0.5, n_gt_sub=[2], zoom_out=True), 'golden'),
        'swinir_shipped_x4': (tiny_swinir(4, [2], 4), tiny_swinir(8, [2], 4), 4, 8,  # DUKD's SwinIR x4 file
                              dict(pixel_weight=5.0, noisy_prob=0.3, n_gt_sub=[1], zoom_out=False), 'shipped'),
        'rcan_defect': (tiny_rcan(1, 2), tiny_rcan(2, 2), 2, 8,
                        dict(pixel_weight=1.0, noisy_prob=0.5, n_gt_sub=[2], zoom_out=False), 'defect'),
    }


def defect_hits(masks):
    """Tiles whose masks have a transpose and exactly one flip: there the authors' inverse is wrong."""
    if masks is None:
        return 0
    one_flip = masks['vflip'] ^ masks['hflip']
    return int((masks['transpose'] & one_flip).sum())


class RecordingRandom:
    """Stands in for ``np`` in the authors' module: ``np.random.permutation`` / ``choice`` are recorded."""

    def __init__(self):
        self.calls = []
        outer = self

        class _Random:
            def __getattr__(self, name):
                return getattr(np.random, name)

            def permutation(self, *args, **kwargs):
                out = np.random.permutation(*args, **kwargs)
                outer.calls.append(('permutation', out.copy()))
                return out

            def choice(self, *args, **kwargs):
                out = np.random.choice(*args, **kwargs)
                outer.calls.append(('choice', out.copy()))
                return out

        self.random = _Random()

    def __getattr__(self, name):
        return getattr(np, name)


def state(net):
    return OrderedDict((k, v.detach().clone()) for k, v in net.state_dict().items())


def pack(tensors):
    """Parameters (no buffers: those are computed) as one flat fp32 tensor, to keep the fixture small."""
    names = [k for k, v in tensors.items() if v.is_floating_point() and 'relative_position_index' not in k
             and 'attn_mask' not in k]
    return {'names': names, 'shapes': [list(tensors[k].shape) for k in names],
            'values': torch.cat([tensors[k].reshape(-1).float() for k in names])}


def run_one(name, config, work, dukd_module, build_model):
    student, teacher, scale, size, keys, seed_rule = config
    torch.manual_seed(1)
    from basicsr.archs import build_network
    teacher_state = state(build_network(teacher))
    torch.manual_seed(2)
    student_state = state(build_network(student))
    torch.save({'params': teacher_state}, os.path.join(work, f'{name}_t.pth'))
    torch.save({'params': student_state, 'params_ema': student_state}, os.path.join(work, f'{name}_g.pth'))
    generator = torch.Generator().manual_seed(3)
    lq = torch.rand(2, 3, size, size, generator=generator)
    gt = torch.rand(2, 3, size * scale, size * scale, generator=generator)
    train = dict(ema_decay=0.5, optim_g=dict(type='Adam', lr=1e-3, weight_decay=0, betas=[0.9, 0.99]),
                 scheduler=dict(type='MultiStepLR', milestones=[100], gamma=0.1), total_iter=10, warmup_iter=-1,
                 pixel_opt=dict(type='L1Loss', loss_weight=keys['pixel_weight'], reduction='mean'),
                 kd_opt=dict(type='L1Loss', loss_weight=1.0, reduction='mean'),
                 dukd_opt=dict(n_gt_sub=keys['n_gt_sub'], zoom_out=keys['zoom_out']))
    if keys['noisy_prob'] is not None:
        train['noisy'] = dict(prob=keys['noisy_prob'])
    opt = dict(name=name, model_type='DUKD', is_train=True, dist=False, num_gpu=0, rank=0, world_size=1, scale=scale,
               network_g=student, network_t=teacher, train=train, val=dict(metrics={}),
               path=dict(pretrain_network_g=os.path.join(work, f'{name}_g.pth'), strict_load_g=True,
                         pretrain_network_t=os.path.join(work, f'{name}_t.pth'), models=work, training_states=work))

    for np_seed in range(1000):
        recorder = RecordingRandom()
        dukd_module.np = recorder
        model = build_model(copy.deepcopy(opt))
        model.net_t.eval()  # their teacher stays in train mode: neutralised here (see the module docstring)
        losses, grads = [], []
        for attr in ('cri_pix', 'cri_kd'):
            loss = getattr(model, attr)

            def recorded(*args, _loss=loss, _name=attr, **kwargs):
                value = _loss(*args, **kwargs)
                losses.append((_name, value.item()))
                return value

            setattr(model, attr, recorded)
        step = model.optimizer_g.step

        def recorded_step(*args, _step=step, **kwargs):
            grads.append(OrderedDict((k, p.grad.detach().clone()) for k, p in model.net_g.named_parameters()))
            return _step(*args, **kwargs)

        model.optimizer_g.step = recorded_step
        model.feed_data({'lq': lq.clone(), 'gt': gt.clone()})
        np.random.seed(np_seed)
        model.optimize_parameters(1)
        permutation = [c for kind, c in recorder.calls if kind == 'permutation'][0]
        choices = [c for kind, c in recorder.calls if kind == 'choice']
        cells = [tuple(int(v) for v in divmod(int(k), scale)) for k in permutation[:keys['n_gt_sub'][0]]]
        masks = None
        if choices:
            masks = {OPS[op]: torch.from_numpy(c.astype(bool)) for op, c in zip('ihvt', choices)}
        hits = defect_hits(masks)
        if seed_rule == 'defect' and hits:
            break
        if seed_rule == 'shipped' and not hits:
            break
        if seed_rule == 'golden' and not hits and all(m.any() for m in masks.values()):
            break
    print(f'{name}: numpy seed {np_seed}, cells {cells}, defect tiles {hits}, losses {losses}')
    return {'config': dict(scale=scale, network_g=student, network_t=teacher, lr=1e-3, ema_decay=0.5, **keys),
            'lq': lq, 'gt': gt, 'student_init': student_state, 'teacher': teacher_state, 'cells': cells,
            'masks': masks, 'defect_tiles': hits, 'losses': losses, 'grads': grads,
            'student_after': state(model.net_g), 'ema_after': state(model.net_g_ema)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--dukd', required=True, help='folder holding the authors\' models/ package')
    parser.add_argument('--out', required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    sys.path.insert(0, args.dukd)
    from basicsr.models import build_model
    import models.dukd_model as dukd_module  # the authors' code: registers BaseKD and DUKD
    assert 'dckd_basicsr' not in sys.modules, 'run this in a venv without the plugin'
    os.makedirs(args.out, exist_ok=True)
    work = os.path.join(args.out, '_work')
    os.makedirs(work, exist_ok=True)
    for name, config in configurations().items():
        record = run_one(name, config, work, dukd_module, build_model)
        # the EMA copy after the iteration is 0.5 * (student_init + student_after): checked, not stored
        assert all(torch.allclose(record['ema_after'][k], 0.5 * (record['student_init'][k] + v), atol=1e-7)
                   for k, v in record['student_after'].items() if v.is_floating_point())
        del record['ema_after']
        for key in ('student_init', 'teacher', 'student_after'):
            record[key] = pack(record[key])
        record['grads'] = [pack(grads) for grads in record['grads']]
        if name == 'rcan_defect':  # only the losses and the draws are needed there
            record = {k: v for k, v in record.items() if k not in ('grads', 'student_after')}
        torch.save(record, os.path.join(args.out, f'dukd_{name}.pt'))
    for file in os.listdir(work):
        os.remove(os.path.join(work, file))
    os.rmdir(work)


if __name__ == '__main__':
    main()
