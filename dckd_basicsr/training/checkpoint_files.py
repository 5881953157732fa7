"""Checkpoint files: every network and training state a run writes, and the networks it reads back.

* :func:`save_atomically`: every checkpoint file is written to a temporary name and renamed, retried like BasicSR;
  a file that still cannot be written stops the run, or with ``logger.on_save_failure: continue`` is left out
  (:func:`on_save_failure`). :func:`save_network` / :func:`save_training_state` (``BaseModel``'s, installed by
  :mod:`dckd_basicsr.integration.patches`) write through it. ``logger.save_format: safetensors`` (default ``pth``)
  writes the networks as ``models/net_*_<iter>.safetensors`` (:func:`write_safetensors`);
* :func:`load_network` (``BaseModel``'s, for ``path.pretrain_network_*`` and resume) reads both formats;
* :func:`saved_network` and :func:`training_state_path`: the names resume looks for.

Importing this module imports torch and basicsr, so it must not be imported before
:mod:`dckd_basicsr.integration.patches` has aliased ``torchvision.transforms.functional_tensor`` (``import
dckd_basicsr`` does that first).
"""
import logging
import os
import time
from collections import OrderedDict
from os import path as osp
from typing import Any, Callable, Dict, Optional

import torch
from basicsr.utils import get_root_logger
from basicsr.utils.dist_util import master_only

from dckd_basicsr.errors import CheckpointWriteError, OptionError

# logger.save_format -> file extension of the saved networks (training states are always torch .state files)
SAVE_FORMATS = {'pth': '.pth', 'safetensors': '.safetensors'}
# logger.on_save_failure -> what a run does with a checkpoint file that cannot be written after the retries
SAVE_FAILURE_POLICIES = ('stop', 'continue')


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


def on_save_failure(opt: Dict[str, Any]) -> str:
    """``logger.on_save_failure``: ``stop`` (default) or ``continue`` (BasicSR's behaviour)."""
    value = (opt.get('logger') or {}).get('on_save_failure') or 'stop'
    if value not in SAVE_FAILURE_POLICIES:
        raise OptionError(f'logger.on_save_failure: {value!r}; use stop (default) or continue.')
    return value


def save_atomically(obj: Any, path: str, kind: str, opt: Dict[str, Any],
                    write: Optional[Callable[[Any, Any], None]] = None) -> bool:
    """Write a checkpoint file: :func:`atomic_save`, retried 3 times a second apart as BasicSR's saves do.

    ``kind`` names the file in the messages (``'network'``, ``'training state'``). Every checkpoint file of a run is
    written through this function. Returns True once written. When the last try fails too, under
    ``logger.on_save_failure: stop`` (default) a :class:`~dckd_basicsr.errors.CheckpointWriteError` names the file,
    the OS error and the last complete checkpoint; under ``continue`` the failure is logged and False returned.
    """
    policy = on_save_failure(opt)
    for remaining in (2, 1, 0):
        try:
            if write is None:
                atomic_save(obj, path)
            else:
                atomic_save(obj, path, write)
            return True
        except OSError as error:
            last_error = error
            log_warning(f'Saving {kind} {path} failed: {error}; {remaining} retries left.')
            if remaining:
                time.sleep(1)
    if policy == 'continue':
        log_warning(f'Could not save {path}; training continues without it (logger.on_save_failure: continue).')
        return False
    raise CheckpointWriteError(save_failure_message(opt, kind, path, last_error))


def save_failure_message(opt: Dict[str, Any], kind: str, path: str, error: OSError) -> str:
    """What could not be written, why, and what ``--auto_resume`` will resume from."""
    from dckd_basicsr.training.resume import latest_training_state
    latest = latest_training_state((opt.get('path') or {}).get('training_states') or '')
    if latest is None:
        resume = 'There is no complete checkpoint yet: --auto_resume would start the run again from iteration 0.'
    else:
        resume = (f'The last complete checkpoint is {latest} (iteration {osp.basename(latest)[:-len(".state")]}): '
                  'free space and rerun the same command with --auto_resume to continue from it.')
    return (f'could not write the {kind} file {path} after 3 tries: {error}. The run stops '
            f'(logger.on_save_failure: stop). {resume} To train on without the checkpoints that cannot be written, '
            'set logger.on_save_failure: continue.')


def log_warning(message: str) -> None:
    """A warning on BasicSR's logger that a full disk under its log file does not turn into ``--- Logging error
    ---`` tracebacks: the console still shows it."""
    raise_exceptions, logging.raiseExceptions = logging.raiseExceptions, False
    try:
        get_root_logger().warning(message)
    finally:
        logging.raiseExceptions = raise_exceptions


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
    ``logger.save_format: safetensors`` as ``<net_label>_<iter>.safetensors`` (:func:`write_safetensors`). A network
    left out under ``logger.on_save_failure: continue`` leaves out that iteration's training state too
    (:func:`write_training_state`)."""
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
        saved = save_atomically(save_dict, osp.join(self.opt['path']['models'], f'{net_label}_{label}.safetensors'),
                                'network', self.opt, write_safetensors)
    else:
        saved = save_atomically(save_dict, osp.join(self.opt['path']['models'], f'{net_label}_{label}.pth'),
                                'network', self.opt)
    if not saved:
        self._incomplete_checkpoint = current_iter  # its training state is left out: resume never picks it


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


def write_training_state(model: Any, state: Dict[str, Any], current_iter: int) -> None:
    """Write ``training_states/<iter>.state``, unless a network of that checkpoint could not be written (under
    ``logger.on_save_failure: continue``): ``--auto_resume`` then keeps using the last complete checkpoint."""
    if getattr(model, '_incomplete_checkpoint', None) == current_iter:
        log_warning(f'Training state {training_state_path(model.opt, current_iter)} left out: a network of this '
                    'checkpoint could not be written.')
        return
    save_atomically(state, training_state_path(model.opt, current_iter), 'training state', model.opt)


@master_only
def save_training_state(self, epoch, current_iter):
    """``BaseModel.save_training_state``: the same file, written with :func:`write_training_state` (rank 0 only)."""
    if current_iter == -1:
        return
    write_training_state(self, training_state(self, epoch, current_iter), current_iter)
