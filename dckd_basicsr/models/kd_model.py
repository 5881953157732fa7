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
  ``train.lcr_opt`` with ``train.noisy.prob`` (default 0.5), ``train.fakd_opt`` (:mod:`dckd_basicsr.distill.feature_taps`);
* ``train.fast`` (:mod:`dckd_basicsr.training.fast`: ``amp``, ``autocast``, ``channels_last``, ``compile``,
  ``compile_strict``), ``train.max_nonfinite_steps`` (:mod:`dckd_basicsr.training.nonfinite`);
* ``val.pad_multiple`` (the authors' ``val.window_size`` is read as the same): validation/test inputs are padded to a
  multiple of it, default ``network_g.window_size`` (SwinIR) or 1, and the output is cropped back
  (:mod:`dckd_basicsr.archs.padding`).

Where the rest lives: frozen networks and ``train.fast`` in :mod:`dckd_basicsr.training.fast`, the model's random stream in
:mod:`dckd_basicsr.training.random_streams`, saving and resuming in :mod:`dckd_basicsr.training.resume`, NaN/Inf steps in
:mod:`dckd_basicsr.training.nonfinite`, FAKD's feature taps in :mod:`dckd_basicsr.distill.feature_taps`, the label-consistency ops in
:mod:`dckd_basicsr.distill.invertible_ops`. DUKD's upcycling, a second optimizer step, is
:class:`~dckd_basicsr.models.dukd_model.DUKDModel`; the former one-step keys ``train.zoom_in_opt``, ``zoom_out_opt``
and ``zoom_out_lq_opt`` are an error naming it.
"""
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from basicsr.archs import build_network
from basicsr.models.sr_model import SRModel
from basicsr.utils import get_root_logger
from basicsr.utils.registry import MODEL_REGISTRY
from torch import Tensor, nn

from dckd_basicsr.errors import OptionError
from dckd_basicsr.distill.feature_taps import FeaturePairs
from dckd_basicsr.training.fast import FastSettings, freeze
from dckd_basicsr.distill.invertible_ops import apply_invertible_ops, random_invertible_ops, undo_invertible_ops
from dckd_basicsr.distill.loss_terms import LossTerm, build_loss_terms
from dckd_basicsr.training.nonfinite import NonFiniteSteps, nonfinite_terms
from dckd_basicsr.archs.padding import padded_forward
from dckd_basicsr.options import (check_unit_interval, network_in_channels, train_option,
                                  validation_pad_multiple)
from dckd_basicsr.training.random_streams import RandomStreams
from dckd_basicsr.training.resume import TrainingState, save_format

# Side of the dry-run input that checks the teacher: cheap for a full-size teacher, a multiple of SwinIR's window
# and of Restormer's 8.
CHECK_SIZE = 16


def load_pretrained_network(net: nn.Module, opt: Dict[str, Any], suffix: str, format_key: str,
                            default_param_key: Optional[str] = 'params', default_strict: bool = True) -> Dict:
    """Load ``path.pretrain_network_<suffix>`` into ``net`` with :func:`dckd_basicsr.checkpoints.load_pretrained`.

    Companion options: ``path.param_key_<suffix>``, ``path.strict_load_<suffix>``, ``path.<format_key>`` (or
    ``path.format_network_<suffix>``) and ``path.trusted_<suffix>``.
    """
    from dckd_basicsr.checkpoints import load_pretrained
    path_opt = opt['path']
    fmt = path_opt.get(format_key, path_opt.get(f'format_network_{suffix}', 'auto'))
    return load_pretrained(net, path_opt[f'pretrain_network_{suffix}'], fmt=fmt,
                           param_key=path_opt.get(f'param_key_{suffix}', default_param_key),
                           strict=path_opt.get(f'strict_load_{suffix}', default_strict),
                           trusted=bool(path_opt.get(f'trusted_{suffix}', False)),
                           option=f'path.pretrain_network_{suffix}')


def check_output_size(teacher: nn.Module, student: nn.Module, lq_shape: Sequence[int], option: str = 'network_t',
                      path: Optional[str] = None) -> Tuple[int, ...]:
    """Run the (bare) teacher and student on one input of ``lq_shape`` and check their outputs have the same size.

    Catches a teacher built with another ``upscale`` (or channel count) than the student, or a checkpoint whose
    weights give NaN/Inf, before training starts. Both networks run in eval mode under ``torch.no_grad()``; their
    modes are restored. Returns the common output shape; raises OptionError naming ``option`` (and ``path``).
    """
    outputs = []
    for net in (teacher, student):
        param = next(iter(net.parameters()), None)
        was_training = net.training
        net.eval()
        try:
            with torch.no_grad():
                out = net(torch.full(tuple(lq_shape), 0.5, device=param.device if param is not None else None))
        finally:
            net.train(was_training)
        outputs.append(out[0] if isinstance(out, (tuple, list)) else out)
    teacher_out, student_out = outputs
    where = f'{option} ({path})' if path else option
    if teacher_out.shape != student_out.shape:
        raise OptionError(f'{where}: on a {tuple(lq_shape)} input the teacher outputs {tuple(teacher_out.shape)} but '
                          f'the student {tuple(student_out.shape)}; the teacher must have the student\'s upscale and '
                          'channels.')
    if not torch.isfinite(teacher_out).all():
        raise OptionError(f'{where}: the teacher\'s output contains NaN or Inf; the checkpoint is broken or does '
                          'not match the network options.')
    return tuple(teacher_out.shape)


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
    FAST_KEYS = FastSettings.KEYS

    def __init__(self, opt: Dict[str, Any]):
        super().__init__(opt)
        self.pad_multiple = validation_pad_multiple(opt)

    # ------------------------------------------------------------------ set-up
    def init_training_settings(self):
        self.net_g.train()
        self.init_random_stream()
        self.fast = FastSettings(self.opt['train'].get('fast'), self.FAST_KEYS, self.device, type(self).__name__)
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
        ``train.fast.autocast`` (:mod:`dckd_basicsr.archs.spandrel_arch`)."""
        if not self.opt.get('network_t'):
            raise OptionError(f'network_t: missing; {type(self).__name__} needs the teacher network options.')
        if not self.opt['path'].get('pretrain_network_t'):
            raise OptionError('path.pretrain_network_t: missing; give the teacher checkpoint (a random teacher '
                              'would distil noise).')
        self.net_t = freeze(build_network(self.opt['network_t']).to(self.device))
        load_pretrained_network(self.net_t, self.opt, 't', 'teacher_format')
        from dckd_basicsr.archs.spandrel_arch import SpandrelTeacher
        option = 'network_t'
        if isinstance(self.net_t, SpandrelTeacher):  # built from the file by spandrel: freeze what it built, check it
            freeze(self.net_t)
            get_root_logger().info(f'Teacher (network_t: SpandrelTeacher): {self.net_t.describe()}')
            self.net_t.check_fits(self.opt)
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
        for what, net, blocks in self.networks_to_compile():
            self.fast.compile(net, what, blocks)

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
        self.fast.prepare(self.net_t)
        return self.fast.run(self.net_t, x)

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
        """One step on the sum of the terms of Eq. 10. A step where a term is NaN or infinite updates nothing (no
        optimizer step, no EMA, no history update; :mod:`dckd_basicsr.training.nonfinite`).

        The backward pass runs before the finiteness check, whose result the host must wait for: on a GPU the
        backward kernels are then already queued while it waits, and under DDP every rank runs the same gradient
        all-reduce whatever its losses (the gradients of a skipped step are dropped by the next ``zero_grad``)."""
        with self.model_random_stream():
            self.optimizer_g.zero_grad(set_to_none=True)
            with self.fast.amp():
                self.output = self.net_g(self.lq).float()  # fp32 already, unless train.fast.amp
                self.run_teacher()
                losses = self.compute_losses(current_iter)
            nonfinite = self.backward_and_step(losses)
        self.log_dict = self.reduce_loss_dict(losses)
        if nonfinite:
            self.nonfinite.skipped(current_iter, self.nonfinite_values(nonfinite),
                                   'the optimizer, EMA and history updates')
            return
        self.nonfinite.reset()
        if self.ema_decay > 0:
            self.model_ema(decay=self.ema_decay)
        self.after_step(current_iter)

    def backward_and_step(self, losses: 'OrderedDict[str, Tensor]') -> List[str]:
        """Backward on the sum of ``losses``, then an optimizer step unless a term is NaN/Inf on any rank; returns
        the names of those terms. Under ``train.fast.amp: fp16`` the loss is scaled and the step goes through the
        GradScaler, which skips it when the fp16 gradients overflowed (``self.fast.overflow``; not a non-finite
        loss, so not counted towards ``train.max_nonfinite_steps``)."""
        self.fast.backward(sum(losses.values()))
        nonfinite = nonfinite_terms(losses, bool(self.opt.get('dist')))
        if not nonfinite:
            self.fast.step(self.optimizer_g)
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
