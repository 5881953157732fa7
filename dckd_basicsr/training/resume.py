"""Resuming a run: which training state it resumes from, on which device, and which networks it re-reads.

* :func:`latest_training_state` and :func:`load_resume_state`: ``--auto_resume`` in the run's own folder, on any
  device (installed as BasicSR's ``load_resume_state`` by :mod:`dckd_basicsr.integration.patches`);
* :func:`check_resume`: which ``path.pretrain_network_*`` a resume points at the run's saved networks (BasicSR's
  ``check_resume``).
"""
import os
from os import path as osp
from typing import Any, Dict, List, Optional

import torch

from dckd_basicsr.errors import OptionError
from dckd_basicsr.training.checkpoint_files import SAVE_FORMATS, save_format, saved_network

# Networks that the plugin's models never train or save; resume must leave their checkpoint paths alone.
FROZEN_NETWORKS = ('network_t', 'network_vqgan', 'network_his')


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
    :func:`~dckd_basicsr.training.data_position.continue_epoch`.
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


def networks_saved_by_run(opt: Dict[str, Any]) -> List[str]:
    """The ``network_*`` keys whose weights a resume re-reads from the run's own ``models`` folder: every network but
    :data:`FROZEN_NETWORKS` (the teacher and the encoder are re-read from their own files) and
    ``path.ignore_resume_networks``."""
    ignored = set(FROZEN_NETWORKS) | set((opt.get('path') or {}).get('ignore_resume_networks') or [])
    return [key for key in opt if key.startswith('network_') and key not in ignored]


def check_resume(opt: Dict[str, Any], resume_iter: int) -> None:
    """Point ``path.pretrain_network_*`` of every network the run saved at ``resume_iter`` to that file.

    Only for :func:`networks_saved_by_run`; ``param_key_*: params_ema`` becomes ``params`` only for the rewritten
    networks.
    The file is ``net_*_<iter>.pth`` or ``.safetensors`` (:func:`saved_network`). A missing ``net_g`` file is an
    error.
    """
    if not opt['path'].get('resume_state'):
        return
    for network in networks_saved_by_run(opt):
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
