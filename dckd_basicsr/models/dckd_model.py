"""DCKDModel: Dynamic Contrastive Knowledge Distillation (Zhou et al., AAAI 2025), Eq. 10.

``L = L_rec(S, GT) + L_kd(S, T) + lambda_dcl * L_dcl + lambda_ce * L_dmm (+ L_lcr)``, each term on when its option
is given (``pixel_opt``, ``logits_opt``, ``cl_opt``, ``ce_opt``, ``lcr_opt``), so "Logits", "DCR only", "DMM only"
and "DCKD" are plain option files.

* DCR (``cl_opt``, Eq. 5): anchor = student output, positive = teacher output, negatives = the LQ input and
  ``num_neg`` degraded copies (:class:`~dckd_basicsr.degradations.NegativeGenerator`) restored by the history model
  (:mod:`dckd_basicsr.history`), all compared in the frozen VQGAN encoder's multi-level features.
* DMM (``ce_opt``, Eqs. 8-9): teacher and student code distributions over the VQGAN codebook.

Every sample goes through the encoder once per step: the student output with gradient (taps and code logits from one
pass), then, under ``torch.no_grad()``, the teacher output together with the first ``train.fast.negatives_per_pass``
negatives, then the remaining negatives that many at a time. The negatives stop after the last contrastive tap, and
each of their taps is added to the Eq. 5 denominators (:class:`~dckd_basicsr.losses.dcl_loss.NegativeDistances`)
as soon as it is computed and then dropped, so memory holds one pass's negatives (default: one negative) at a time.
The student output's pass keeps only the GroupNorm inputs of the frozen encoder for its backward pass (see
:mod:`dckd_basicsr.archs.vqgan_arch`), about a third of what autograd would keep.
``train.fast.autocast`` (``bf16``/``fp16``) and ``train.fast.channels_last`` apply to the teacher, the history model
and the encoder; the losses and the code logits stay in fp32.
"""
from collections import OrderedDict
from typing import Any, List, Optional, Tuple

import torch
from basicsr.archs import build_network
from basicsr.losses import build_loss
from basicsr.utils import get_root_logger
from basicsr.utils.registry import MODEL_REGISTRY
from torch import Tensor, nn

from dckd_basicsr.degradations import NegativeGenerator
from dckd_basicsr.errors import OptionError
from dckd_basicsr.history import HistorySchedule, update_history
from dckd_basicsr.models.kd_model import KDModel, freeze, load_pretrained_network


