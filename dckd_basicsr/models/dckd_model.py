"""DCKDModel: Dynamic Contrastive Knowledge Distillation (Zhou et al., AAAI 2025), Eq. 10.

``L = L_rec(S, GT) + L_kd(S, T) + lambda_dcl * L_dcl + lambda_ce * L_dmm (+ L_lcr)``, one line per term in
:meth:`DCKDModel.compute_losses`, each term on when its option block is given (:data:`DCKDModel.LOSS_TERMS`:
``pixel_opt``, ``logits_opt``, ``lcr_opt``, ``fakd_opt``, ``cl_opt``, ``ce_opt``), so "Logits", "DCR only",
"DMM only", "DCKD" and "DCKD*" are plain option files.

* DCR (``cl_opt``, Eq. 5): anchor = student output, positive = teacher output, negatives = the LQ input and
  ``num_neg`` degraded copies (:class:`~dckd_basicsr.distill.negatives.NegativeGenerator`) restored by the history model
  (:mod:`dckd_basicsr.distill.history`), all compared in the frozen VQGAN encoder's multi-level features.
* DMM (``ce_opt``, Eqs. 8-9): teacher and student code distributions over the VQGAN codebook.

Every sample goes through the encoder once per step: the student output with gradient (taps and code logits from one
pass), then, under ``torch.no_grad()``, the teacher output together with the first ``train.fast.negatives_per_pass``
negatives, then the remaining negatives that many at a time. The negatives stop after the last contrastive tap, and
each of their taps is added to the Eq. 5 denominators (:class:`~dckd_basicsr.losses.dcl_loss.NegativeDistances`)
as soon as it is computed and then dropped, so memory holds one pass's negatives (default: one negative) at a time.
The student output's pass keeps only the GroupNorm inputs of the frozen encoder for its backward pass (see
:mod:`dckd_basicsr.archs.vqgan_arch`), about a third of what autograd would keep.
``train.fast.autocast`` (``bf16``/``fp16``) and ``train.fast.channels_last`` apply to the teacher, the history model
and the encoder; the losses and the code logits stay in fp32. ``train.fast.amp`` adds the student's forward pass and
the loss computation (the code logits stay fp32); ``train.fast.compile`` compiles the history model and the
encoder's residual, attention and downsampling blocks besides the student and the teacher
(:mod:`dckd_basicsr.training.fast`).
"""
from collections import OrderedDict
from typing import List, Optional, Tuple

import torch
from basicsr.archs import build_network
from basicsr.utils import get_root_logger
from basicsr.utils.registry import MODEL_REGISTRY
from torch import Tensor, nn

from dckd_basicsr.archs.vqgan_arch import AttnBlock, Downsample, ResnetBlock
from dckd_basicsr.distill.history import HistorySchedule, update_history
from dckd_basicsr.distill.loss_terms import LossTerm
from dckd_basicsr.distill.negatives import NegativeGenerator
from dckd_basicsr.distill.teacher import load_pretrained_network
from dckd_basicsr.errors import OptionError
from dckd_basicsr.losses.dcl_loss import NegativeDistances
from dckd_basicsr.models.kd_model import KDModel
from dckd_basicsr.options import check_unit_interval, train_option
from dckd_basicsr.training.frozen import freeze

Taps = List[Tensor]


class _TargetTaps:
    """``on_tap`` of the no-grad pass over [teacher output; first negatives]: the first ``batch`` rows of each tap
    are the positive's features, the others go straight into the Eq. 5 denominators."""

    def __init__(self, batch: int, negatives: NegativeDistances, levels: int):
        self.batch, self.negatives, self.positive = batch, negatives, [None] * levels

    def positive_and_negatives(self, level: int, feature: Tensor) -> None:
        self.positive[level] = feature[:self.batch].float()
        self.negatives_only(level, feature, self.batch)

    def negatives_only(self, level: int, feature: Tensor, rows_to_skip: int = 0) -> None:
        self.negatives.add(level, feature[rows_to_skip:].float().unflatten(0, (-1, self.batch)))


