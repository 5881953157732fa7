"""Checkpoint files: every network and training state a run writes, and the networks it reads back.

* :func:`save_atomically`: every checkpoint file is written to a temporary name and renamed, retried like BasicSR;
  :func:`save_network` / :func:`save_training_state` (``BaseModel``'s, installed by
  :mod:`dckd_basicsr.integration.patches`) write through it. ``logger.save_format: safetensors`` (default ``pth``)
  writes the networks as ``models/net_*_<iter>.safetensors`` (:func:`write_safetensors`);
* :func:`load_network` (``BaseModel``'s, for ``path.pretrain_network_*`` and resume) reads both formats;
* :func:`saved_network` and :func:`training_state_path`: the names resume looks for.

Importing this module imports torch and basicsr, so it must not be imported before
:mod:`dckd_basicsr.integration.patches` has aliased ``torchvision.transforms.functional_tensor`` (``import
dckd_basicsr`` does that first).
"""
import os
import time
from collections import OrderedDict
from os import path as osp
from typing import Any, Callable, Dict, Optional

import torch
from basicsr.utils import get_root_logger
from basicsr.utils.dist_util import master_only

from dckd_basicsr.errors import OptionError

# logger.save_format -> file extension of the saved networks (training states are always torch .state files)
SAVE_FORMATS = {'pth': '.pth', 'safetensors': '.safetensors'}


def save_format(opt: Dict[str, Any]) -> str:
    """``logger.save_format``: ``pth`` (default) or ``safetensors``."""
    value = (opt.get('logger') or {}).get('save_format') or 'pth'
    if value not in SAVE_FORMATS:
        raise OptionError(f'logger.save_format: {value!r}; use pth (default) or safetensors.')
    return value


