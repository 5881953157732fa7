"""Write the super-resolution option files of every row of the paper's Table 2 from one table of differences.

    python options/generate_sr_options.py           # rewrite options/train/{SwinIR,RCAN}/ and options/test/...
    python options/generate_sr_options.py --check   # exit 1 if a committed file differs from what would be written

Rows (``METHODS``), each for SwinIR and RCAN at x2, x3 and x4, in ``options/train/<Backbone>/`` as
``train_<Backbone>_SRx<scale>_<Method>.yml`` (run name ``<Backbone>_SRx<scale>_<Method>``, which
``dckd_basicsr.commands.results`` parses), plus one test file per row in ``options/test/<Backbone>/``. Every file of one
backbone and scale shares the data, network, schedule, validation and logging blocks (``base_options``); a method
adds only its own keys (``METHOD_KEYS``). ``train_SwinIR_SRx4_DCKD_authors.yml`` is the authors' file and is not
generated. Edit this script, not the generated files; ``tests/test_option_files.py`` checks they agree.

Efficient students (``EFFICIENT``): spandrel's SPAN and SAFMN at x4, distilled from the same SwinIR-M x4 teacher with
the same shared blocks, rows ``EFFICIENT_METHODS``, and DCKD* once more from a stronger teacher file that spandrel
detects (``network_t: {type: SpandrelTeacher}``, run name suffix ``_SpandrelTeacher``).
"""
import argparse
import copy
import sys
from os import path as osp
from typing import Any, Dict, List, Tuple

import yaml

from dckd_basicsr.archs.vqgan_arch import DEFAULT_DDCONFIG

ROOT = osp.dirname(osp.abspath(__file__))
SCALES = (2, 3, 4)
BACKBONES = ('SwinIR', 'RCAN')
METHODS = ('Scratch', 'Logits', 'FAKD', 'DUKD', 'DCKD', 'DCKDstar', 'DCKDEq9')
TEST_SETS = ('Set5', 'Set14', 'B100', 'Urban100', 'Manga109')
VAL_SETS = ('Set5', 'Set14', 'Urban100')  # validated during training, as in the authors' files

# Table 1: students and teachers (docs/model_sizes.md); `upscale` is set per scale.
SWINIR = dict(type='SwinIR', upscale=None, in_chans=3, img_size=48, window_size=8, img_range=1.0,
              depths=[6, 6, 6, 6], embed_dim=60, num_heads=[6, 6, 6, 6], mlp_ratio=2, upsampler='pixelshuffle',
              resi_connection='1conv')
NETWORKS = {
    'SwinIR': {'student': SWINIR,
               'teacher': dict(SWINIR, depths=[6] * 6, embed_dim=180, num_heads=[6] * 6)},
    'RCAN': {'student': dict(type='RCAN', num_in_ch=3, num_out_ch=3, num_feat=64, num_group=10, num_block=6,
                             squeeze_factor=16, upscale=None, res_scale=1, img_range=255.0,
                             rgb_mean=[0.4488, 0.4371, 0.4040]),
             'teacher': None},
}
NETWORKS['RCAN']['teacher'] = dict(NETWORKS['RCAN']['student'], num_block=20)
# Efficient students from spandrel (dckd_basicsr/archs/spandrel_students_arch.py), with the SwinIR-M teacher: SPAN as
# its NTIRE 2024 efficient-SR release (48 channels), SAFMN as its x4 DIV2K release (36 channels, 8 blocks).
EFFICIENT = ('SPAN', 'SAFMN')
EFFICIENT_SCALES = (4, )
EFFICIENT_METHODS = ('Scratch', 'Logits', 'DCKD', 'DCKDstar')
NETWORKS['SPAN'] = {'student': dict(type='SPAN', num_in_ch=3, num_out_ch=3, feature_channels=48, upscale=None),
                    'teacher': NETWORKS['SwinIR']['teacher']}
NETWORKS['SAFMN'] = {'student': dict(type='SAFMN', dim=36, n_blocks=8, ffn_scale=2.0, upscaling_factor=None),
                     'teacher': NETWORKS['SwinIR']['teacher']}
