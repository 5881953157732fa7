"""Checks of a parsed option file that run before BasicSR builds anything; each failure names the option key.

:func:`check_options` runs them all, in the order a user would fix them; the patched ``parse_options`` calls it
(:mod:`dckd_basicsr.integration.run_options`).
"""
import inspect
import os
from os import path as osp
from typing import Any, Dict, Iterable, List, Optional

from dckd_basicsr.errors import OptionError
from dckd_basicsr.integration.preflight import check_files
from dckd_basicsr.integration.registry_lookup import check_registered


def check_option_types(opt: Dict[str, Any]) -> None:
    """Check every ``type`` an option file names against BasicSR's registries, before anything is built.

    Raises :class:`UnknownTypeError` naming the option key, so a typo is reported in one line instead of after the
    datasets are loaded, deep inside ``build_model``.
    """
    from basicsr.utils.registry import ARCH_REGISTRY, DATASET_REGISTRY, LOSS_REGISTRY, METRIC_REGISTRY, MODEL_REGISTRY

    if 'model_type' in opt:
        check_registered(MODEL_REGISTRY, opt['model_type'], 'model_type')
    for key, value in opt.items():
        if key.startswith('network_') and isinstance(value, dict) and 'type' in value:
            check_registered(ARCH_REGISTRY, value['type'], f'{key}.type')
    for phase, dataset_opt in (opt.get('datasets') or {}).items():
        if isinstance(dataset_opt, dict) and 'type' in dataset_opt:
            check_registered(DATASET_REGISTRY, dataset_opt['type'], f'datasets.{phase}.type')
    for key, value in (opt.get('train') or {}).items():
        if key.endswith('_opt') and isinstance(value, dict) and 'type' in value:
            check_registered(LOSS_REGISTRY, value['type'], f'train.{key}.type')
    for name, metric_opt in ((opt.get('val') or {}).get('metrics') or {}).items():
        if isinstance(metric_opt, dict) and 'type' in metric_opt:
            check_registered(METRIC_REGISTRY, metric_opt['type'], f'val.metrics.{name}.type')


