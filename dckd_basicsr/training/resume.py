"""Saving and resuming a training run: everything a run needs to stop at any moment and continue as if it had not.

BasicSR side (installed into BasicSR 1.4.2 by :mod:`dckd_basicsr.integration.patches`):

* :func:`save_atomically`: every checkpoint file is written to a temporary name and renamed, retried like BasicSR;
  :func:`save_network` / :func:`save_training_state` (``BaseModel``'s) write through it. ``logger.save_format:
  safetensors`` (default ``pth``) writes the networks as ``models/net_*_<iter>.safetensors`` (:func:`save_network`);
  :func:`load_network` (``BaseModel``'s, for ``path.pretrain_network_*`` and resume) reads both formats.
* :func:`latest_training_state` and :func:`load_resume_state`: ``--auto_resume`` in the run's own folder, on any
  device.
* :func:`check_resume`: which ``path.pretrain_network_*`` a resume points at the run's saved networks.
* :func:`number_of_epochs` and :func:`continue_epoch`: the training data of a resumed run continue where the
  checkpoint stood, and every run reaches ``total_iter``.

Importing this module imports torch and basicsr, so it must not be imported before :mod:`dckd_basicsr.integration.patches` has
aliased ``torchvision.transforms.functional_tensor`` (``import dckd_basicsr`` does that first).
"""
import math
import os
import time
from os import path as osp
from collections import OrderedDict
from typing import Any, Callable, Dict, Optional

import torch
from basicsr.data.data_sampler import EnlargedSampler
from basicsr.utils import get_root_logger
from basicsr.utils.dist_util import master_only

from dckd_basicsr.errors import OptionError

# Networks that the plugin's models never train or save; resume must leave their checkpoint paths alone.
FROZEN_NETWORKS = ('network_t', 'network_vqgan', 'network_his')
# logger.save_format -> file extension of the saved networks (training states are always torch .state files)
SAVE_FORMATS = {'pth': '.pth', 'safetensors': '.safetensors'}

# ---------------------------------------------------------------------------------------------------------------------
# Writing checkpoints
# ---------------------------------------------------------------------------------------------------------------------


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


def save_atomically(obj: Any, path: str, what: str, write: Optional[Callable[[Any, Any], None]] = None) -> None:
    """Write a checkpoint file: :func:`atomic_save`, retried 3 times a second apart as BasicSR's saves do.

    ``what`` names the file in the log (``'network'``, ``'training state'``). A final failure is logged, not raised:
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
            get_root_logger().warning(f'Saving {what} {path} failed: {error}; {remaining} retries left.')
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


# ---------------------------------------------------------------------------------------------------------------------
# Finding and loading the training state
# ---------------------------------------------------------------------------------------------------------------------


def latest_training_state(state_dir: str) -> Optional[str]:
    """Path of the ``<iter>.state`` file with the largest iteration in ``state_dir``, or None.

    Only complete files carry that name (see :func:`atomic_save`); temporaries (``<iter>.state.tmp<pid>``) left by a
    kill during a save, and any other name, are ignored.
    """
    if not osp.isdir(state_dir):
        return None
    iters = [int(name[:-len('.state')]) for name in os.listdir(state_dir)
             if name.endswith('.state') and name[:-len('.state')].isdigit()]
    return osp.join(state_dir, f'{max(iters)}.state') if iters else None


def load_resume_state(opt: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The training state to resume from (``path.resume_state``, or with ``--auto_resume`` the run's latest), or None.

    Loaded onto the run's device (CPU when ``num_gpu: 0`` or without CUDA) with ``weights_only=True``. Also applies
    :func:`check_resume` and records where the data loader stood in ``opt['resume_position']`` for
    :func:`continue_epoch`.
    """
    state_path = None
    if opt['auto_resume']:
        state_path = latest_training_state(opt['path']['training_states'])
        if state_path is not None:
            opt['path']['resume_state'] = state_path
    elif opt['path'].get('resume_state'):
        state_path = opt['path']['resume_state']
        if not osp.isfile(state_path):
            raise OptionError(f'path.resume_state: {state_path} does not exist.')
    if state_path is None:
        return None
    use_cuda = opt['num_gpu'] != 0 and torch.cuda.is_available()
    map_location = torch.device('cuda', torch.cuda.current_device()) if use_cuda else torch.device('cpu')
    resume_state = torch.load(state_path, map_location=map_location, weights_only=True)
    check_resume(opt, resume_state['iter'])
    opt['resume_position'] = {'epoch': resume_state['epoch'], 'iter': resume_state['iter']}
    return resume_state