# DCKD* once more from a stronger teacher that spandrel builds from its release: HAT-L x4 (ImageNet-pretrained).
SPANDREL_TEACHER = 'SpandrelTeacher'
HAT_L_X4 = 'experiments/pretrained_models/HAT/HAT-L_SRx4_ImageNet-pretrain.pth'
SPANDREL_TEACHER_KEYS = {'network_t': dict(type='SpandrelTeacher', architecture='HAT'),
                         'path.pretrain_network_t': HAT_L_X4,
                         'path.param_key_t': 'params_ema'}
# The teachers' official releases, loaded as they are (path.teacher_format: auto). SwinIR: the DIV2K-trained
# SwinIR-M (patch 48, window 8) that the DCKD authors distil from (their README; Table 2's teacher row).
TEACHER_FILES = {'SwinIR': 'experiments/pretrained_models/SwinIR/001_classicalSR_DIV2K_s48w8_SwinIR-M_x{s}.pth',
                 'RCAN': 'experiments/pretrained_models/RCAN/RCAN_BIX{s}.pt'}
TEACHER_FILES.update((student, TEACHER_FILES['SwinIR']) for student in EFFICIENT)
MODEL_TYPES = {'DUKD': 'DUKDModel', 'DCKD': 'DCKDModel', 'DCKDstar': 'DCKDModel',
               'DCKDEq9': 'DCKDModel'}  # the others: KDModel
SCRATCH_MODEL = {'SwinIR': 'SwinIRModel', 'RCAN': 'SRModel', 'SPAN': 'SRModel',
                 'SAFMN': 'SRModel'}  # SwinIRModel pads validation inputs to the window

L1 = dict(type='L1Loss', loss_weight=1.0, reduction='mean')
VQGAN = dict(type='VQGAN', embed_dim=256, n_embed=1024, ddconfig=DEFAULT_DDCONFIG)  # taming's f16-1024
VQGAN_PATH = 'experiments/pretrained_models/VQGAN/vqgan_imagenet_f16_1024/checkpoints/last.ckpt'

TEACHER_KEYS = {'network_t': None, 'path.pretrain_network_t': None, 'path.param_key_t': 'params',
                'path.strict_load_t': True}
# DUKD as the DUKD authors' files (their repository's options/{Swinir,RCAN}/dukd_*.yml) train it: what all of them
# share here, then each file's own values (SETTING_KEYS).
DUKD_KEYS = {'train.scheduler': dict(type='MultiStepLR', milestones=[100000, 200000], gamma=0.1),
             'train.dukd_opt': {'n_gt_sub': [1], 'zoom_out': False}}