def atomic_save(obj: Any, path: str, write: Optional[Callable[[Any, Any], None]] = None) -> None:
    """``torch.save(obj, path)`` (or ``write(obj, file)``) through a temporary file in the same folder, flushed to
    disk and renamed.

    ``os.replace`` is atomic on POSIX and Windows, so ``path`` is either the previous file (or absent) or the complete
    new one; a process killed mid-write leaves only ``<path>.tmp<pid>``, a name resume never reads.
    """
    temporary = f'{path}.tmp{os.getpid()}'
    try:
        with open(temporary, 'wb') as file:
            (write or torch.save)(obj, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        if osp.exists(temporary):
            os.remove(temporary)
        raise


def save_atomically(obj: Any, path: str, kind: str, write: Optional[Callable[[Any, Any], None]] = None) -> None:
    """Write a checkpoint file: :func:`atomic_save`, retried 3 times a second apart as BasicSR's saves do.

    ``kind`` names the file in the log (``'network'``, ``'training state'``). A final failure is logged, not raised:
    training continues, as with BasicSR. Every checkpoint file of a run is written through this function.
    """
    for remaining in (2, 1, 0):
        try:
            if write is None:
                atomic_save(obj, path)
            else:
                atomic_save(obj, path, write)
            return
        except OSError as error:
            get_root_logger().warning(f'Saving {kind} {path} failed: {error}; {remaining} retries left.')
            if remaining:
                time.sleep(1)
    get_root_logger().warning(f'Could not save {path}; training continues without it.')


def write_safetensors(save_dict: Dict[str, Dict[str, torch.Tensor]], file: Any) -> None:
    """A network file as safetensors: every tensor of ``save_dict[param_key]`` under ``<param_key>.<name>``
    (``params.conv_first.weight``, ``params_ema.conv_first.weight``), the param keys listed in the metadata, so
    :func:`dckd_basicsr.checkpoints.safe_load.read_safetensors` gives back the nested dict of the ``.pth`` file."""
    from safetensors.torch import save
    flat = {f'{key}.{name}': tensor.detach().contiguous().clone()  # clone: no shared storages (safetensors refuses)
            for key, state in save_dict.items() for name, tensor in state.items()}
    file.write(save(flat, metadata={'format': 'pt', 'param_keys': ','.join(save_dict)}))


@master_only
def save_network(self, net, net_label, current_iter, param_key='params'):
    """``BaseModel.save_network``: the same file, written with :func:`save_atomically` (rank 0 only); with
    ``logger.save_format: safetensors`` as ``<net_label>_<iter>.safetensors`` (:func:`write_safetensors`)."""
    nets = net if isinstance(net, list) else [net]
    keys = param_key if isinstance(param_key, list) else [param_key]
    if len(nets) != len(keys):
        raise ValueError(f'save_network: {len(nets)} networks but {len(keys)} param keys.')
    save_dict = {}
    for net_, key in zip(nets, keys):
        state = self.get_bare_model(net_).state_dict()
        save_dict[key] = {(name[len('module.'):] if name.startswith('module.') else name): value.cpu()
                          for name, value in state.items()}
    label = 'latest' if current_iter == -1 else current_iter
    if save_format(self.opt) == 'safetensors':
        save_atomically(save_dict, osp.join(self.opt['path']['models'], f'{net_label}_{label}.safetensors'), 'network',
                        write_safetensors)
    else:
        save_atomically(save_dict, osp.join(self.opt['path']['models'], f'{net_label}_{label}.pth'), 'network')


def load_network(original: Callable) -> Callable:
    """``BaseModel.load_network`` reading ``.safetensors`` files too (``original`` reads everything else).

    A ``.safetensors`` file is read with :func:`dckd_basicsr.checkpoints.safe_load.read_safetensors`: this plugin's
    own files (``params.*`` / ``params_ema.*``) become BasicSR's nested dict, a model hub's flat file is the state
    dict itself (``param_key`` is then ignored). As BasicSR does, ``params_ema`` falls back to ``params``, ``module.``
    prefixes are removed and the key differences are logged before ``load_state_dict(strict=strict)``.
    """

    def load(self, net, load_path, strict=True, param_key='params'):
        if not str(load_path).lower().endswith('.safetensors'):
            return original(self, net, load_path, strict, param_key)
        from dckd_basicsr.checkpoints.safe_load import read_safetensors
        net = self.get_bare_model(net)
        load_net = read_safetensors(load_path)
        nested = all(isinstance(value, dict) for value in load_net.values())
        if nested and param_key is not None:
            if param_key not in load_net and 'params' in load_net:
                param_key = 'params'
                get_root_logger().info('Loading: params_ema does not exist, use params.')
            load_net = load_net[param_key]
        get_root_logger().info(f'Loading {net.__class__.__name__} model from {load_path}, with param key: '
                               f'[{param_key if nested else None}].')
        load_net = OrderedDict((name[len('module.'):] if name.startswith('module.') else name, value)
                               for name, value in load_net.items())
        self._print_different_keys_loading(net, load_net, strict)
        net.load_state_dict(load_net, strict=strict)

    load.__doc__ = original.__doc__
    return load


def saved_network(opt: Dict[str, Any], label: str, current_iter: int) -> Optional[str]:
    """``models/<label>_<iter>.pth`` or ``.safetensors`` (the run's ``logger.save_format`` first), or None."""
    first = SAVE_FORMATS[save_format(opt)]
    for extension in [first] + [ext for ext in SAVE_FORMATS.values() if ext != first]:
        path = osp.join(opt['path']['models'], f'{label}_{current_iter}{extension}')
        if osp.isfile(path):
            return path
    return None


def training_state(model: Any, epoch: int, current_iter: int) -> Dict[str, Any]:
    """BasicSR's training state of ``model``: epoch, iteration, optimizer and scheduler states."""
    return {'epoch': epoch, 'iter': current_iter, 'optimizers': [o.state_dict() for o in model.optimizers],
            'schedulers': [s.state_dict() for s in model.schedulers]}


def training_state_path(opt: Dict[str, Any], current_iter: int) -> str:
    """``training_states/<iter>.state``, the only name :func:`latest_training_state` reads."""
    return osp.join(opt['path']['training_states'], f'{current_iter}.state')


@master_only
def save_training_state(self, epoch, current_iter):
    """``BaseModel.save_training_state``: the same file, written with :func:`save_atomically` (rank 0 only)."""
    if current_iter == -1:
        return
    save_atomically(training_state(self, epoch, current_iter), training_state_path(self.opt, current_iter),
                    'training state')