@MODEL_REGISTRY.register()
class DCKDModel(KDModel):
    """KD with dynamic contrastive regularization (history-model negatives) and distribution mapping."""

    FAST_KEYS = KDModel.FAST_KEYS + ('negatives_per_pass', )

    def _option(self, key: str, default: Any) -> Any:
        """An authors' DCKD key, read from ``train`` first, then from the top level of the option file."""
        train_opt = self.opt['train']
        if key in train_opt:
            return train_opt[key]
        return self.opt.get(key, default)

    def loss_option_keys(self) -> List[str]:
        return super().loss_option_keys() + ['cl_opt', 'ce_opt']

    def setup_losses(self) -> None:
        super().setup_losses()
        train_opt = self.opt['train']
        self.cri_dcl = build_loss(train_opt['cl_opt']).to(self.device) if train_opt.get('cl_opt') else None
        self.cri_dmm = build_loss(train_opt['ce_opt']).to(self.device) if train_opt.get('ce_opt') else None
        if self.cri_dcl is not None or self.cri_dmm is not None:
            self.setup_vqgan()
        if self.cri_dcl is not None:
            self.cri_dcl.check_levels(self.net_vqgan.num_feature_levels)
            self.negatives = NegativeGenerator.from_options(self.opt)
            self.setup_history()

    def loss_names(self) -> List[str]:
        extra = {'l_dcl': self.cri_dcl, 'l_dmm': self.cri_dmm}
        return super().loss_names() + [name for name, loss in extra.items() if loss is not None]

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
        per_pass = self.fast_options.get('negatives_per_pass', 1)
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
        self.prepare_frozen(self.net_vqgan)

    def setup_history(self) -> None:
        """The history model: a frozen copy of the EMA student (the student when EMA is off), or of
        ``path.pretrain_network_his`` when given."""
        if self.opt.get('network_his') is False:
            raise OptionError('network_his: false, but cl_opt needs the history model to restore the negatives; '
                              'set network_his: true or remove cl_opt.')
        self.history_decay = float(self._option('update_decay', 0.1))
        if not 0 <= self.history_decay <= 1:
            raise OptionError(f'train.update_decay: {self.history_decay}; it must lie in [0, 1].')
        self.history_schedule = HistorySchedule(self._option('step', [1000, 2000, 3000]),
                                                self._option('step_span', 100000))
        self.net_his = build_network(self.opt['network_g']).to(self.device)
        his_path = self.opt['path'].get('pretrain_network_his')
        if his_path:
            self.load_network(self.net_his, his_path, self.opt['path'].get('strict_load_his', True),
                              self.opt['path'].get('param_key_his', 'params'))
        else:
            self.net_his.load_state_dict(self.history_source().state_dict())
        self.prepare_frozen(freeze(self.net_his))

    def history_source(self) -> nn.Module:
        return self.net_g_ema if hasattr(self, 'net_g_ema') else self.get_bare_model(self.net_g)

    # ------------------------------------------------------------------ training step
    def needs_teacher_output(self) -> bool:
        return super().needs_teacher_output() or self.cri_dcl is not None or self.cri_dmm is not None

    def restore_negatives(self) -> Tensor:
        """(num_neg + 1) * B history-model outputs, negative-major (the LQ input first), in one batched pass (they
        are images, small next to their encoder features)."""
        return self.run_frozen(self.net_his, self.negatives(self.lq))

    def encode(self, x: Tensor, **kwargs) -> Tuple[List[Tensor], Optional[Tensor]]:
        """:meth:`VQGANEncoder.encode` under the ``train.fast`` settings; taps and logits come back in fp32."""
        with self.frozen_autocast():
            taps, logits = self.net_vqgan.encode(self.frozen_input(x), **kwargs)
        return [tap.float() for tap in taps], (None if logits is None else logits.float())

    def encoder_terms(self) -> 'OrderedDict[str, Tensor]':
        """L_dcl (Eq. 5) and L_dmm (Eq. 9), every sample encoded once (see the module docstring)."""
        batch = self.lq.size(0)
        taps, codes = self.cri_dcl is not None, self.cri_dmm is not None
        anchor, anchor_logits = self.encode(self.output, taps=taps, full_rows=None if codes else 0)
        terms = OrderedDict()
        if not taps:
            with torch.no_grad():
                positive_logits = self.encode(self.output_t, taps=False)[1]
            terms['l_dmm'] = self.cri_dmm(anchor_logits, positive_logits)
            return terms
        distances = self.cri_dcl.negative_distances(anchor)
        positive = [None] * len(anchor)

        def add_negatives(level: int, feature: Tensor, rows_to_skip: int = 0) -> None:
            distances.add(level, feature[rows_to_skip:].float().unflatten(0, (-1, batch)))

        def add_positive_and_negatives(level: int, feature: Tensor) -> None:
            positive[level] = feature[:batch].float()
            add_negatives(level, feature, batch)

        with torch.no_grad():
            chunks = self.restore_negatives().split(self.negatives_per_pass * batch)
            positive_logits = self.encode(torch.cat([self.output_t, chunks[0]]), full_rows=batch if codes else 0,
                                          on_tap=add_positive_and_negatives)[1]
            for chunk in chunks[1:]:
                self.encode(chunk, full_rows=0, on_tap=add_negatives)
        terms['l_dcl'] = self.cri_dcl.from_distances(anchor, positive, distances)
        if codes:
            terms['l_dmm'] = self.cri_dmm(anchor_logits, positive_logits)
        return terms

    def compute_losses(self, current_iter: int) -> 'OrderedDict[str, Tensor]':
        losses = super().compute_losses(current_iter)
        if self.cri_dcl is not None or self.cri_dmm is not None:
            losses.update(self.encoder_terms())
        return losses

    def after_step(self, current_iter: int) -> None:
        """Move the history model towards the EMA student on the schedule of :class:`HistorySchedule`."""
        if self.cri_dcl is not None and self.history_schedule.should_update(current_iter):
            update_history(self.net_his, self.history_source(), self.history_decay)
            get_root_logger().debug(f'History model updated at iter {current_iter}.')

    # ------------------------------------------------------------------ saving and resuming
    def extra_networks_to_save(self) -> List[Tuple[str, nn.Module]]:
        return [('net_his', self.net_his)] if hasattr(self, 'net_his') else []