def check_resume(opt: Dict[str, Any], resume_iter: int) -> None:
    """Point ``path.pretrain_network_*`` of every network the run saved at ``resume_iter`` to that file.

    Never for :data:`FROZEN_NETWORKS` (the teacher and the encoder are re-read from their own files) or
    ``path.ignore_resume_networks``; ``param_key_*: params_ema`` becomes ``params`` only for the rewritten networks.
    The file is ``net_*_<iter>.pth`` or ``.safetensors`` (:func:`saved_network`). A missing ``net_g`` file is an
    error.
    """
    if not opt['path'].get('resume_state'):
        return
    ignored = set(FROZEN_NETWORKS) | set(opt['path'].get('ignore_resume_networks') or [])
    for network in [key for key in opt if key.startswith('network_') and key not in ignored]:
        basename = network[len('network_'):]
        saved = saved_network(opt, f'net_{basename}', resume_iter)
        if saved is None:
            if network == 'network_g':
                missing = osp.join(opt['path']['models'], f'net_g_{resume_iter}{SAVE_FORMATS[save_format(opt)]}')
                raise OptionError(f"resuming from {opt['path']['resume_state']} needs {missing}, which is missing.")
            continue
        opt['path'][f'pretrain_{network}'] = saved
        print(f'Resume: set path.pretrain_{network} to {saved}', flush=True)
        if opt['path'].get(f'param_key_{basename}') == 'params_ema':
            opt['path'][f'param_key_{basename}'] = 'params'


# ---------------------------------------------------------------------------------------------------------------------
# Where the training data continue
# ---------------------------------------------------------------------------------------------------------------------


class ResumedSampler(EnlargedSampler):
    """An :class:`EnlargedSampler` that leaves out the first ``skip`` indices of epoch ``skip_epoch``, once."""

    def __iter__(self):
        indices = list(super().__iter__())
        if self.epoch == self.skip_epoch:
            indices, self.skip_epoch = indices[self.skip:], None
        return iter(indices)


def number_of_epochs(train_loader: Any, total_iters: int) -> int:
    """Epochs that reach ``total_iters``, counted with the loader's real length (it drops incomplete batches)."""
    per_epoch = len(train_loader)
    if per_epoch == 0:
        raise OptionError('datasets.train: fewer training samples than one batch (batch_size_per_gpu x number '
                          'of processes); lower the batch size or raise dataset_enlarge_ratio.')
    return math.ceil(total_iters / per_epoch)


def continue_epoch(opt: Dict[str, Any], train_loader: Any, sampler: Any) -> None:
    """Make a resumed run's sampler skip, once, the indices its epoch had already handed out at the checkpoint.

    A checkpoint after ``b`` batches of epoch ``e`` records ``iter`` and ``e`` (``opt['resume_position']``, from
    :func:`load_resume_state`); ``b = iter - e * iterations_per_epoch``, also when ``b`` is the whole epoch. When the
    position does not fit the loader (batch size, processes or data changed), the log says so and the epoch restarts.
    """
    position = opt.get('resume_position')
    if not position or not isinstance(sampler, EnlargedSampler):
        return
    per_epoch = len(train_loader)
    done = position['iter'] - position['epoch'] * per_epoch
    if 0 < done <= per_epoch:
        sampler.__class__ = ResumedSampler
        sampler.skip_epoch, sampler.skip = position['epoch'], done * train_loader.batch_size
    else:
        get_root_logger().warning(
            f"Resume: iteration {position['iter']} does not fall in epoch {position['epoch']} of "
            f'{per_epoch} iterations (batch size, processes or data changed?); the epoch restarts from its '
            'first batch.')