# The DCKD authors' label-consistency term (their only released file has it): what DCKD* adds to DCKD.
LCR_KEYS = {'train.lcr_opt': L1, 'train.noisy': {'prob': 0.5}}
DCKD_KEYS = {
    'network_his': True, 'network_vqgan': VQGAN, 'path.pretrain_network_vqgan': VQGAN_PATH,
    'path.param_key_vqgan': 'state_dict', 'path.strict_load_vqgan': False,
    'train.cl_opt': dict(type='ContrasLoss', d_func='L1', loss_weight=0.1, weights=[0.03125, 0.0625, 0.125, 0.25, 1.0]),
    'train.ce_opt': dict(type='CELoss', loss_weight=0.001, reduction='mean'),
    'train.num_neg': 4, 'train.gaussian_noise_prob': 1, 'train.gray_noise_prob': 0.5, 'train.gaussian_blur_prob': 0,
    'train.resize_prob': 0, 'train.update_decay': 0.1, 'train.step': [1000, 2000, 3000],
}
# The table of differences: what each row adds to the shared blocks (model_type is set in method_options).
METHOD_KEYS: Dict[str, Dict[str, Any]] = {
    'Scratch': {},
    'Logits': dict(TEACHER_KEYS, **{'train.logits_opt': L1}),
    # the FAKD authors' alpha 0.5 between the GT and teacher L1 terms, and their weight 10 on images in [0, 255]
    'FAKD': dict(TEACHER_KEYS, **{'train.pixel_opt': dict(L1, loss_weight=0.5),
                                  'train.logits_opt': dict(L1, loss_weight=0.5),
                                  'train.fakd_opt': dict(type='FAKDLoss', loss_weight=10 / 255)}),
    'DUKD': dict(TEACHER_KEYS, **{'train.logits_opt': L1}, **DUKD_KEYS),
    'DCKD': dict(TEACHER_KEYS, **{'train.logits_opt': L1}, **DCKD_KEYS),
    'DCKDstar': dict(TEACHER_KEYS, **{'train.logits_opt': L1}, **LCR_KEYS, **DCKD_KEYS),
    'DCKDEq9': dict(TEACHER_KEYS, **{'train.logits_opt': L1},
                    **dict(DCKD_KEYS, **{'train.ce_opt': dict(type='DistributionMappingLoss', loss_weight=0.001)})),
}
# What one row's file takes for one backbone and scale only, on top of METHOD_KEYS: (method, backbone, scale) -> keys.
SETTING_KEYS: Dict[Tuple[str, str, int], Dict[str, Any]] = {
    # DUKD, per their file: pixel_opt weight, noisy.prob (RCAN x2's file has no `noisy`: no label consistency;
    # RCAN x4's has prob 0), dukd_opt.zoom_out (RCAN x3 only)
    **{('DUKD', 'SwinIR', s): {'train.pixel_opt': dict(L1, loss_weight=5.0), 'train.noisy': {'prob': 0.3}}
       for s in SCALES},
    ('DUKD', 'RCAN', 2): {},
    ('DUKD', 'RCAN', 3): {'train.pixel_opt': dict(L1, loss_weight=2.0), 'train.noisy': {'prob': 0.3},
                          'train.dukd_opt.zoom_out': True},
    ('DUKD', 'RCAN', 4): {'train.noisy': {'prob': 0.0}},
}
DESCRIPTIONS = {
    'Scratch': 'the student trained alone: L1 reconstruction only (Table 2 "Scratch").',
    'Logits': 'output KD: L1 rec + L1 between student and teacher outputs (Table 2 "Logits").',
    'FAKD': 'FAKD (He et al., ICIP 2020) as the authors\' code trains it (Table 2 "FAKD"): 0.5 * rec\n'
            '# + 0.5 * logits KD + 10/255 * the sum of spatial-affinity L1 over three taps: RCAN groups 3 and 7 and\n'
            '# the body end, SwinIR the RSTBs at the same relative depths and the body end (their 10, on [0, 255]).',
    'DUKD': "DUKD (Zhang et al., 2023) as the DUKD authors' code and files train it (Table 2 \"DUKD\"): step 1 on\n"
            '# rec + logits KD, then a second optimizer step on the upcycled inputs labelled by the teacher (zoom-in\n'
            '# GT tiles with label consistency, zoom-out LQ); see dckd_basicsr/models/dukd_model.py.',
    'DCKD': "DCKD as the authors' code runs it: rec + logits KD + 0.1 * DCR (Eq. 5) + 0.001 * DMM with their\n"
            '# CELoss (Table 2 "DCKD").',
    'DCKDstar': "DCKD* = DCKD + the authors' label-consistency term (lcr_opt, noisy.prob 0.5), as in their released\n"
                '# file (Table 2 "DCKD*").',
    'DCKDEq9': "DCKD with the paper's Eq. 9 for DMM (DistributionMappingLoss) instead of the authors' CELoss; not a\n"
               '# Table 2 row (the paper\'s numbers come from CELoss).',
}
# Comment lines written above a top-level key or a key of `train`.
COMMENTS = {
    'num_gpu': 'the authors train on 4 GPUs (4 x 16 patches); set 0 for CPU',
    'network_g': 'student (Table 1, docs/model_sizes.md)',
    'network_t': 'teacher (Table 1): frozen, no gradients, never in DDP, the optimizer or the EMA',
    'network_his': 'history model: a copy of network_g that trails the EMA student',
    'network_vqgan': 'frozen VQGAN (taming-transformers, ImageNet, f16, 1024 codes); only the encoder side is built',
    'train.scheduler': "one milestone at the end as in the authors' files: no decay (paper text: /10 every 1e5)",
    'train.pixel_opt': 'L_rec: student vs GT',
    'train.logits_opt': 'L_kd: student vs teacher output (kd_opt is an alias)',
    'train.fakd_opt': 'FAKD: 10/255 * sum of affinity L1 at the default taps (feature_hooks.py, fakd_loss.py)',
    'train.lcr_opt': "DCKD authors' label consistency: teacher on inverted/flipped/transposed LQ, mapped back",
    'train.cl_opt': 'DCR (Eq. 5), lambda_dcl = 0.1',
    'train.ce_opt': "DMM, lambda_ce = 0.001; CELoss is the authors' code, DistributionMappingLoss Eq. 9 (README)",
    'train.num_neg': 'negatives: the LQ input + num_neg degraded copies, restored by the history model',
    'train.update_decay': 'theta_his = decay * theta_his + (1 - decay) * theta_ema every step[(iter - 1) // 1e5]',
}
# Per-method replacements of COMMENTS.
METHOD_COMMENTS = {
    'DUKD': {'train.scheduler': "DUKD's files: lr / 10 at 100k and 200k iterations",
             'train.logits_opt': 'L_kd: student vs teacher output; also weighs the zoom-in and zoom-out terms',
             'train.pixel_opt': 'L_rec: student vs GT; also the zoomed-out student vs the LQ (dukd_opt.zoom_out)',
             'train.noisy': 'zoom-in label consistency: per tile and op with prob, the student input is '
                            'transformed',
             'train.dukd_opt': 'zoom-in: n_gt_sub LQ-sized GT tiles per sample; zoom_out: the LQ downscaled 1/scale'},
}
STUDENT_COMMENTS = {
    student: {'network_g': f"student: spandrel's {student}, an efficient network (dckd_basicsr/archs/"
                           'spandrel_students_arch.py)'} for student in EFFICIENT
}
TEACHER_COMMENTS = {
    SPANDREL_TEACHER: {'network_t': 'teacher: built by spandrel from its release, no network options (README, '
                                    '"Any architecture spandrel knows")'},
}
HEADER = '# Generated by options/generate_sr_options.py from one table of differences; edit that script, not this file.'


