"""Write the FAKD golden fixture ``tests/data/golden/fakd_rcan_x2.pt`` from the FAKD authors' own code.

Run once, by hand, in a virtual environment that has the authors' code but neither BasicSR nor this plugin;
neither the tests nor CI run it. The fixture was made with:

* FAKD: github.com/Vincent-Hoo/Knowledge-Distillation-for-Super-resolution at commit
  589d35f750e63209e1213e89c414ac706fe6b9b1, exported with ``git archive HEAD | tar -x -C /tmp/fakd_ref``;
* Python 3.11.7, torch 2.14.1, numpy 2.4.6, matplotlib 3.11.2, imageio 2.38.1, tqdm 4.70.1 (their imports), on CPU;
* the command::

      python3 -m venv /tmp/venv_ref_fakd
      /tmp/venv_ref_fakd/bin/pip install torch==2.14.1 numpy matplotlib imageio tqdm
      OMP_NUM_THREADS=1 /tmp/venv_ref_fakd/bin/python tests/golden/make_fakd_golden.py --fakd /tmp/fakd_ref \\
          --out tests/data/golden

Their files are not changed. Two things are done around them so that ``code/train.py`` imports on current torch
and without a terminal: its ``data`` package (whose ``dataloader.py`` imports ``_DataLoaderIter``, gone from torch)
is replaced in ``sys.modules`` by an empty module (only ``__main__`` uses it; the batch is given here), and
``os.popen('stty size')``, which ``code/utility.py`` runs at import, answers ``24 80`` while it is imported.

It parses the flags of ``code/scripts/train_rcan_SA_x2.sh`` (alpha 0.5, ``10*SA``, features ``[1,2,3]``) with
their ``option.py``, plus ``--cpu`` and tiny sizes (4 features, channel reduction 2, a 12x12 LR batch of 2), builds
their RCAN (``code/models/rcan.py``) as student (10 groups x 1 block) and teacher (10 groups x 2 blocks; 10 groups
because their forward taps groups 2 and 6), each from its own seed, their ``Loss`` (``code/loss.py``) and
optimizer (``utility.make_optimizer``), and runs one iteration of their ``train.train`` in float64 (the networks
are initialised in float32 and converted, the default dtype is float64 for their loss log). Recorded: both networks'
initial weights under their names, the map from their names to the official RCAN release's (the names
``load_state_dict_teacher`` undoes: ``body.G`` -> ``body_groupG``, ``body.<num_groups>`` -> ``body_tail``), the batch
(values 0..255, their ``--rgb_range 255``), the logged terms (``DS`` = 0.5 * L1 to the HR, ``TS`` = 0.5 * L1 to
the teacher, ``SA`` = 10 * the sum of the three affinity L1s, ``Total``), the three unweighted affinity L1s, and
the student's gradients.
"""
import argparse
import io
import os
import sys
import types

import numpy as np
import torch

SCRIPT_FLAGS = ['--scale', '2', '--teacher', '[RCAN]', '--model', 'RCAN', '--alpha', '0.5', '--feature_loss_used', '1',
                '--feature_distilation_type', '10*SA', '--features', '[1,2,3]']  # train_rcan_SA_x2.sh
TINY_FLAGS = ['--cpu', '--n_feats', '4', '--reduction', '2', '--batch_size', '2', '--patch_size', '24']
NUM_GROUPS, STUDENT_BLOCKS, TEACHER_BLOCKS = 10, 1, 2


def import_train(code_dir: str):
    """Their ``train`` module, imported with the two work-arounds of the module docstring."""
    sys.path.insert(0, code_dir)
    sys.argv = ['train.py'] + SCRIPT_FLAGS + TINY_FLAGS
    sys.modules['data'] = types.ModuleType('data')
    popen = os.popen
    os.popen = lambda cmd, mode='r', buffering=-1: io.StringIO('24 80') if cmd == 'stty size' else popen(
        cmd, mode, buffering)
    try:
        import train
    finally:
        os.popen = popen
    return train


def official_rcan_name(name: str) -> str:
    """Their RCAN's parameter name -> the name in the official RCAN release (EDSR-PyTorch layout)."""
    head, _, rest = name.partition('.')
    if head.startswith('body_group'):
        return f'body.{head[len("body_group"):]}.{rest}'
    if head == 'body_tail':
        return f'body.{NUM_GROUPS}.{rest}'
    return name


