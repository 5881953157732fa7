"""The demo's option files: the templates in ``options/demo`` with the run's scale, length, device, seed and encoder."""
import argparse
import copy
import os
import re
from os import path as osp

import yaml

from dckd_basicsr.errors import OptionError

METHODS = ('Scratch', 'Logits', 'DCKD')
TEACHER = 'teacher'
# Validations of each student run (the PSNR-vs-iteration panel of comparison.png)
VALIDATIONS = 4


def options_dir() -> str:
    """``options/demo`` of the source tree, or the copy installed with the package (non-editable installs)."""
    package = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
    for candidate in (osp.join(osp.dirname(package), 'options', 'demo'), osp.join(package, 'demo_options')):
        if osp.isdir(candidate):
            return candidate
    raise OptionError('options/demo not found: reinstall dckd-basicsr (pip install -e .) from its source tree.')


def load_template(name: str) -> dict:
    """The template ``options/demo/train_demo_SRResNet_<name>.yml`` (``teacher``, ``student_<method>``)."""
    with open(osp.join(options_dir(), f'train_demo_SRResNet_{name}.yml')) as f:
        return yaml.safe_load(f)


def run_name(method: str, scale: int) -> str:
    return f'demo_SRResNet_x{scale}_{method}'


def concrete_options(method: str, args: argparse.Namespace, iters: int) -> dict:
    """A demo template with the run's scale, length, device, seed and encoder filled in."""
    opt = load_template(TEACHER if method == TEACHER else f'student_{method}')
    scale = args.scale
    opt['name'] = run_name(method, scale)
    opt['scale'] = scale
    opt['manual_seed'] = args.seed
    opt['num_gpu'] = {'cpu': 0, 'cuda': 1}.get(args.device, 'auto')
    for key in ('network_g', 'network_t'):
        if isinstance(opt.get(key), dict):
            opt[key]['upscale'] = scale
    train_set = opt['datasets']['train']
    train_set['dataroot_lq'] = re.sub(r'_X\d_', f'_X{scale}_', train_set['dataroot_lq'])
    train_set['gt_size'] = train_set['gt_size'] // 2 * scale  # templates are written for x2
    for phase, dataset in opt['datasets'].items():
        if phase.startswith('val'):
            dataset['dataroot_lq'] = re.sub(r'X\d$', f'X{scale}', dataset['dataroot_lq'])
            dataset['filename_tmpl'] = f'{{}}x{scale}'
    for metric in opt['val']['metrics'].values():
        metric['crop_border'] = scale
    if 'pretrain_network_t' in opt['path']:
        opt['path']['pretrain_network_t'] = osp.join('experiments', run_name(TEACHER, scale), 'models',
                                                     'net_g_latest.pth')
    opt['train']['total_iter'] = iters
    # EMA horizon of about a tenth of the run (0.999 suits 250k iterations; over 500 it would keep the init weights)
    opt['train']['ema_decay'] = round(min(0.999, 1 - 10 / iters), 4)
    opt['train']['scheduler']['milestones'] = [int(iters * 0.75)]
    opt['logger']['save_checkpoint_freq'] = iters
    opt['logger']['print_freq'] = print_freq = max(1, min(50, iters // 20))
    # students validate VALIDATIONS times (the figure's PSNR-vs-iteration panel), at multiples of print_freq, so each
    # validation follows a training log line that carries its iteration; the teacher only at the end
    opt['val']['val_freq'] = iters if method == TEACHER else max(print_freq, iters // VALIDATIONS // print_freq *
                                                                   print_freq)
    if method == 'DCKD' and args.vqgan:
        from dckd_basicsr.archs.vqgan_arch import DEFAULT_DDCONFIG  # the f16-1024 model, as the paper
        opt['network_vqgan'] = dict(type='VQGAN', embed_dim=256, n_embed=1024, ddconfig=copy.deepcopy(DEFAULT_DDCONFIG))
        opt['path']['pretrain_network_vqgan'] = osp.abspath(args.vqgan)
        opt['path']['param_key_vqgan'] = 'state_dict'
        opt['path']['strict_load_vqgan'] = False
    return opt


def write_random_vqgan(args: argparse.Namespace, path: str) -> str:
    """Save a randomly initialised encoder for the DCKD template (seeded), so the stand-in is explicit on disk."""
    import torch
    from basicsr.archs import build_network
    if not osp.isfile(path):
        os.makedirs(osp.dirname(path), exist_ok=True)
        torch.manual_seed(args.seed)
        net = build_network(load_template('student_DCKD')['network_vqgan'])
        torch.save({'params': net.state_dict()}, path)
    return path