def _set(opt: Dict[str, Any], dotted: str, value: Any) -> None:
    node = opt
    *parents, last = dotted.split('.')
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = copy.deepcopy(value)


def _dataset(name: str, scale: int) -> Dict[str, Any]:
    return dict(name=name, type='PairedImageDataset', dataroot_gt=f'datasets/Benchmark_SR/{name}/HR',
                dataroot_lq=f'datasets/Benchmark_SR/{name}/LR_bicubic/X{scale}', filename_tmpl=f'{{}}x{scale}',
                io_backend=dict(type='disk'))


def _metrics(scale: int) -> Dict[str, Any]:
    return {name: dict(type=f'calculate_{name}', crop_border=scale, test_y_channel=True) for name in ('psnr', 'ssim')}


def _network(backbone: str, role: str, scale: int) -> Dict[str, Any]:
    net = dict(NETWORKS[backbone][role])
    net['upscaling_factor' if 'upscaling_factor' in net else 'upscale'] = scale
    return net


def base_options(backbone: str, scale: int) -> Dict[str, Any]:
    """The blocks every method of one backbone and scale shares: the values of the authors' SwinIR x4 file
    (seed, schedule, data loading, validation sets, logging), with the scale's patch size and test crop border."""
    train_set = dict(name='DIV2K', type='PairedImageDataset', dataroot_gt='datasets/DIV2K/DIV2K_train_HR_sub.lmdb',
                     dataroot_lq=f'datasets/DIV2K/DIV2K_train_LR_bicubic_X{scale}_sub.lmdb', meta_info_file=None,
                     io_backend=dict(type='lmdb'), gt_size=48 * scale, use_hflip=True, use_rot=True,
                     num_worker_per_gpu=8, batch_size_per_gpu=16, dataset_enlarge_ratio=100, prefetch_mode=None)
    val = {'val_freq': 5000, 'save_img': False}
    if 'window_size' in NETWORKS[backbone]['student']:  # the authors' key; inputs are padded to the window
        val['window_size'] = NETWORKS[backbone]['student']['window_size']
    val['metrics'] = _metrics(scale)
    return {
        'name': None, 'model_type': None, 'scale': scale, 'num_gpu': 'auto', 'manual_seed': 10,
        'datasets': {'train': train_set, **{f'val_{i}': _dataset(name, scale)
                                            for i, name in enumerate(VAL_SETS, 1)}},
        'network_g': _network(backbone, 'student', scale),
        'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None},
        'train': {
            'ema_decay': 0.999,
            'optim_g': dict(type='Adam', lr=1e-4, weight_decay=0, betas=[0.9, 0.99]),
            # the authors' files: one milestone at the end, so no decay (the paper's text says /10 every 1e5)
            'scheduler': dict(type='MultiStepLR', milestones=[250000], gamma=0.1),
            'total_iter': 250000, 'warmup_iter': -1,
            'pixel_opt': L1,
        },
        'val': val,
        'logger': {'print_freq': 1000, 'save_checkpoint_freq': 5000, 'use_tb_logger': True,
                   'wandb': {'project': None, 'resume_id': None}},
        'dist_params': {'backend': 'nccl', 'port': 29500},
    }