class Log:
    """Stands in for their ``utility.checkpoint``: ``train`` only writes log lines to it."""

    def write_log(self, log, refresh=False):
        print(log)


class Loader(list):
    """One batch, in the (lr, hr, filename, idx_scale) form of their data loader."""

    def __init__(self, lr, hr):
        super().__init__([(lr, hr, None, 0)])
        self.dataset = [None] * lr.size(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--fakd', required=True, help='export of the authors\' repository (holding code/)')
    parser.add_argument('--out', required=True, help='folder for fakd_rcan_x2.pt')
    cli = parser.parse_args()
    torch.set_num_threads(1)
    train = import_train(os.path.join(os.path.abspath(cli.fakd), 'code'))
    from feature_transformation import spatial_similarity
    from loss import Loss
    from models import rcan
    import utility
    args = train.args

    nets = {}
    for role, blocks, seed in (('student', STUDENT_BLOCKS, 0), ('teacher', TEACHER_BLOCKS, 1)):
        args.n_resgroups, args.n_resblocks = NUM_GROUPS, blocks
        torch.manual_seed(seed)
        nets[role] = rcan.RCAN(args)
    student, teacher = nets['student'], nets['teacher']
    for p in teacher.parameters():  # as their load_teachers does
        p.requires_grad = False
    initial = {role: {k: v.clone() for k, v in net.state_dict().items()} for role, net in nets.items()}
    # the step runs in float64 (weights and batch exact in float32), so the fixture holds their arithmetic
    # without float32 rounding, and the test's 1e-5 has room for ours
    student.double()
    teacher.double()
    torch.set_default_dtype(torch.float64)  # their loss log

    generator = torch.Generator().manual_seed(2)
    lr = torch.randint(0, 256, (2, 3, 12, 12), generator=generator).float()
    hr = torch.randint(0, 256, (2, 3, 24, 24), generator=generator).float()

    with torch.no_grad():  # the three affinity distances, unweighted, with their functions
        taps = eval(args.features)
        s_fms, t_fms = student(lr.double())[0], teacher(lr.double())[0]
        per_tap = [torch.nn.L1Loss()(spatial_similarity(s_fms[i]), spatial_similarity(t_fms[i])).item() for i in taps]

    train.student, train.teachers = student, [teacher]
    train.criterion = Loss(args, None)
    train.optimizer = utility.make_optimizer(args, student)
    train.student_ckp = Log()
    train.train_loader = Loader(lr.double(), hr.double())
    train.train(1)
    logged = dict(zip(('DS', 'TS', 'SA', 'Total'), train.criterion.log[-1].tolist()))
    grads = {k: p.grad.clone() for k, p in student.named_parameters() if p.requires_grad}

    fixture = {
        'meta': {'repo': 'Vincent-Hoo/Knowledge-Distillation-for-Super-resolution',
                 'commit': '589d35f750e63209e1213e89c414ac706fe6b9b1', 'torch': str(torch.__version__),
                 'python': sys.version.split()[0], 'numpy': np.__version__, 'argv': ' '.join(sys.argv[1:])},
        'config': {'n_feats': args.n_feats, 'reduction': args.reduction, 'scale': args.scale[0],
                   'n_resgroups': NUM_GROUPS, 'student_blocks': STUDENT_BLOCKS, 'teacher_blocks': TEACHER_BLOCKS,
                   'rgb_range': args.rgb_range, 'alpha': args.alpha, 'features': taps,
                   'feature_distilation_type': args.feature_distilation_type},
        'lr': lr, 'hr': hr,
        'student': initial['student'], 'teacher': initial['teacher'],
        'name_map': {k: official_rcan_name(k) for state in initial.values() for k in state},
        'losses': logged, 'sa_per_tap': per_tap, 'grads': grads,
    }
    os.makedirs(cli.out, exist_ok=True)
    path = os.path.join(cli.out, 'fakd_rcan_x2.pt')
    torch.save(fixture, path)
    print(f'wrote {path}: losses {logged}, per-tap affinity L1 {per_tap}, {len(grads)} gradients')


if __name__ == '__main__':
    main()
