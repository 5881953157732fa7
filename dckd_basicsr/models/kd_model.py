"""Knowledge-distillation base model on BasicSR's ``SRModel``: a frozen teacher, output KD and DUKD's LCR term.

Options (besides ``SRModel``'s):

* ``network_t`` + ``path.pretrain_network_t`` (required for training), ``path.param_key_t`` (default ``params``),
  ``path.strict_load_t`` (default true), ``path.teacher_format`` (a converter of :mod:`dckd_basicsr.checkpoints`,
  default ``auto``), ``path.trusted_t`` (allow full unpickling of that file, default false);
* ``train.pixel_opt`` (L_rec, student vs GT), ``train.logits_opt`` (L_kd, student vs teacher output),
  ``train.lcr_opt`` + ``train.noisy.prob`` (DUKD's label-consistency term): each term is on when its option is given;
* ``val.pad_multiple``: validation/test inputs are padded (reflect) to a multiple of it, default
  ``network_g.window_size`` (SwinIR) or 1, and the output is cropped back.

The teacher (and every other frozen network of subclasses) is in eval mode, has ``requires_grad`` off, is never
wrapped in DDP, never in the optimizer, never in the EMA, never saved. The training step runs on the model's own
random stream (saved in the training state with the Python/NumPy states), so a resumed run draws what an
uninterrupted one would.
"""
import contextlib
import os
import random
from collections import OrderedDict
from os import path as osp
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch
from basicsr.archs import build_network
from basicsr.losses import build_loss
from basicsr.models.sr_model import SRModel
from basicsr.utils import get_root_logger
from basicsr.utils.dist_util import get_dist_info, master_only
from basicsr.utils.registry import MODEL_REGISTRY
from torch import Tensor, nn
from torch.nn import functional as F

from dckd_basicsr.degradations import apply_invertible_ops, random_invertible_ops, undo_invertible_ops
from dckd_basicsr.errors import OptionError

# Keys under which BasicSR archs name their input channels.
IN_CHANNEL_KEYS = ('num_in_ch', 'in_chans', 'inp_channels', 'img_channel', 'in_nc', 'in_channels')


def freeze(net: nn.Module) -> nn.Module:
    """Eval mode and no gradients: the state of every frozen network (teacher, history model, encoder)."""
    net.eval()
    net.requires_grad_(False)
    return net


def load_pretrained_network(net: nn.Module, opt: Dict[str, Any], suffix: str, format_key: str,
                            default_param_key: Optional[str] = 'params', default_strict: bool = True) -> Dict:
    """Load ``path.pretrain_network_<suffix>`` into ``net`` with :func:`dckd_basicsr.checkpoints.load_pretrained`.

    Companion options: ``path.param_key_<suffix>``, ``path.strict_load_<suffix>``, ``path.<format_key>`` (or
    ``path.format_network_<suffix>``) and ``path.trusted_<suffix>``.
    """
    from dckd_basicsr.checkpoints import load_pretrained
    path_opt = opt['path']
    option = f'path.pretrain_network_{suffix}'
    fmt = path_opt.get(format_key, path_opt.get(f'format_network_{suffix}', 'auto'))
    return load_pretrained(net, path_opt[f'pretrain_network_{suffix}'], fmt=fmt,
                           param_key=path_opt.get(f'param_key_{suffix}', default_param_key),
                           strict=path_opt.get(f'strict_load_{suffix}', default_strict),
                           trusted=bool(path_opt.get(f'trusted_{suffix}', False)), option=option)


def _in_channels(net_opt: Dict[str, Any]) -> int:
    for key in IN_CHANNEL_KEYS:
        if key in net_opt:
            return int(net_opt[key])
    return 3


def _rng_for(device: torch.device, seed: int) -> Dict[str, Optional[Tensor]]:
    """A fresh random stream for the training step: CPU generator state and, on CUDA, the device's."""
    state = {'torch': torch.Generator().manual_seed(seed).get_state(), 'cuda': None}
    if device.type == 'cuda':
        state['cuda'] = torch.Generator(device=device).manual_seed(seed).get_state()
    return state