# ---------------------------------------------------------------------------------------------------------------------
# Model side: the training state of KDModel and its subclasses (moved here from kd_model.py)
# ---------------------------------------------------------------------------------------------------------------------


class TrainingState:
    """Mixin for the plugin's models: a checkpoint holds, besides BasicSR's student/EMA, optimizer and scheduler
    states, the networks of :meth:`extra_networks_to_save` (DCKD's history model, ``models/<label>_<iter>.pth``) and
    every rank's random state (:class:`~dckd_basicsr.training.random_streams.RandomStreams`) and, under ``train.fast.amp:
    fp16``, the GradScaler's state (``scaler``); a resume restores all of them.
    The teacher and the VQGAN encoder are never saved: they are re-read from their own files."""

    def extra_networks_to_save(self) -> list:
        return []

    def save(self, epoch: int, current_iter: int) -> None:
        random_states = self.all_ranks_random_state() if hasattr(self, 'step_rng') else None  # every rank takes part
        if hasattr(self, 'net_g_ema'):
            self.save_network([self.net_g, self.net_g_ema], 'net_g', current_iter, param_key=['params', 'params_ema'])
        else:
            self.save_network(self.net_g, 'net_g', current_iter)
        for label, net in self.extra_networks_to_save():
            self.save_network(net, label, current_iter)
        self._random_states_to_save = random_states
        self.save_training_state(epoch, current_iter)

    @master_only
    def save_training_state(self, epoch: int, current_iter: int) -> None:
        """BasicSR's training state plus ``rng``: every rank's random state."""
        if current_iter == -1:
            return
        state = training_state(self, epoch, current_iter)
        if getattr(self, '_random_states_to_save', None) is not None:
            state['rng'] = self._random_states_to_save
        scaler = self.gradient_scaler()
        if scaler is not None:
            state['scaler'] = scaler.state_dict()
        save_atomically(state, training_state_path(self.opt, current_iter), 'training state')

    def gradient_scaler(self) -> Optional['torch.amp.GradScaler']:
        """The GradScaler of ``train.fast.amp: fp16``, or None."""
        fast = getattr(self, 'fast', None)
        return fast.scaler if fast is not None and fast.scaler.is_enabled() else None

    def resume_training(self, resume_state: Dict[str, Any]) -> None:
        super().resume_training(resume_state)
        self.load_extra_networks(resume_state['iter'])
        scaler = self.gradient_scaler()
        if scaler is not None:
            if resume_state.get('scaler'):
                scaler.load_state_dict(resume_state['scaler'])
            else:
                get_root_logger().warning('The training state has no GradScaler state (saved without train.fast.amp: '
                                          'fp16?); the loss scale starts again from its initial value.')
        states = resume_state.get('rng')
        if states:
            from basicsr.utils.dist_util import get_dist_info
            self.set_random_state(states[get_dist_info()[0] % len(states)])
        else:
            get_root_logger().warning('The training state has no random state (written by another model?); the '
                                      'resumed run draws other random numbers than an uninterrupted one would.')

    def load_extra_networks(self, resume_iter: int) -> None:
        """Restore :meth:`extra_networks_to_save` from ``models/<label>_<resume_iter>.pth`` (or ``.safetensors``)."""
        for label, net in self.extra_networks_to_save():
            path = saved_network(self.opt, label, resume_iter)
            if path is None:
                extension = SAVE_FORMATS[save_format(self.opt)]
                path = osp.join(self.opt['path']['models'], f'{label}_{resume_iter}{extension}')
                raise OptionError(f"resuming from {self.opt['path'].get('resume_state')} needs {path}, which is "
                                  'missing.')
            self.load_network(net, path, strict=True, param_key='params')
