"""Record one DCKD training step of the authors' code as golden fixtures for ``tests/test_golden_dckd.py``.

Run once, against the authors' BasicSR fork (super-SSS/DCKD), NOT against this package; neither the tests nor CI
run it. How the committed fixtures were made:

* fork: ``git -C /work/.mirror/super-SSS+DCKD/repo rev-parse HEAD`` = 66fe4002662a815f2db6e8244d9f9b0ed481e03b,
  exported with ``git -C <mirror> archive HEAD | tar -x -C /tmp/dckd_fork``;
* its own virtual environment: Python 3.11.7, torch 2.14.1, torchvision 0.29.1, kornia 0.9.0, numpy 2.4.6
  (``python3 -m venv /tmp/venv_ref_dckd && /tmp/venv_ref_dckd/bin/pip install torch==2.14.1 torchvision==0.29.1
  kornia einops numpy opencv-python scipy scikit-image lmdb pyyaml tqdm addict future yapf``);
* command, from the repository root, CPU only::

    OMP_NUM_THREADS=1 PYTHONPATH=/tmp/dckd_fork /tmp/venv_ref_dckd/bin/python tests/golden/make_dckd_golden.py

It writes ``tests/data/golden/dckd_<backbone>.pt``. Each case builds tiny networks in the fork (its own SwinIR and
RCAN; NAFNet and Restormer, which the fork lacks, are this package's ``dckd_basicsr/archs/{nafnet,restormer}_arch.py``
executed with the fork's ``basicsr`` so they register into its ``ARCH_REGISTRY``), a tiny VQGAN with attention at
the deepest of its five levels (the fork's feature pass assumes five), gives every network deterministic weights
(:func:`seeded_parameters`, repeated in the test, which checks the checksums stored here), and runs the fork's
``DCKDModel.optimize_parameters(1)`` on a fixed batch with ``step: [1]`` so the history model updates. The EMA
student (so the history model) starts from its own weights (``params_ema``), not the student's: otherwise the LQ
negative restored by the history model equals the anchor up to rounding and Eq. 5's ``|a - n|`` sits at its kink,
where the gradient is rounding noise. Adam's ``eps`` is 1e-2, so that the first step's update ``lr * g / (|g| + eps)``
is not a sign function of gradients that are zero up to rounding (such as attention key biases'). Recorded:
every random draw of the step (the fork's ``random``/``np.random`` calls, the noise its
``random_add_gaussian_noise_pt`` added, the kornia blur arguments, the interpolation sizes and modes), the
negatives fed to the history model, the loss terms, the student's gradients before ``optimizer.step`` and the
student and history weights after the step (tensors of up to MAX_KEPT elements).
"""
import copy
import math
import os
import random
import sys
import types
from pathlib import Path

import numpy as np
import torch
import torchvision

sys.modules['torchvision.transforms.functional_tensor'] = torchvision.transforms.functional  # the fork needs it

import basicsr  # noqa: E402  (the fork, first on PYTHONPATH)

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / 'tests' / 'data' / 'golden'
assert 'dckd_fork' in basicsr.__file__ or os.environ.get('DCKD_FORK_OK'), f'not the fork: {basicsr.__file__}'

VQGAN = dict(type='VQGAN', embed_dim=8, n_embed=32,
             ddconfig=dict(double_z=False, z_channels=8, resolution=256, in_channels=3, out_ch=3, ch=32,
                           ch_mult=[1, 1, 1, 1, 1], num_res_blocks=2, attn_resolutions=[16], dropout=0.0))


def swinir(dim, depths):
    return dict(type='SwinIR', upscale=2, in_chans=3, img_size=16, window_size=4, img_range=1., depths=depths,
                embed_dim=dim, num_heads=[2] * len(depths), mlp_ratio=2, upsampler='pixelshuffledirect',
                resi_connection='1conv')


def rcan(num_block):
    return dict(type='RCAN', num_in_ch=3, num_out_ch=3, num_feat=8, num_group=1, num_block=num_block,
                squeeze_factor=4, upscale=2, res_scale=1, img_range=255.)