def _global_host_rng() -> Dict[str, Any]:
    """Python and NumPy global states (data augmentation in the main process), as weights-only-loadable values."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {'python': random.getstate(),
            'numpy': (name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached))}


def _set_global_host_rng(state: Dict[str, Any]) -> None:
    version, internal, gauss = state['python']
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state['numpy']
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))


@MODEL_REGISTRY.register()
class KDModel(SRModel):
    """Output ("logits") distillation: ``L = L_rec(S, GT) + L_kd(S, T) [+ L_lcr]`` with a frozen teacher T."""

    def __init__(self, opt: Dict[str, Any]):
        super().__init__(opt)
        net_g_opt = opt['network_g']
        val_opt = opt.get('val') or {}
        self.pad_multiple = int(val_opt.get('pad_multiple', net_g_opt.get('window_size', 1)))

    # ------------------------------------------------------------------ set-up
    def init_training_settings(self):
        self.net_g.train()
        rank = get_dist_info()[0]
        self.step_rng = _rng_for(self.device, int(self.opt.get('manual_seed') or 0) + 100003 * rank)
        self.setup_teacher()
        self.setup_ema()
        self.setup_losses()
        if not self.loss_names():
            raise OptionError(f'{type(self).__name__}: no loss term is configured; give at least one of '
                              f'{", ".join(f"train.{key}" for key in self.loss_option_keys())}.')
        self.setup_optimizers()
        self.setup_schedulers()
        self.log_dict = OrderedDict()

    def setup_teacher(self) -> None:
        """Build, load and freeze the teacher; check its output size against the student's."""
        if not self.opt.get('network_t'):
            raise OptionError(f'network_t: missing; {type(self).__name__} needs the teacher network options.')
        if not self.opt['path'].get('pretrain_network_t'):
            raise OptionError('path.pretrain_network_t: missing; give the teacher checkpoint (a random teacher '
                              'would distil noise).')
        from dckd_basicsr.checkpoints import check_output_size
        self.net_t = freeze(build_network(self.opt['network_t']).to(self.device))
        load_pretrained_network(self.net_t, self.opt, 't', 'teacher_format')
        size = 16  # small enough to be cheap for a full-size teacher, a multiple of SwinIR's window and Restormer's 8
        lq_shape = (1, _in_channels(self.opt['network_g']), size, size)
        out_shape = check_output_size(self.net_t, self.net_g, lq_shape, option='network_t',
                                      path=self.opt['path']['pretrain_network_t'])
        scale = self.opt.get('scale')
        if scale is not None and tuple(out_shape[-2:]) != (size * scale, size * scale):
            raise OptionError(f'scale: {scale}, but network_g and network_t turn a {size}x{size} input into '
                              f'{out_shape[-2]}x{out_shape[-1]}; set their upscale to the scale of the data.')

    def setup_ema(self) -> None:
        """BasicSR's EMA copy of the student (``train.ema_decay``), frozen."""
        self.ema_decay = self.opt['train'].get('ema_decay', 0)
        if self.ema_decay > 0:
            get_root_logger().info(f'Use Exponential Moving Average with decay: {self.ema_decay}')
            self.net_g_ema = build_network(self.opt['network_g']).to(self.device)
            load_path = self.opt['path'].get('pretrain_network_g')
            if load_path is not None:
                self.load_network(self.net_g_ema, load_path, self.opt['path'].get('strict_load_g', True), 'params_ema')
            else:
                self.model_ema(0)
            freeze(self.net_g_ema)

    def loss_option_keys(self) -> List[str]:
        return ['pixel_opt', 'logits_opt', 'lcr_opt']

    def setup_losses(self) -> None:
        train_opt = self.opt['train']

        def build(key):
            return build_loss(train_opt[key]).to(self.device) if train_opt.get(key) else None

        self.cri_pix = build('pixel_opt')
        self.cri_kd = build('logits_opt')
        self.cri_lcr = build('lcr_opt')
        noisy = train_opt.get('noisy', self.opt.get('noisy')) or {}
        self.lcr_prob = float(noisy.get('prob', 0.5))
        if not 0 <= self.lcr_prob <= 1:
            raise OptionError(f'train.noisy.prob: {self.lcr_prob}; a probability must lie in [0, 1].')

    def loss_names(self) -> List[str]:
        """The configured terms, as logged."""
        terms = {'l_pix': self.cri_pix, 'l_kd': self.cri_kd, 'l_lcr': self.cri_lcr}
        return [name for name, loss in terms.items() if loss is not None]

    # ------------------------------------------------------------------ training step
    def needs_teacher_output(self) -> bool:
        return self.cri_kd is not None

    def teacher(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            return self.net_t(x)

    def compute_losses(self, current_iter: int) -> 'OrderedDict[str, Tensor]':
        """The terms of Eq. 10 this model has (KD base: rec, kd, lcr), each already weighted."""
        losses = OrderedDict()
        if self.cri_pix is not None:
            losses['l_pix'] = self.cri_pix(self.output, self.gt)
        if self.cri_kd is not None:
            losses['l_kd'] = self.cri_kd(self.output, self.output_t)
        if self.cri_lcr is not None:
            losses['l_lcr'] = self.cri_lcr(self.output, self.lcr_target)
        return losses

    def run_teacher(self) -> None:
        """One batched teacher pass: ``output_t`` on the LQ input and, with ``lcr_opt``, DUKD's label-consistency
        target (the teacher on a randomly inverted/flipped/transposed input, mapped back by the inverse ops)."""
        inputs = [self.lq] if self.needs_teacher_output() else []
        if self.cri_lcr is not None:
            masks = random_invertible_ops(self.lq, self.lcr_prob)
            inputs.append(apply_invertible_ops(self.lq, masks))
        if not inputs:
            return
        outputs = self.teacher(torch.cat(inputs)).split(self.lq.size(0))
        if self.needs_teacher_output():
            self.output_t = outputs[0]
        if self.cri_lcr is not None:
            self.lcr_target = undo_invertible_ops(outputs[-1], masks)

    def optimize_parameters(self, current_iter: int) -> None:
        with self.model_random_stream():
            self.optimizer_g.zero_grad(set_to_none=True)
            self.output = self.net_g(self.lq)
            self.run_teacher()
            losses = self.compute_losses(current_iter)
            l_total = sum(losses.values())
            l_total.backward()
            self.optimizer_g.step()
        self.log_dict = self.reduce_loss_dict(losses)
        if self.ema_decay > 0:
            self.model_ema(decay=self.ema_decay)
        self.after_step(current_iter)

    def after_step(self, current_iter: int) -> None:
        """Hook run after the optimizer and EMA updates (the history model update in DCKD)."""

    # ------------------------------------------------------------------ random state
    def _cuda_devices(self) -> List[int]:
        if self.device.type != 'cuda':
            return []
        return [self.device.index if self.device.index is not None else torch.cuda.current_device()]

    @contextlib.contextmanager
    def model_random_stream(self) -> Iterator[None]:
        """Run the block on the model's own torch stream; the global one (data loading's) is left untouched."""
        devices = self._cuda_devices()
        with torch.random.fork_rng(devices=devices):
            torch.set_rng_state(self.step_rng['torch'])
            if self.step_rng['cuda'] is not None:
                torch.cuda.set_rng_state(self.step_rng['cuda'], devices[0])
            try:
                yield
            finally:
                self.step_rng['torch'] = torch.get_rng_state()
                if self.step_rng['cuda'] is not None:
                    self.step_rng['cuda'] = torch.cuda.get_rng_state(devices[0])

    def random_state(self) -> Dict[str, Any]:
        """This rank's random state: the model's step stream and the Python/NumPy global states."""
        return {'step': {key: (None if value is None else value.clone()) for key, value in self.step_rng.items()},
                **_global_host_rng()}

    def set_random_state(self, state: Dict[str, Any]) -> None:
        self.step_rng = {key: (None if value is None else value.clone()) for key, value in state['step'].items()}
        if self.device.type == 'cuda' and self.step_rng.get('cuda') is None:
            self.step_rng['cuda'] = _rng_for(self.device, int(self.opt.get('manual_seed') or 0))['cuda']
        _set_global_host_rng(state)

    def _all_ranks_random_state(self) -> List[Dict[str, Any]]:
        state = self.random_state()
        if not self.opt.get('dist'):
            return [state]
        gathered = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(gathered, state)
        return gathered

    # ------------------------------------------------------------------ saving and resuming
    def extra_networks_to_save(self) -> List[Tuple[str, nn.Module]]:
        """(label, network) pairs saved next to ``net_g`` as ``<label>_<iter>.pth`` (``params``)."""
        return []

    def save(self, epoch: int, current_iter: int) -> None:
        random_states = self._all_ranks_random_state() if hasattr(self, 'step_rng') else None
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
        """BasicSR's training state plus ``rng``: every rank's random state (see :meth:`random_state`)."""
        if current_iter == -1:
            return
        state = {'epoch': epoch, 'iter': current_iter, 'optimizers': [o.state_dict() for o in self.optimizers],
                 'schedulers': [s.state_dict() for s in self.schedulers]}
        if getattr(self, '_random_states_to_save', None) is not None:
            state['rng'] = self._random_states_to_save
        save_path = osp.join(self.opt['path']['training_states'], f'{current_iter}.state')
        temporary = f'{save_path}.tmp'
        torch.save(state, temporary)
        os.replace(temporary, save_path)  # a kill never leaves a half-written .state that resume would pick

    def resume_training(self, resume_state: Dict[str, Any]) -> None:
        super().resume_training(resume_state)
        self.load_extra_networks(resume_state['iter'])
        states = resume_state.get('rng')
        if states:
            rank = get_dist_info()[0]
            self.set_random_state(states[rank % len(states)])
        else:
            get_root_logger().warning('The training state has no random state (written by another model?); the '
                                      'resumed run draws other random numbers than an uninterrupted one would.')

    def load_extra_networks(self, resume_iter: int) -> None:
        """Restore :meth:`extra_networks_to_save` from ``models/<label>_<resume_iter>.pth``."""
        for label, net in self.extra_networks_to_save():
            path = osp.join(self.opt['path']['models'], f'{label}_{resume_iter}.pth')
            if not osp.isfile(path):
                raise OptionError(f"resuming from {self.opt['path'].get('resume_state')} needs {path}, which is "
                                  'missing.')
            self.load_network(net, path, strict=True, param_key='params')

    # ------------------------------------------------------------------ validation
    def validation(self, dataloader, current_iter, tb_logger, save_img=False):
        """BasicSR's validation, leaving every global random state as it was (so it cannot shift training data)."""
        host = _global_host_rng()
        with torch.random.fork_rng(devices=self._cuda_devices()):
            super().validation(dataloader, current_iter, tb_logger, save_img)
        _set_global_host_rng(host)

    def test(self) -> None:
        """Restore ``self.lq`` with the student (EMA if present), padded to a multiple of ``val.pad_multiple``."""
        net = self.net_g_ema if hasattr(self, 'net_g_ema') else self.net_g
        was_training = net.training
        net.eval()
        height, width = self.lq.shape[-2:]
        pad_h, pad_w = (-height) % self.pad_multiple, (-width) % self.pad_multiple
        lq = self.lq
        if pad_h or pad_w:
            mode = 'reflect' if pad_h < height and pad_w < width else 'replicate'
            lq = F.pad(lq, (0, pad_w, 0, pad_h), mode=mode)
        with torch.no_grad():
            output = net(lq)
        scale = output.size(-2) // lq.size(-2)
        self.output = output[..., :height * scale, :width * scale]
        net.train(was_training)