@MODEL_REGISTRY.register()
class DCKDModel(KDModel):
    """KD with dynamic contrastive regularization (history-model negatives) and distribution mapping."""

    LOSS_TERMS = KDModel.LOSS_TERMS + (
        LossTerm('l_dcl', 'cl_opt', 'cri_dcl', 'DCR, Eq. 5: anchor S, positive T, negatives from the history model'),
        LossTerm('l_dmm', 'ce_opt', 'cri_dmm', 'DMM, Eq. 9: code distributions of S and T'),
    )
    FAST_KEYS = KDModel.FAST_KEYS + ('negatives_per_pass', )

    def setup_losses(self) -> None:
        super().setup_losses()
        if self.cri_dcl is not None or self.cri_dmm is not None:
            self.setup_vqgan()
        if self.cri_dcl is not None:
            self.cri_dcl.check_levels(self.net_vqgan.num_feature_levels)
            self.negatives = NegativeGenerator.from_options(self.opt)
            self.setup_history()

    def setup_vqgan(self) -> None:
        """Build the encoder from ``network_vqgan``, load ``path.pretrain_network_vqgan`` and check it has every
        encoder weight (a random encoder would make both losses meaningless)."""
        if not self.opt.get('network_vqgan'):
            raise OptionError('network_vqgan: missing; cl_opt / ce_opt need the VQGAN encoder options '
                              '(type: VQGAN, embed_dim, n_embed, ddconfig).')
        path = self.opt['path'].get('pretrain_network_vqgan')
        if not path:
            raise OptionError('path.pretrain_network_vqgan: missing; give the taming-transformers VQGAN checkpoint '
                              '(e.g. the ImageNet f16-1024 last.ckpt).')
        self.net_vqgan = freeze(build_network(self.opt['network_vqgan']).to(self.device))
        per_pass = self.fast.extra.get('negatives_per_pass', 1)
        if isinstance(per_pass, bool) or not isinstance(per_pass, int) or per_pass < 1:
            raise OptionError(f'train.fast.negatives_per_pass: {per_pass!r}; give an integer >= 1 (1: least memory).')
        self.negatives_per_pass = per_pass
        report = load_pretrained_network(self.net_vqgan, self.opt, 'vqgan', 'vqgan_format',
                                         default_param_key='state_dict', default_strict=False)
        missing = list(report['missing']) + list(report['mismatched'])
        if missing:
            what = 'has no VQGAN encoder weights' if not report['mapped'] else \
                f'lacks {len(missing)} of the encoder\'s tensors ({", ".join(missing[:4])}...)'
            raise OptionError(f'path.pretrain_network_vqgan: {path} {what}; expected taming-transformers keys '
                              '(encoder.*, quant_conv.*, quantize.embedding.weight) matching network_vqgan.ddconfig.')
        self.frozen.prepare(self.net_vqgan)

    def setup_history(self) -> None:
        """The history model: a frozen copy of the EMA student (the student when EMA is off), or of
        ``path.pretrain_network_his`` when given."""
        if self.opt.get('network_his') is False:
            raise OptionError('network_his: false, but cl_opt needs the history model to restore the negatives; '
                              'set network_his: true or remove cl_opt.')
        self.history_decay = check_unit_interval('train.update_decay',
                                                 float(train_option(self.opt, 'update_decay', 0.1)), noun='it')
        self.history_schedule = HistorySchedule(train_option(self.opt, 'step', [1000, 2000, 3000]),
                                                train_option(self.opt, 'step_span', 100000))
        self.net_his = build_network(self.opt['network_g']).to(self.device)
        his_path = self.opt['path'].get('pretrain_network_his')
        if his_path:
            self.load_network(self.net_his, his_path, self.opt['path'].get('strict_load_his', True),
                              self.opt['path'].get('param_key_his', 'params'))
        else:
            self.net_his.load_state_dict(self.history_source().state_dict())
        self.frozen.prepare(freeze(self.net_his))

    def networks_to_compile(self) -> List[Tuple[str, nn.Module, Optional[Tuple[type, ...]]]]:
        """The KD base's, the history model and the encoder's blocks (its passes stream taps to callbacks, which
        cannot be compiled as one graph)."""
        networks = super().networks_to_compile()
        if hasattr(self, 'net_his'):
            networks.append(('network_his', self.net_his, None))
        if hasattr(self, 'net_vqgan'):
            networks.append(('network_vqgan', self.net_vqgan, (ResnetBlock, AttnBlock, Downsample)))
        return networks

    def history_source(self) -> nn.Module:
        return self.net_g_ema if hasattr(self, 'net_g_ema') else self.get_bare_model(self.net_g)

    # ------------------------------------------------------------------ training step
    def needs_teacher_output(self) -> bool:
        return super().needs_teacher_output() or self.cri_dcl is not None or self.cri_dmm is not None

    def compute_losses(self, current_iter: int) -> 'OrderedDict[str, Tensor]':
        """Eq. 10: the KD base's terms, then ``lambda_dcl * L_dcl`` (Eq. 5) and ``lambda_ce * L_dmm`` (Eq. 9)."""
        losses = super().compute_losses(current_iter)
        if self.cri_dcl is None and self.cri_dmm is None:
            return losses
        anchor, anchor_codes = self.encode_student()
        positive, negatives, positive_codes = self.encode_targets(anchor)
        if self.cri_dcl is not None:
            losses['l_dcl'] = self.cri_dcl(anchor, positive, negatives)
        if self.cri_dmm is not None:
            losses['l_dmm'] = self.cri_dmm(anchor_codes, positive_codes)
        return losses

    def restore_negatives(self) -> Tensor:
        """(num_neg + 1) * B history-model outputs, negative-major (the LQ input first), in one batched pass (they
        are images, small next to their encoder features)."""
        return self.frozen.run(self.net_his, self.negatives(self.lq))

    def encode(self, x: Tensor, **kwargs) -> Tuple[Taps, Optional[Tensor]]:
        """:meth:`VQGANEncoder.encode` under the ``train.fast`` settings; taps and logits come back in fp32."""
        with self.precision.frozen_autocast():
            taps, logits = self.net_vqgan.encode(self.frozen.input(x), **kwargs)
        return [tap.float() for tap in taps], (None if logits is None else logits.float())

    def encode_student(self) -> Tuple[Taps, Optional[Tensor]]:
        """The anchor: the student output's Eq. 5 taps and Eq. 8 code logits, from one pass with gradient."""
        return self.encode(self.output, taps=self.cri_dcl is not None,
                           full_rows=None if self.cri_dmm is not None else 0)

    def encode_targets(self, anchor: Taps) -> Tuple[Optional[Taps], Optional[NegativeDistances], Optional[Tensor]]:
        """The positive (the teacher output's taps and code logits) and the negatives, under ``no_grad``.

        The teacher output goes through the encoder together with the first ``train.fast.negatives_per_pass``
        negatives, then the other negatives that many at a time; they stop after the last tap, and each of their
        taps is added to the Eq. 5 denominators with respect to ``anchor`` as soon as it is computed and dropped
        (:class:`~dckd_basicsr.losses.dcl_loss.NegativeDistances`). Without ``cl_opt`` only the code logits of the
        teacher output are computed. Returns (positive taps, negative distances, positive code logits).
        """
        codes = self.cri_dmm is not None
        with torch.no_grad():
            if self.cri_dcl is None:
                return None, None, self.encode(self.output_t, taps=False)[1]
            batch = self.lq.size(0)
            targets = _TargetTaps(batch, self.cri_dcl.negative_distances(anchor), len(anchor))
            chunks = self.restore_negatives().split(self.negatives_per_pass * batch)
            positive_codes = self.encode(torch.cat([self.output_t, chunks[0]]), full_rows=batch if codes else 0,
                                         on_tap=targets.positive_and_negatives)[1]
            for chunk in chunks[1:]:
                self.encode(chunk, full_rows=0, on_tap=targets.negatives_only)
        return targets.positive, targets.negatives, positive_codes

    def after_step(self, current_iter: int) -> None:
        """Move the history model towards the EMA student on the schedule of :class:`HistorySchedule`."""
        if self.cri_dcl is not None and self.history_schedule.should_update(current_iter):
            update_history(self.net_his, self.history_source(), self.history_decay)
            get_root_logger().debug(f'History model updated at iter {current_iter}.')

    def extra_networks_to_save(self) -> List[Tuple[str, nn.Module]]:
        return [('net_his', self.net_his)] if hasattr(self, 'net_his') else []