def nafnet(middle):
    return dict(type='NAFNet', img_channel=3, width=8, middle_blk_num=middle, enc_blk_nums=[1], dec_blk_nums=[1])


def restormer(refinement):
    return dict(type='Restormer', inp_channels=3, out_channels=3, dim=4, num_blocks=[1, 1, 1, 1],
                num_refinement_blocks=refinement, heads=[1, 1, 1, 1], ffn_expansion_factor=1, bias=False,
                LayerNorm_type='WithBias')


NOISE_ONLY = dict(gaussian_blur_prob=0, resize_prob=0, gaussian_noise_prob=1.0, gray_noise_prob=0.5)
ALL_OPS = dict(gaussian_blur_prob=1.0, resize_prob=1.0, gaussian_noise_prob=1.0, gray_noise_prob=0.5)
# name: (student, teacher, scale, LQ size, num_neg, degradations, need both up and down resizes)
CASES = {
    'swinir': (swinir(12, [1]), swinir(16, [1, 1]), 2, 16, 3, NOISE_ONLY, False),
    'rcan': (rcan(1), rcan(2), 2, 16, 4, ALL_OPS, True),
    'nafnet': (nafnet(1), nafnet(2), 1, 32, 2, NOISE_ONLY, False),
    'restormer': (restormer(1), restormer(2), 1, 32, 3, ALL_OPS, True),
}


MAX_KEPT = 4096


def seeded_parameters(net: torch.nn.Module, seed: int) -> dict:
    """Weights that do not depend on how a codebase builds its modules: parameter ``i`` in name order is drawn from
    its own seeded generator (matrices ~ N(0, 1/fan_in), vectors named ``*weight`` ~ 1 + N(0, 0.01), others
    ~ N(0, 0.01))."""
    state = {}
    for index, (name, param) in enumerate(sorted(net.named_parameters())):
        noise = torch.randn(param.shape, generator=torch.Generator().manual_seed(seed * 100003 + index))
        if param.dim() > 1:
            state[name] = noise / math.sqrt(param[0].numel())
        elif name.endswith('weight'):
            state[name] = 1 + 0.1 * noise
        else:
            state[name] = 0.1 * noise
    return state


def register_plugin_archs():
    """Execute the plugin's NAFNet and Restormer arch files with the fork's basicsr (its ARCH_REGISTRY)."""
    for stem in ('nafnet_arch', 'restormer_arch'):
        source = (REPO / 'dckd_basicsr' / 'archs' / f'{stem}.py').read_text()
        source = source.replace('from dckd_basicsr.errors import OptionError', 'OptionError = ValueError')
        module = types.ModuleType(f'golden_{stem}')
        exec(compile(source, f'{stem}.py', 'exec'), module.__dict__)


class Log:
    """Ordered log of every random draw the fork's DCKDModel makes through its module globals."""

    def __init__(self):
        self.entries = []

    def wrap(self, kind, fn):

        def recorded(*args, **kwargs):
            value = fn(*args, **kwargs)
            self.entries.append((kind, value))
            return value

        return recorded