def method_options(backbone: str, scale: int, method: str, teacher_file: str = '') -> Dict[str, Any]:
    """One row's training options; ``teacher_file`` ``SpandrelTeacher``: from the stronger teacher of
    ``SPANDREL_TEACHER_KEYS`` (name suffix ``_SpandrelTeacher``)."""
    opt = base_options(backbone, scale)
    opt['name'] = f'{backbone}_SRx{scale}_{method}' + (f'_{teacher_file}' if teacher_file else '')
    opt['model_type'] = SCRATCH_MODEL[backbone] if method == 'Scratch' else MODEL_TYPES.get(method, 'KDModel')
    teacher = {'network_t': _network(backbone, 'teacher', scale),
               'path.pretrain_network_t': TEACHER_FILES[backbone].format(s=scale)}
    if teacher_file == SPANDREL_TEACHER:
        teacher = dict(SPANDREL_TEACHER_KEYS)
    for key, value in METHOD_KEYS[method].items():
        _set(opt, key, teacher.get(key, value))
    for key, value in SETTING_KEYS.get((method, backbone, scale), {}).items():
        _set(opt, key, value)
    # keep the option file's reading order: networks before path, train blocks in the order of Eq. 10
    order = ['name', 'model_type', 'scale', 'num_gpu', 'manual_seed', 'datasets', 'network_g', 'network_t',
             'network_his', 'network_vqgan', 'path', 'train', 'val', 'logger', 'dist_params']
    return {key: opt[key] for key in order if key in opt}


def test_options(backbone: str, scale: int, method: str) -> Dict[str, Any]:
    """Evaluate the row's EMA student on the SR benchmarks (PSNR/SSIM on Y, border = scale)."""
    return {
        'name': f'test_{backbone}_SRx{scale}_{method}', 'model_type': 'KDModel', 'scale': scale, 'num_gpu': 'auto',
        'manual_seed': 0,
        'datasets': {f'test_{i}': _dataset(name, scale) for i, name in enumerate(TEST_SETS, 1)},
        'network_g': _network(backbone, 'student', scale),
        'path': {'pretrain_network_g': f'experiments/{backbone}_SRx{scale}_{method}/models/net_g_latest.pth',
                 'param_key_g': 'params_ema', 'strict_load_g': True},
        'val': {'save_img': True, 'suffix': None, 'metrics': _metrics(scale)},
    }


class _Dumper(yaml.SafeDumper):
    """Block mappings, ``[a, b]`` lists of scalars, ``~`` for None (BasicSR's style)."""


