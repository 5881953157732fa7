"""The training state of the plugin's models: what a checkpoint holds besides BasicSR's, and how a resume restores it.

A checkpoint of :class:`TrainingState` holds, besides BasicSR's student and EMA (``net_g_<iter>``), optimizer and
scheduler states, the networks of :meth:`TrainingState.extra_networks_to_save` (DCKD's history model,
``models/net_his_<iter>``), every rank's random state (:class:`~dckd_basicsr.training.random_streams.RandomStreams`)
and, under ``train.fast.amp: fp16``, the GradScaler's state (``scaler``); a resume restores all of them. The teacher
and the VQGAN encoder are never saved: they are re-read from their own files.
"""
from os import path as osp
from typing import Any, Dict, Optional

import torch
from basicsr.utils import get_root_logger
from basicsr.utils.dist_util import master_only

from dckd_basicsr.errors import OptionError
from dckd_basicsr.training.checkpoint_files import (SAVE_FORMATS, save_format, saved_network, training_state,
                                                    write_training_state)


class TrainingState:
    """Mixin for the plugin's models: what their checkpoints hold and how a resume restores it (see the module
    docstring)."""

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
        write_training_state(self, state, current_iter)

    def gradient_scaler(self) -> Optional[torch.amp.GradScaler]:
        """The GradScaler of ``train.fast.amp: fp16``, or None."""
        precision = getattr(self, 'precision', None)
        return precision.scaler if precision is not None and precision.scaler.is_enabled() else None

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