def patch_fork(dckd_module, log: Log):
    py_random = types.SimpleNamespace(**{name: log.wrap(name, getattr(random, name))
                                         for name in ('randint', 'random', 'choices', 'choice')})
    np_random = types.SimpleNamespace(uniform=log.wrap('uniform', np.random.uniform),
                                      choice=log.wrap('np_choice', np.random.choice))
    dckd_module.random = py_random
    dckd_module.np = types.SimpleNamespace(random=np_random)
    from basicsr.data.degradations import random_generate_gaussian_noise_pt

    def noise_pt(img, sigma_range, clip, rounds, gray_prob):
        assert clip and not rounds
        noise = random_generate_gaussian_noise_pt(img, sigma_range, gray_prob)
        log.entries.append(('noise', noise.clone()))
        return torch.clamp(img + noise, 0, 1)  # random_add_gaussian_noise_pt(clip=True, rounds=False)

    dckd_module.random_add_gaussian_noise_pt = noise_pt
    blur = getattr(dckd_module, '_golden_unpatched_blur', dckd_module.gaussian_blur2d)  # patched once per case
    dckd_module._golden_unpatched_blur = blur

    def blur_recorded(x, kernel_size, sigma):
        log.entries.append(('blur', (tuple(kernel_size), tuple(sigma))))
        return blur(x, kernel_size, sigma)

    dckd_module.gaussian_blur2d = blur_recorded
    interpolate = torch.nn.functional.interpolate

    def interpolate_recorded(x, size, mode, align_corners):
        log.entries.append(('interpolate', (tuple(size), mode)))
        return interpolate(x, size=size, mode=mode, align_corners=align_corners)

    dckd_module.F = types.SimpleNamespace(interpolate=interpolate_recorded)


def parse_draws(entries, num_neg, opt_train, batch):
    """The fork's control flow replayed over the log: LCR masks, then one record per degraded copy."""
    entries = list(entries)

    def take(kind):
        got, value = entries.pop(0)
        assert got == kind, (got, kind)
        return value

    lcr = {op: torch.as_tensor(take('np_choice')).bool() for op in ('i', 'h', 'v', 't')}
    copies = []
    for _ in range(num_neg):
        copy = {}
        if take('uniform') < opt_train['gaussian_blur_prob']:
            kx, ky = take('randint') * 2 + 1, take('randint') * 2 + 1
            sx, sy = take('random') * 1.9 + 0.1, take('random') * 1.9 + 0.1
            assert take('blur') == ((kx, ky), (sx, sy))
            copy.update(blur_kernel=torch.tensor([kx, ky]), blur_sigma=torch.tensor([sx, sy], dtype=torch.float64))
        scale = 1
        if take('uniform') < opt_train['resize_prob']:
            up = take('choices')[0] == 'up'
            scale = take('uniform')
            mode = take('choice')
            size, mode_used = take('interpolate')
            assert mode_used == mode
            copy.update(up=torch.tensor(up), scale=torch.tensor(scale, dtype=torch.float64),
                        size=torch.tensor(size), resize_mode=mode)
        if take('uniform') < opt_train['gaussian_noise_prob']:
            copy['noise'] = take('noise')
            assert copy['noise'].size(0) == batch
        if scale != 1:
            copy['restore_mode'] = take('choice')
            assert take('interpolate')[1] == copy['restore_mode']
        copies.append(copy)
    assert not entries, entries
    return lcr, copies


