"""Knowledge-distillation base model on BasicSR's ``SRModel``: a frozen teacher, output KD and DUKD's LCR term.

Options (besides ``SRModel``'s):

* ``network_t`` + ``path.pretrain_network_t`` (required for training), ``path.param_key_t`` (default ``params``),
  ``path.strict_load_t`` (default true), ``path.teacher_format`` (a converter of :mod:`dckd_basicsr.checkpoints`,
  default ``auto``), ``path.trusted_t`` (allow full unpickling of that file, default false);
* ``train.pixel_opt`` (L_rec, student vs GT), ``train.logits_opt`` (L_kd, student vs teacher output),
  ``train.lcr_opt`` + ``train.noisy.prob`` (DUKD's label-consistency term): each term is on when its option is given;
* ``val.pad_multiple`` (the authors' ``val.window_size`` is read as the same): validation/test inputs are padded
  (reflect) to a multiple of it, default ``network_g.window_size`` (SwinIR) or 1, and the output is cropped back.

DUKD's zoom-in/zoom-out data upcycling is a second optimizer step per iteration:
:class:`~dckd_basicsr.models.dukd_model.DUKDModel`; the former one-step keys ``train.zoom_in_opt``,
``zoom_out_opt`` and ``zoom_out_lq_opt`` are an error naming it.

The teacher (and every other frozen network of subclasses) is in eval mode, has ``requires_grad`` off, is never
wrapped in DDP, never in the optimizer, never in the EMA, never saved. The training step runs on the model's own
random stream (saved in the training state with the Python/NumPy states), so a resumed run draws what an
uninterrupted one would.
"""
import contextlib
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

