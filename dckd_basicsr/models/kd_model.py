"""KDModel: a frozen teacher and output ("logits") distillation on BasicSR's ``SRModel``.

``L = L_rec(S(x), y) + L_kd(S(x), T(x)) [+ L_lcr] [+ L_fakd]`` (Eq. 10 without DCKD's terms), one line per term in
:meth:`KDModel.compute_losses`, each term on when its option block is given (:data:`KDModel.LOSS_TERMS`).

Options (besides ``SRModel``'s):

* ``network_t`` + ``path.pretrain_network_t`` (required for training), ``path.param_key_t`` (default ``params``),
  ``path.strict_load_t`` (default true), ``path.teacher_format`` (a converter of :mod:`dckd_basicsr.checkpoints`,
  default ``auto``), ``path.trusted_t`` (allow full unpickling of that file, default false);
  ``network_t: {type: SpandrelTeacher}`` builds the teacher from its file with spandrel, no architecture options
  (:mod:`dckd_basicsr.archs.spandrel_arch`);
* the terms of :data:`KDModel.LOSS_TERMS`: ``train.pixel_opt``, ``train.logits_opt`` (alias ``kd_opt``),
  ``train.lcr_opt`` with ``train.noisy.prob`` (default 0.5), ``train.fakd_opt``
  (:mod:`dckd_basicsr.distill.feature_taps`);
* ``train.fast`` (:mod:`dckd_basicsr.training.fast`: ``amp``, ``autocast``, ``channels_last``, ``compile``,
  ``compile_strict``), ``train.max_nonfinite_steps`` (:mod:`dckd_basicsr.training.nonfinite`);
* the former one-step DUKD keys ``train.zoom_in_opt``, ``zoom_out_opt`` and ``zoom_out_lq_opt`` are an error naming
  :class:`~dckd_basicsr.models.dukd_model.DUKDModel`, whose upcycling is a second optimizer step;
* ``val.pad_multiple`` (the authors' ``val.window_size`` is read as the same): validation/test inputs are padded to a
  multiple of it, default ``network_g.window_size`` (SwinIR) or 1, and the output is cropped back
  (:mod:`dckd_basicsr.archs.padding`).
"""
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Tuple

import torch
from basicsr.archs import build_network
from basicsr.models.sr_model import SRModel
from basicsr.utils import get_root_logger
from basicsr.utils.registry import MODEL_REGISTRY
from torch import Tensor, nn

from dckd_basicsr.archs.padding import padded_forward
from dckd_basicsr.archs.spandrel_arch import SpandrelTeacher
from dckd_basicsr.archs.spandrel_students_arch import spandrel_arch
from dckd_basicsr.distill.feature_taps import FeaturePairs
from dckd_basicsr.distill.invertible_ops import apply_invertible_ops, random_invertible_ops, undo_invertible_ops
from dckd_basicsr.distill.loss_terms import LossTerm, build_loss_terms
from dckd_basicsr.distill.teacher import check_output_size, check_spandrel_teacher, load_pretrained_network
from dckd_basicsr.errors import OptionError
from dckd_basicsr.options import (check_unit_interval, network_in_channels, train_option,
                                  validation_pad_multiple)
from dckd_basicsr.training import fast
from dckd_basicsr.training.checkpoint_files import save_format
from dckd_basicsr.training.compilation import Compiler
from dckd_basicsr.training.frozen import FrozenNetworks, freeze
from dckd_basicsr.training.model_state import TrainingState
from dckd_basicsr.training.nonfinite import NonFiniteSteps, nonfinite_terms
from dckd_basicsr.training.precision import MixedPrecision
from dckd_basicsr.training.random_streams import RandomStreams

# An optimizer step's loss terms and the names of those that were NaN/Inf (the step was then skipped).
Step = Tuple['OrderedDict[str, Tensor]', List[str]]

# Side of the dry-run input that checks the teacher: cheap for a full-size teacher, a multiple of SwinIR's window
# and of Restormer's 8.
CHECK_SIZE = 16