def _represent_list(dumper: yaml.SafeDumper, data: list) -> yaml.Node:
    flow = all(not isinstance(item, (dict, list)) for item in data)
    return dumper.represent_sequence('tag:yaml.org,2002:seq', data, flow_style=flow)


_Dumper.add_representer(list, _represent_list)
_Dumper.add_representer(type(None), lambda dumper, _: dumper.represent_scalar('tag:yaml.org,2002:null', '~'))


def render(opt: Dict[str, Any], comment: List[str], notes: Dict[str, str] = COMMENTS) -> str:
    """YAML text: the comment, then top-level blocks separated by blank lines, ``notes`` above their keys."""
    body = yaml.dump(opt, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=118)
    lines, section = [], ''
    for line in body.splitlines():
        key = line.strip().split(':')[0]
        if not line.startswith(' '):
            section = key
            if lines and key in ('datasets', 'network_g', 'path', 'train', 'val', 'logger'):
                lines.append('')
            note = notes.get(key)
        else:
            note = notes.get(f'{section}.{key}') if line.startswith('  ') and line[2] != ' ' else None
        if note:
            lines.append(line[:len(line) - len(line.lstrip())] + f'# {note}')
        lines.append(line)
    return '\n'.join(comment + lines) + '\n'


def rows() -> List[Tuple[str, int, str, str]]:
    """(backbone, scale, method, teacher_file) of every generated row: Table 2's, then the efficient students'."""
    table2 = [(b, s, m, '') for b in BACKBONES for s in SCALES for m in METHODS]
    efficient = [(b, s, m, '') for b in EFFICIENT for s in EFFICIENT_SCALES for m in EFFICIENT_METHODS]
    stronger = [(b, s, 'DCKDstar', SPANDREL_TEACHER) for b in EFFICIENT for s in EFFICIENT_SCALES]
    return table2 + efficient + stronger


def all_files() -> List[Tuple[str, str]]:
    """(path relative to options/, text) of every generated file."""
    files = []
    for backbone, scale, method, teacher_file in rows():
        opt = method_options(backbone, scale, method, teacher_file)
        stem = opt['name']
        description = DESCRIPTIONS[method]
        if teacher_file == SPANDREL_TEACHER:
            description += ('\n# Teacher: a stronger release that spandrel detects and builds (HAT-L x4, '
                            'ImageNet-pretrained); any x4 file spandrel\n# detects can replace it.')
        train_comment = [HEADER, f'# {backbone} x{scale}, {description}',
                         f'#   python -m dckd_basicsr.train -opt options/train/{backbone}/train_{stem}.yml']
        files.append((osp.join('train', backbone, f'train_{stem}.yml'),
                      render(opt, train_comment, dict(COMMENTS, **METHOD_COMMENTS.get(method, {}),
                                                      **STUDENT_COMMENTS.get(backbone, {}),
                                                      **TEACHER_COMMENTS.get(teacher_file, {})))))
        test_comment = [HEADER, f'# Evaluate the EMA student of {stem} on the SR benchmarks.',
                        f'#   python -m dckd_basicsr.test -opt options/test/{backbone}/test_{stem}.yml']
        files.append((osp.join('test', backbone, f'test_{stem}.yml'),
                      render(test_options(backbone, scale, stem[len(f'{backbone}_SRx{scale}_'):]), test_comment)))
    return files


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--check', action='store_true', help='compare with the files on disk, write nothing')
    args = parser.parse_args(argv)
    stale = []
    for relative, text in all_files():
        path = osp.join(ROOT, relative)
        current = open(path).read() if osp.isfile(path) else None
        if current == text:
            continue
        stale.append(relative)
        if not args.check:
            import os
            os.makedirs(osp.dirname(path), exist_ok=True)
            with open(path, 'w') as f:
                f.write(text)
    verb = 'differ from the generator' if args.check else 'written'
    print(f'{len(stale)} file(s) {verb}' + (': ' + ', '.join(stale) if stale else ''))
    return 1 if args.check and stale else 0


if __name__ == '__main__':
    sys.exit(main())