def run_case(name, seed, tmp):
    from basicsr.archs import build_network
    from basicsr.models import build_model
    import basicsr.models.dckd_model as dckd_module

    student, teacher, scale, size, num_neg, degradations, need_up_down = CASES[name]
    # the EMA student (hence the history model) differs from the student: see the module docstring
    nets = {'g': student, 't': teacher, 'vqgan': VQGAN, 'g_ema': student}
    weights, checksums, full = {}, {}, {}
    for offset, (key, net_opt) in enumerate(nets.items()):
        net = build_network(net_opt)
        weights[key] = seeded_parameters(net, 10 * offset + 1)
        checksums[key] = {k: float(v.double().sum()) for k, v in weights[key].items()}
        net.load_state_dict(weights[key], strict=False)  # keeps buffers (SwinIR masks and indices) as built
        full[key] = net.state_dict()
    files = {key: str(tmp / f'{name}_{key}.pth') for key in ('g', 't', 'vqgan')}
    torch.save({'params': full['g'], 'params_ema': full['g_ema']}, files['g'])
    torch.save({'params': full['t']}, files['t'])
    torch.save({'params': full['vqgan']}, files['vqgan'])
    train = dict(ema_decay=0.9, optim_g=dict(type='Adam', lr=1e-3, weight_decay=0, betas=[0.9, 0.99], eps=1e-2),
                 scheduler=dict(type='MultiStepLR', milestones=[100], gamma=0.5), total_iter=1, warmup_iter=-1,
                 pixel_opt=dict(type='L1Loss', loss_weight=1.0, reduction='mean'),
                 logits_opt=dict(type='L1Loss', loss_weight=1.0, reduction='mean'),
                 lcr_opt=dict(type='L1Loss', loss_weight=1.0, reduction='mean'), noisy=dict(prob=0.5),
                 cl_opt=dict(type='ContrasLoss', d_func='L1', loss_weight=0.1,
                             weights=[0.03125, 0.0625, 0.125, 0.25, 1.0]),
                 num_neg=num_neg, update_decay=0.1, step=[1],
                 ce_opt=dict(type='CELoss', loss_weight=0.001, reduction='mean'), **degradations)
    opt = dict(name=f'golden_{name}', model_type='DCKDModel', scale=scale, num_gpu=0, is_train=True, dist=False,
               rank=0, world_size=1, network_g=student, network_t=teacher, network_his=True, network_vqgan=VQGAN,
               path=dict(pretrain_network_g=files['g'], param_key_g='params', strict_load_g=True,
                         pretrain_network_t=files['t'], param_key_t='params', strict_load_t=True,
                         pretrain_network_vqgan=files['vqgan'], param_key_vqgan='params', strict_load_vqgan=True),
               train=train)
    generator = torch.Generator().manual_seed(seed)
    lq = torch.rand(2, 3, size, size, generator=generator)
    gt = torch.rand(2, 3, size * scale, size * scale, generator=generator)

    log = Log()
    patch_fork(dckd_module, log)
    model = build_model(copy.deepcopy(opt))
    model.feed_data({'lq': lq, 'gt': gt})
    negatives = []
    model.net_his.register_forward_pre_hook(lambda module, args: negatives.append(args[0].detach().clone()))
    grads = {}
    step = model.optimizer_g.step

    def recording_step(*args, **kwargs):
        grads.update({k: p.grad.detach().clone() for k, p in model.net_g.named_parameters()})
        return step(*args, **kwargs)

    model.optimizer_g.step = recording_step
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    model.optimize_parameters(1)
    lcr, copies = parse_draws(log.entries, num_neg, train, lq.size(0))
    if need_up_down:
        ups = {bool(c['up']) for c in copies if 'up' in c}
        if ups != {True, False}:
            return None
    fixture = dict(
        case=name, seed=seed, options=dict(network_g=student, network_t=teacher, network_vqgan=VQGAN, scale=scale,
                                           train=train),
        checksums=checksums, lq=lq, gt=gt, lcr=lcr, copies=copies, negatives=negatives[0],
        losses={k: float(v) for k, v in model.log_dict.items()}, grads=grads,
        # To keep the files small, weights after the step are kept for tensors of up to MAX_KEPT elements (the
        # updates are element-wise, so these pin them), and the EMA weights are left out: the history model after
        # the step is 0.1 of its start (the EMA's start) plus 0.9 of the EMA after the step, so a wrong EMA shows there.
        net_g={k: v.detach().clone() for k, v in model.net_g.named_parameters() if v.numel() <= MAX_KEPT},
        net_his={k: v.detach().clone() for k, v in model.net_his.named_parameters() if v.numel() <= MAX_KEPT})
    return fixture


def main():
    torch.set_num_threads(1)
    register_plugin_archs()
    tmp = Path(os.environ.get('TMPDIR', '/tmp')) / 'dckd_golden_weights'
    tmp.mkdir(parents=True, exist_ok=True)
    OUT.mkdir(parents=True, exist_ok=True)
    for index, name in enumerate(CASES):
        for seed in range(100 * index, 100 * index + 100):
            fixture = run_case(name, seed, tmp)
            if fixture is not None:
                break
        path = OUT / f'dckd_{name}.pt'
        torch.save(fixture, path)
        print(f'{path}: seed {seed}, {path.stat().st_size / 1024:.0f} KiB, losses {fixture["losses"]}')


if __name__ == '__main__':
    main()