@MODEL_REGISTRY.register()
class KDModel(TrainingState, RandomStreams, SRModel):
    """Output distillation from a frozen teacher T: ``L = L_rec(S, GT) + L_kd(S, T) [+ L_lcr] [+ L_fakd]``."""

    LOSS_TERMS = (
        LossTerm('l_pix', 'pixel_opt', 'cri_pix', 'L_rec: student vs GT'),
        LossTerm('l_kd', 'logits_opt', 'cri_kd', 'L_kd: student vs teacher output', aliases=('kd_opt', )),
        LossTerm('l_lcr', 'lcr_opt', 'cri_lcr', "label consistency: student vs the teacher on transformed inputs"),
        LossTerm('l_fakd', 'fakd_opt', 'cri_fakd', 'FAKD: spatial affinities of paired feature maps',
                 model_keys=('student_layers', 'teacher_layers')),
    )
    FAST_KEYS = fast.KEYS
    # What a skipped iteration leaves out, for the log (DUKD: two optimizer steps).
    SKIPPED_UPDATES = 'the optimizer, EMA and history updates'

    def __init__(self, opt: Dict[str, Any]):
        super().__init__(opt)
        pads_itself = spandrel_arch(opt['network_g'].get('type')) is not None  # validated as spandrel runs it
        self.pad_multiple = validation_pad_multiple(opt, pads_itself=pads_itself)

    # ------------------------------------------------------------------ set-up
    def init_training_settings(self):
        self.net_g.train()
        self.init_random_stream()
        self.fast = fast.FastOptions.parse(self.opt['train'].get('fast'), self.FAST_KEYS, self.device,
                                           type(self).__name__)
        self.precision = MixedPrecision(self.fast.amp, self.fast.autocast, self.device)
        self.frozen = FrozenNetworks(self.precision, self.fast.channels_last)
        self.compiler = Compiler(self.fast.compile, self.fast.compile_strict, self.device)
        self.nonfinite = NonFiniteSteps(self.opt['train'])
        save_format(self.opt)  # a bad logger.save_format fails now, not at the first checkpoint
        self.setup_teacher()
        self.setup_ema()
        self.setup_losses()
        self.setup_optimizers()
        self.setup_schedulers()
        self.compile_networks()
        self.log_dict = OrderedDict()

    def setup_teacher(self) -> None:
        """Build, load and freeze the teacher; check its output against the student's and the data's scale. A
        ``SpandrelTeacher`` is built by spandrel from the file, then checked against ``scale``, ``network_g`` and
        ``train.fast`` (:func:`dckd_basicsr.distill.teacher.check_spandrel_teacher`)."""
        if not self.opt.get('network_t'):
            raise OptionError(f'network_t: missing; {type(self).__name__} needs the teacher network options.')
        if not self.opt['path'].get('pretrain_network_t'):
            raise OptionError('path.pretrain_network_t: missing; give the teacher checkpoint (a random teacher '
                              'would distil noise).')
        self.net_t = build_network(self.opt['network_t']).to(self.device)
        load_pretrained_network(self.net_t, self.opt, 't', 'teacher_format')
        freeze(self.net_t)  # after loading: a SpandrelTeacher's network is built from the file
        option = 'network_t'
        if isinstance(self.net_t, SpandrelTeacher):
            get_root_logger().info(f'Teacher (network_t: SpandrelTeacher): {self.net_t.describe()}')
            check_spandrel_teacher(self.net_t, self.opt)
            option = f'network_t ({self.net_t.describe()})'
        lq_shape = (1, network_in_channels(self.opt['network_g']), CHECK_SIZE, CHECK_SIZE)
        out_shape = check_output_size(self.net_t, self.get_bare_model(self.net_g), lq_shape, option=option,
                                      path=self.opt['path']['pretrain_network_t'])
        scale = self.opt.get('scale')
        if scale is not None and tuple(out_shape[-2:]) != (CHECK_SIZE * scale, CHECK_SIZE * scale):
            raise OptionError(f'scale: {scale}, but network_g and network_t turn a {CHECK_SIZE}x{CHECK_SIZE} input '
                              f'into {out_shape[-2]}x{out_shape[-1]}; set their upscale to the scale of the data.')

    def networks_to_compile(self) -> List[Tuple[str, nn.Module, Optional[Tuple[type, ...]]]]:
        """(option key, network, block types or None) that ``train.fast.compile`` compiles: student and teacher."""
        return [('network_g', self.get_bare_model(self.net_g), None), ('network_t', self.net_t, None)]

    def compile_networks(self) -> None:
        """``train.fast.compile``: every network of :meth:`networks_to_compile`, in place (the EMA is not: it only
        validates)."""
        for option_key, net, blocks in self.networks_to_compile():
            self.compiler.compile(net, option_key, blocks)

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

    def setup_losses(self) -> None:
        """The terms of :data:`LOSS_TERMS` given in ``train``, and what they need (LCR probability, FAKD's taps)."""
        train_opt = self.opt['train']
        for key in ('zoom_in_opt', 'zoom_out_opt', 'zoom_out_lq_opt'):
            if train_opt.get(key):
                raise OptionError(f'train.{key}: no longer supported; DUKD\'s zoom-in/zoom-out upcycling is a second '
                                  'optimizer step of its own: use model_type: DUKDModel with train.dukd_opt '
                                  '(n_gt_sub, zoom_out), see dckd_basicsr/models/dukd_model.py.')
        self.loss_names = build_loss_terms(self, self.LOSS_TERMS)
        self.lcr_prob = check_unit_interval('train.noisy.prob',
                                            float((train_option(self.opt, 'noisy') or {}).get('prob', 0.5)))
        self.fakd_pairs = None
        if self.cri_fakd is not None:
            self.fakd_pairs = FeaturePairs(train_option(self.opt, 'fakd_opt'), self.opt['network_g'],
                                           self.opt['network_t'], self.get_bare_model(self.net_g), self.net_t)

    # ------------------------------------------------------------------ training step
    def needs_teacher_output(self) -> bool:
        """Whether a term needs ``T(x)`` on the LQ batch (``output_t``, or FAKD's teacher maps)."""
        return self.cri_kd is not None or self.cri_fakd is not None

    def teacher(self, x: Tensor) -> Tensor:
        """The frozen teacher on ``x``, in the ``train.fast`` precision and memory format; fp32 output."""
        self.frozen.prepare(self.net_t)
        return self.frozen.run(self.net_t, x)

    def run_teacher(self) -> None:
        """One batched teacher pass: ``output_t`` on the LQ input and, with ``lcr_opt``, the label-consistency
        target: the teacher on the LQ batch randomly inverted/flipped/transposed per sample (probability
        ``noisy.prob`` per op), mapped back by the inverse ops (the DCKD authors' term of DCKD*)."""
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

    def compute_losses(self, current_iter: int) -> 'OrderedDict[str, Tensor]':
        """The terms of Eq. 10 this model has, each already weighted by its ``loss_weight``."""
        losses = OrderedDict()
        if self.cri_pix is not None:
            losses['l_pix'] = self.cri_pix(self.output, self.gt)
        if self.cri_kd is not None:
            losses['l_kd'] = self.cri_kd(self.output, self.output_t)
        if self.cri_lcr is not None:
            losses['l_lcr'] = self.cri_lcr(self.output, self.lcr_target)
        if self.cri_fakd is not None:
            losses['l_fakd'] = self.cri_fakd(*self.fakd_pairs.maps(self.lq.size(0)))
        return losses

    def optimize_parameters(self, current_iter: int) -> None:
        """One iteration: the optimizer steps of :meth:`optimizer_steps` on the model's own random stream, then the
        EMA update and :meth:`after_step`. A step where a term is NaN or infinite updates nothing; when every step of
        the iteration was skipped, neither do the EMA and :meth:`after_step` (:mod:`dckd_basicsr.training.nonfinite`).
        Under DDP the finiteness flags are all-reduced, so every rank skips alike."""
        with self.model_random_stream():
            self.optimizer_g.zero_grad(set_to_none=True)
            steps = self.optimizer_steps(current_iter)
        losses = OrderedDict()
        for step_losses, _ in steps:
            losses.update(step_losses)
        self.log_dict = self.reduce_loss_dict(losses)
        skipped = [names for _, names in steps]
        if all(skipped):
            self.nonfinite.skipped(current_iter, self.nonfinite_values(sum(skipped, [])), self.SKIPPED_UPDATES)
            return
        if any(skipped):  # counts towards train.max_nonfinite_steps like a skipped iteration
            index = next(i for i, names in enumerate(skipped) if names)
            self.nonfinite.skipped(current_iter, self.nonfinite_values(skipped[index]),
                                   f'optimizer step {index + 1} of {len(steps)}, the other step and the EMA update ran')
        else:
            self.nonfinite.reset()
        if self.ema_decay > 0:
            self.model_ema(decay=self.ema_decay)
        self.after_step(current_iter)

    def optimizer_steps(self, current_iter: int) -> List[Step]:
        """The iteration's optimizer steps, each with its terms and the names of its NaN/Inf terms: here one step on
        the sum of the terms of Eq. 10 (DUKD adds a second)."""
        with self.precision.step_autocast():
            self.output = self.net_g(self.lq).float()  # fp32 already, unless train.fast.amp
            self.run_teacher()
            losses = self.compute_losses(current_iter)
        return [(losses, self.backward_and_step(losses))]

    def backward_and_step(self, losses: 'OrderedDict[str, Tensor]') -> List[str]:
        """Backward on the sum of ``losses``, then an optimizer step unless a term is NaN/Inf on any rank; returns
        the names of those terms. Under ``train.fast.amp: fp16`` the loss is scaled and the step goes through the
        GradScaler, which skips it when the fp16 gradients overflowed (``self.precision.overflow``; not a non-finite
        loss, so not counted towards ``train.max_nonfinite_steps``).

        The backward pass runs before the finiteness check, whose result the host must wait for: on a GPU the
        backward kernels are then already queued while it waits, and under DDP every rank runs the same gradient
        all-reduce whatever its losses (the gradients of a skipped step are dropped by the next ``zero_grad``)."""
        self.precision.backward(sum(losses.values()))
        nonfinite = nonfinite_terms(losses, bool(self.opt.get('dist')))
        if not nonfinite:
            self.precision.optimizer_step(self.optimizer_g)
        return nonfinite

    def nonfinite_values(self, names: List[str]) -> str:
        """``'l_kd = inf, ...'`` from the logged values, for the skipped-step messages."""
        return ', '.join(f'{name} = {self.log_dict[name]}' for name in names)

    def after_step(self, current_iter: int) -> None:
        """Hook run after the optimizer and EMA updates (the history model update in DCKD)."""

    # ------------------------------------------------------------------ validation
    def test(self) -> None:
        """Restore ``self.lq`` with the student (EMA if present), padded to a multiple of ``val.pad_multiple``."""
        net = self.net_g_ema if hasattr(self, 'net_g_ema') else self.net_g
        was_training = net.training
        net.eval()
        with torch.no_grad():
            self.output = padded_forward(net, self.lq, self.pad_multiple)
        net.train(was_training)
