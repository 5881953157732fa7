"""Checks of a parsed option file that run before BasicSR builds anything; each failure names the option key."""
from os import path as osp
from typing import Any, Dict

from dckd_basicsr.errors import OptionError, UnknownTypeError


def registered_plugin_names(registry: Any) -> list:
    """Names in a BasicSR registry whose objects come from this plugin."""
    return sorted(name for name, obj in registry if getattr(obj, '__module__', '').startswith('dckd_basicsr'))


def check_option_types(opt: Dict[str, Any]) -> None:
    """Check every ``type`` an option file names against BasicSR's registries, before anything is built.

    Raises :class:`UnknownTypeError` naming the option key, so a typo is reported in one line instead of after the
    datasets are loaded, deep inside ``build_model``.
    """
    from basicsr.utils.registry import ARCH_REGISTRY, DATASET_REGISTRY, LOSS_REGISTRY, METRIC_REGISTRY, MODEL_REGISTRY

    def check(registry, name, where):
        if name not in registry and f'{name}_basicsr' not in registry:
            raise UnknownTypeError(registry._name, name, registry.keys(), registered_plugin_names(registry), where)

    if 'model_type' in opt:
        check(MODEL_REGISTRY, opt['model_type'], 'model_type')
    for key, value in opt.items():
        if key.startswith('network_') and isinstance(value, dict) and 'type' in value:
            check(ARCH_REGISTRY, value['type'], f'{key}.type')
    for phase, dataset_opt in (opt.get('datasets') or {}).items():
        if isinstance(dataset_opt, dict) and 'type' in dataset_opt:
            check(DATASET_REGISTRY, dataset_opt['type'], f'datasets.{phase}.type')
    for key, value in (opt.get('train') or {}).items():
        if key.endswith('_opt') and isinstance(value, dict) and 'type' in value:
            check(LOSS_REGISTRY, value['type'], f'train.{key}.type')
    for name, metric_opt in ((opt.get('val') or {}).get('metrics') or {}).items():
        if isinstance(metric_opt, dict) and 'type' in metric_opt:
            check(METRIC_REGISTRY, metric_opt['type'], f'val.metrics.{name}.type')


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


def check_dataset_paths(opt: Dict[str, Any]) -> None:
    """Every ``dataroot_*`` folder must exist, and an LMDB folder must hold BasicSR's ``meta_info.txt``."""
    for phase, dataset_opt in (opt.get('datasets') or {}).items():
        if not isinstance(dataset_opt, dict):
            continue
        backend = (dataset_opt.get('io_backend') or {}).get('type', 'disk')
        for key in ('dataroot_gt', 'dataroot_lq'):
            root = dataset_opt.get(key)
            if not isinstance(root, str):
                continue
            if not osp.exists(root):
                raise OptionError(f'datasets.{phase}.{key}: {root} does not exist (relative paths are relative to '
                                  'the working directory).')
            if backend == 'lmdb' and not osp.isfile(osp.join(root, 'meta_info.txt')):
                raise OptionError(f'datasets.{phase}.{key}: {root} has no meta_info.txt, so it is not a BasicSR LMDB '
                                  '(build it with datasets_prep/, or use io_backend: disk for an image folder).')


def check_options(opt: Dict[str, Any]) -> None:
    """All checks, in the order a user would fix them."""
    check_option_types(opt)
    check_device_options(opt)
    check_dataset_paths(opt)