def accepted_keys(cls: type) -> Optional[List[str]]:
    """Keyword arguments ``cls(**options)`` accepts, or None when its constructor takes any ``**kwargs``.

    A constructor that passes ``**kwargs`` on to its parent's (e.g. ``NAFNetLocal``) accepts its own names and the
    parent's; one that ends at ``nn.Module`` with ``**kwargs`` still open (e.g. BasicSR's ``SwinIR``) accepts
    anything, so it cannot be checked here.
    """
    import torch
    names: List[str] = []
    for klass in cls.__mro__:
        if klass in (torch.nn.Module, object):
            return None
        if '__init__' not in vars(klass):
            continue
        parameters = list(inspect.signature(klass.__init__).parameters.values())[1:]
        names += [p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        if not any(p.kind == p.VAR_KEYWORD for p in parameters):
            return names
    return None


def check_option_keys(opt: Dict[str, Any]) -> None:
    """Every key of a ``network_*`` or ``train.*_opt`` block must be an argument of its ``type``, so a misspelt key
    (``weigths``) or one the type does not have (``reduction`` in ``cl_opt``) is an error naming the key and the
    accepted ones, not silently dropped. Types whose constructor takes any ``**kwargs`` are not checked."""
    from basicsr.utils.registry import ARCH_REGISTRY, LOSS_REGISTRY, MODEL_REGISTRY

    from dckd_basicsr.distill.loss_terms import model_read_keys

    blocks = [(ARCH_REGISTRY, key, value) for key, value in opt.items() if key.startswith('network_')]
    blocks += [(LOSS_REGISTRY, f'train.{key}', value) for key, value in (opt.get('train') or {}).items()
               if key.endswith('_opt')]
    model = MODEL_REGISTRY.get(opt['model_type']) if opt.get('model_type') in MODEL_REGISTRY else None
    model_keys = model_read_keys(getattr(model, 'LOSS_TERMS', ()))  # e.g. FAKD's layer names, read by the model
    for registry, option_key, block in blocks:
        if not isinstance(block, dict) or block.get('type') not in registry:
            continue
        accepted = accepted_keys(registry.get(block['type']))
        unknown = sorted(set(block) - {'type', *model_keys.get(option_key, ())} - set(accepted or ()))
        if accepted is not None and unknown:
            raise OptionError(f"{option_key}.{unknown[0]}: {block['type']} has no option {unknown[0]!r}; it accepts "
                              f"{', '.join(accepted)}.")


def check_device_options(opt: Dict[str, Any]) -> None:
    """Refuse GPU-only settings on a machine without CUDA, with the fix in the message."""
    import torch
    if torch.cuda.is_available():
        return
    if isinstance(opt.get('num_gpu'), int) and opt['num_gpu'] > 0:
        raise OptionError(f"num_gpu: {opt['num_gpu']} but this machine has no CUDA GPU; "
                          'set num_gpu: 0 (CPU) or num_gpu: auto.')
    for phase, dataset_opt in (opt.get('datasets') or {}).items():
        if isinstance(dataset_opt, dict) and dataset_opt.get('prefetch_mode') == 'cuda':
            raise OptionError(f'datasets.{phase}.prefetch_mode: cuda needs a CUDA GPU; remove it or use cpu.')


def _image_count(root: str, backend: str) -> int:
    """Images BasicSR's paired dataset would list in ``root``: the files of a folder (not recursive, as
    ``paired_paths_from_folder``), or the keys in an LMDB's ``meta_info.txt``."""
    if backend == 'lmdb':
        with open(osp.join(root, 'meta_info.txt')) as f:
            return sum(1 for line in f if line.strip())
    return sum(1 for entry in os.scandir(root) if entry.is_file())


def check_paired_folders(opt: Dict[str, Any]) -> None:
    """``PairedImageDataset`` needs one LQ image per GT image; BasicSR would stop with a bare assertion, or with
    a ``KeyError`` deep in a DataLoader worker for an LMDB."""
    for phase, dataset_opt in (opt.get('datasets') or {}).items():
        if not isinstance(dataset_opt, dict) or dataset_opt.get('type') != 'PairedImageDataset' or \
                dataset_opt.get('meta_info_file'):
            continue
        gt, lq = dataset_opt.get('dataroot_gt'), dataset_opt.get('dataroot_lq')
        if not (isinstance(gt, str) and isinstance(lq, str) and osp.isdir(gt) and osp.isdir(lq)):
            continue
        backend = (dataset_opt.get('io_backend') or {}).get('type', 'disk')
        gt_count, lq_count = _image_count(gt, backend), _image_count(lq, backend)
        if gt_count != lq_count:
            raise OptionError(f'datasets.{phase}.dataroot_lq: {lq} has {lq_count} images but datasets.{phase}.'
                              f'dataroot_gt ({gt}) has {gt_count}; PairedImageDataset needs one LQ image per GT '
                              'image.')


def encoder_size_multiple(opt: Dict[str, Any]) -> int:
    """Side multiple the VQGAN encoder needs (``2 ** (len(ch_mult) - 1)``), or 1 when no encoder loss is on."""
    train_opt = opt.get('train') or {}
    vqgan = opt.get('network_vqgan')
    if not isinstance(vqgan, dict) or not (train_opt.get('cl_opt') or train_opt.get('ce_opt')):
        return 1
    from dckd_basicsr.archs.vqgan_arch import input_size_multiple
    return input_size_multiple(vqgan.get('ddconfig'))


def check_patch_sizes(opt: Dict[str, Any]) -> None:
    """Training patches: ``gt_size`` (and progressive ``gt_sizes``) divisible by ``scale``, so the LQ patch is
    ``gt_size / scale`` exactly, and by the VQGAN encoder's stride when an encoder loss is on (student outputs are
    ``gt_size`` wide and are not padded before the encoder)."""
    scale = opt.get('scale') or 1
    multiple = encoder_size_multiple(opt)
    for phase, dataset_opt in (opt.get('datasets') or {}).items():
        if not isinstance(dataset_opt, dict):
            continue
        sizes = [('gt_size', dataset_opt.get('gt_size'))]
        sizes += [('gt_sizes', size) for size in (dataset_opt.get('gt_sizes') or [])]
        for key, size in sizes:
            if not isinstance(size, int):
                continue
            if size % scale:
                raise OptionError(f'datasets.{phase}.{key}: {size} is not divisible by scale ({scale}); the LQ '
                                  f'patch would be {size // scale} pixels, not {size / scale:g}. Use a multiple of '
                                  f'{scale}.')
            if size % multiple:
                raise OptionError(f'datasets.{phase}.{key}: {size} is not a multiple of {multiple}, which the VQGAN '
                                  'encoder of cl_opt / ce_opt needs (2 ** (len(network_vqgan.ddconfig.ch_mult) - 1)); '
                                  f'use e.g. {size // multiple * multiple or multiple}.')


def check_options(opt: Dict[str, Any], stand_ins: Iterable[str] = (), note: str = '') -> None:
    """All checks, in the order a user would fix them. Every missing file or folder is reported at once
    (:func:`dckd_basicsr.integration.preflight.check_files`, which ``stand_ins`` and ``note`` are passed to)."""
    check_option_types(opt)
    check_option_keys(opt)
    check_device_options(opt)
    from dckd_basicsr.training.checkpoint_files import save_format
    save_format(opt)
    check_files(opt, stand_ins, note)
    check_paired_folders(opt)
    check_patch_sizes(opt)
    if isinstance(opt.get('train'), dict):
        from dckd_basicsr.training.nonfinite import nonfinite_limit
        nonfinite_limit(opt['train'])