from dckd_basicsr.invertible_ops import apply_invertible_ops, random_invertible_ops, undo_invertible_ops
from dckd_basicsr.compat import atomic_save
from dckd_basicsr.errors import NonFiniteLossError, OptionError

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
        # val.window_size is the key of the authors' files (BasicSR's SRModel ignores it)
        window = val_opt.get('window_size', net_g_opt.get('window_size', 1))
        self.pad_multiple = int(val_opt.get('pad_multiple', window))

    # ------------------------------------------------------------------ set-up
    def init_training_settings(self):
        self.net_g.train()
        rank = get_dist_info()[0]
        self.step_rng = _rng_for(self.device, int(self.opt.get('manual_seed') or 0) + 100003 * rank)
        self.fast_options  # noqa: B018  (checks train.fast before anything is built)
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
        return ['pixel_opt', 'logits_opt', 'kd_opt', 'lcr_opt', 'fakd_opt']

    def setup_losses(self) -> None:
        train_opt = self.opt['train']

        def build(key):
            return build_loss(train_opt[key]).to(self.device) if train_opt.get(key) else None

        if train_opt.get('logits_opt') and train_opt.get('kd_opt'):
            raise OptionError('train.kd_opt and train.logits_opt are the same term (output KD, kd_opt is an alias); '
                              'give only one of them.')
        self.cri_pix = build('pixel_opt')
        self.cri_kd = build('kd_opt' if train_opt.get('kd_opt') else 'logits_opt')
        self.cri_lcr = build('lcr_opt')
        noisy = train_opt.get('noisy', self.opt.get('noisy')) or {}
        self.lcr_prob = float(noisy.get('prob', 0.5))
        if not 0 <= self.lcr_prob <= 1:
            raise OptionError(f'train.noisy.prob: {self.lcr_prob}; a probability must lie in [0, 1].')
        for key in ('zoom_in_opt', 'zoom_out_opt', 'zoom_out_lq_opt'):
            if train_opt.get(key):
                raise OptionError(f'train.{key}: no longer supported; DUKD\'s zoom-in/zoom-out upcycling is a second '
                                  'optimizer step of its own: use model_type: DUKDModel with train.dukd_opt '
                                  '(n_gt_sub, zoom_out), see dckd_basicsr/models/dukd_model.py.')
        self.setup_fakd()

    def loss_names(self) -> List[str]:
        """The configured terms, as logged."""
        terms = {'l_pix': self.cri_pix, 'l_kd': self.cri_kd, 'l_lcr': self.cri_lcr, 'l_fakd': self.cri_fakd}
        return [name for name, loss in terms.items() if loss is not None]

    def setup_fakd(self) -> None:
        """FAKD (``train.fakd_opt``): hooks on ``student_layers`` of the student and ``teacher_layers`` of the teacher,
        paired in list order; both default to the FAKD authors' taps (groups 3 and 7 of RCAN's 10 and the body's end;
        SwinIR by the same relative depths, see :mod:`dckd_basicsr.feature_hooks`). A dry run checks the map sizes."""
        from dckd_basicsr.feature_hooks import FeatureRecorder, default_feature_layers
        fakd_opt = dict(self.opt['train'].get('fakd_opt') or {})
        self.cri_fakd = None
        if not fakd_opt:
            return
        student_layers = fakd_opt.pop('student_layers', None) or default_feature_layers(self.opt['network_g'])
        teacher_layers = fakd_opt.pop('teacher_layers', None) or default_feature_layers(self.opt['network_t'])
        if student_layers is None:
            raise OptionError(f"train.fakd_opt.student_layers: missing, and there is no default for network_g.type "
                              f"{self.opt['network_g'].get('type')!r} (defaults exist for RCAN and SwinIR); list the "
                              'student modules whose outputs to distil, e.g. [body.2, body.6, upsample:input].')
        if teacher_layers is None:
            raise OptionError(f"train.fakd_opt.teacher_layers: missing, and there is no default for network_t.type "
                              f"{self.opt['network_t'].get('type')!r}; list one teacher module per student layer.")
        if len(teacher_layers) != len(student_layers):
            raise OptionError(f'train.fakd_opt: {len(student_layers)} student_layers but {len(teacher_layers)} '
                              'teacher_layers; give one teacher layer per student layer.')
        self.cri_fakd = build_loss(fakd_opt).to(self.device)
        self.fakd_student = FeatureRecorder(self.get_bare_model(self.net_g), student_layers,
                                            'train.fakd_opt.student_layers', only_in_training=True)
        self.fakd_teacher = FeatureRecorder(self.net_t, teacher_layers, 'train.fakd_opt.teacher_layers')
        self.check_fakd_shapes()

    def check_fakd_shapes(self) -> None:
        """Run student and teacher once on a small input: every paired map must have the same spatial size."""
        size = 16
        x = torch.zeros(1, _in_channels(self.opt['network_g']), size, size, device=self.device)
        net_g = self.get_bare_model(self.net_g)
        was_training = net_g.training
        net_g.eval()  # no batch-norm statistics updated by the dry run; record it although in eval mode
        self.fakd_student.only_in_training = False
        with torch.no_grad():
            net_g(x)
            self.net_t(x)
        self.fakd_student.only_in_training = True
        net_g.train(was_training)
        pairs = zip(self.fakd_student.layers, self.fakd_student.first(), self.fakd_teacher.layers,
                    self.fakd_teacher.first())
        self.fakd_student.clear()
        self.fakd_teacher.clear()
        for s_name, s_map, t_name, t_map in pairs:
            if s_map.dim() != 4 or t_map.dim() != 4 or s_map.shape[-2:] != t_map.shape[-2:]:
                raise OptionError(f'train.fakd_opt: student layer {s_name} gives {tuple(s_map.shape)} and teacher '
                                  f'layer {t_name} {tuple(t_map.shape)} for a {size}x{size} input; paired maps need '
                                  'the same spatial size (channels may differ).')

    def fakd_term(self) -> Tensor:
        """FAKD on the maps recorded in this step's student pass and the teacher's pass on the LQ input (the first
        ``B`` samples of the teacher's batched pass; run here when no other term needed the teacher)."""
        batch = self.lq.size(0)
        recorded = all(self.fakd_teacher.records[name] for name in self.fakd_teacher.layers)
        if not (recorded and self.needs_teacher_output()):  # run_teacher puts the LQ input first when it needs T(x)
            self.fakd_teacher.clear()
            self.teacher(self.lq)
        teacher = [t[:batch].float() for t in self.fakd_teacher.first()]
        loss = self.cri_fakd(self.fakd_student.first(), teacher)
        self.fakd_student.clear()
        self.fakd_teacher.clear()
        return loss

    # ------------------------------------------------------------------ training step
    def needs_teacher_output(self) -> bool:
        return self.cri_kd is not None

    def teacher(self, x: Tensor) -> Tensor:
        """The frozen teacher on ``x``, in the ``train.fast`` precision and memory format; fp32 output."""
        self.prepare_frozen(self.net_t)
        return self.run_frozen(self.net_t, x)

    # ------------------------------------------------------------------ frozen networks: train.fast
    FAST_KEYS = ('autocast', 'channels_last')
    AUTOCAST_DTYPES = {'bf16': torch.bfloat16, 'fp16': torch.float16}

    @property
    def fast_options(self) -> Dict[str, Any]:
        """``train.fast`` checked once: ``autocast`` (``bf16``, ``fp16`` or off) and ``channels_last`` apply to the
        frozen networks only (teacher here; history model and encoder in DCKD); the student stays in fp32."""
        if getattr(self, '_fast_options', None) is None:
            fast = (self.opt.get('train') or {}).get('fast') or {}
            if not isinstance(fast, dict):
                raise OptionError(f'train.fast: {fast!r}; give a mapping, e.g. '
                                  '{autocast: bf16, channels_last: true}.')
            unknown = sorted(set(fast) - set(self.FAST_KEYS))
            if unknown:
                raise OptionError(f'train.fast.{unknown[0]}: unknown key; {type(self).__name__} knows '
                                  f'{", ".join(self.FAST_KEYS)}.')
            autocast = fast.get('autocast') or None
            if autocast is not None and autocast not in self.AUTOCAST_DTYPES:
                raise OptionError(f'train.fast.autocast: {autocast!r}; use bf16, fp16 or false.')
            self._fast_options = dict(fast, autocast=autocast, channels_last=bool(fast.get('channels_last', False)))
        return self._fast_options

    def frozen_autocast(self) -> contextlib.AbstractContextManager:
        """Autocast context for the frozen networks (a no-op unless ``train.fast.autocast`` is set)."""
        name = self.fast_options['autocast']
        if name is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.AUTOCAST_DTYPES[name])

    def frozen_input(self, x: Tensor) -> Tensor:
        """``x`` in the frozen networks' memory format (channels_last with ``train.fast.channels_last``)."""
        return x.contiguous(memory_format=torch.channels_last) if self.fast_options['channels_last'] else x

    def prepare_frozen(self, net: nn.Module) -> nn.Module:
        """Convert a frozen network to channels_last once, when ``train.fast.channels_last`` asks for it."""
        if self.fast_options['channels_last'] and not getattr(net, '_dckd_channels_last', False):
            net.to(memory_format=torch.channels_last)
            net._dckd_channels_last = True
        return net

    def run_frozen(self, net: nn.Module, x: Tensor) -> Tensor:
        """A frozen network's forward without gradient, under :meth:`frozen_autocast`; fp32, contiguous output."""
        with torch.no_grad(), self.frozen_autocast():
            out = net(self.frozen_input(x))
        return out.float().contiguous()

    def compute_losses(self, current_iter: int) -> 'OrderedDict[str, Tensor]':
        """The terms of Eq. 10 this model has (KD base: rec, kd, lcr), each already weighted."""
        losses = OrderedDict()
        if self.cri_pix is not None:
            losses['l_pix'] = self.cri_pix(self.output, self.gt)
        if self.cri_kd is not None:
            losses['l_kd'] = self.cri_kd(self.output, self.output_t)
        if self.cri_lcr is not None:
            losses['l_lcr'] = self.cri_lcr(self.output, self.lcr_target)
        if self.cri_fakd is not None:
            losses['l_fakd'] = self.fakd_term()
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
        """One step on the sum of the terms of Eq. 10. A step where a term is NaN or infinite updates nothing (no
        optimizer step, no EMA, no history update); see :meth:`skip_nonfinite_step`.

        The backward pass runs before the finiteness check, whose result the host must wait for: on a GPU the
        backward kernels are then already queued while it waits, and under DDP every rank runs the same gradient
        all-reduce whatever its losses (the gradients of a skipped step are dropped by the next ``zero_grad``)."""
        with self.model_random_stream():
            self.optimizer_g.zero_grad(set_to_none=True)
            self.output = self.net_g(self.lq)
            self.run_teacher()
            losses = self.compute_losses(current_iter)
            sum(losses.values()).backward()
            nonfinite = self.nonfinite_terms(losses)
            if not nonfinite:
                self.optimizer_g.step()
        self.log_dict = self.reduce_loss_dict(losses)
        if nonfinite:
            self.skip_nonfinite_step(current_iter, nonfinite)
            return
        self.nonfinite_steps = 0
        if self.ema_decay > 0:
            self.model_ema(decay=self.ema_decay)
        self.after_step(current_iter)

    # ------------------------------------------------------------------ non-finite losses
    def nonfinite_terms(self, losses: 'OrderedDict[str, Tensor]') -> List[str]:
        """Names of the terms that are NaN or infinite on any rank.

        Under DDP the flags are all-reduced, so every rank skips the same optimizer steps and the replicas stay
        identical.
        """
        flags = torch.stack([~torch.isfinite(value.detach()).all() for value in losses.values()]).float()
        if self.opt.get('dist'):
            torch.distributed.all_reduce(flags)
        return [name for name, flag in zip(losses, flags.tolist()) if flag > 0]

    def max_nonfinite_steps(self) -> int:
        """``train.max_nonfinite_steps`` (default 10): consecutive skipped steps before the run stops; 0 never stops."""
        from dckd_basicsr.option_checks import nonfinite_limit
        return nonfinite_limit(self.opt['train'])

    def skip_nonfinite_step(self, current_iter: int, terms: List[str]) -> None:
        """Log the skipped step with the offending terms; raise ``FloatingPointError`` once
        ``train.max_nonfinite_steps`` consecutive steps were skipped."""
        self.nonfinite_steps = getattr(self, 'nonfinite_steps', 0) + 1
        limit = self.max_nonfinite_steps()
        values = ', '.join(f'{name} = {self.log_dict[name]}' for name in terms)
        get_root_logger().warning(
            f'iter {current_iter}: non-finite loss ({values}); skipped the optimizer, EMA and history updates '
            f'({self.nonfinite_steps} in a row{f", the run stops at {limit}" if limit else ""}).')
        if limit and self.nonfinite_steps >= limit:
            raise NonFiniteLossError(
                f'iter {current_iter}: {self.nonfinite_steps} consecutive steps had a non-finite loss '
                f'(last: {values}), the limit set by train.max_nonfinite_steps ({limit}); stopping. The checkpoints '
                'saved so far hold no NaN/Inf from these steps. Check the teacher and encoder checkpoints for NaN/Inf '
                'and the learning rate, or raise train.max_nonfinite_steps (0 never stops).')

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
        # a kill never leaves a half-written .state that resume would pick
        atomic_save(state, osp.join(self.opt['path']['training_states'], f'{current_iter}.state'))

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
