"""DCKDModel: Dynamic Contrastive Knowledge Distillation (Zhou et al., AAAI 2025), Eq. 10.

``L = L_rec(S, GT) + L_kd(S, T) + lambda_dcl * L_dcl + lambda_ce * L_dmm (+ L_lcr)``, each term on when its option
is given (``pixel_opt``, ``logits_opt``, ``cl_opt``, ``ce_opt``, ``lcr_opt``), so "Logits", "DCR only", "DMM only"
and "DCKD" are plain option files.

* DCR (``cl_opt``, Eq. 5): anchor = student output, positive = teacher output, negatives = the LQ input and
  ``num_neg`` degraded copies (:class:`~dckd_basicsr.degradations.NegativeGenerator`) restored by the history model
  (:mod:`dckd_basicsr.history`), all compared in the frozen VQGAN encoder's multi-level features.
* DMM (``ce_opt``, Eqs. 8-9): teacher and student code distributions over the VQGAN codebook.

The encoder runs twice per step: once on the student output (with gradient) and once, under ``torch.no_grad()``, on
the teacher output and all negatives together; the negatives stop after the last contrastive tap, and the teacher
output's taps and code distribution come from the same pass.
"""
from collections import OrderedDict
from typing import Any, List, Tuple

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
        report = load_pretrained_network(self.net_vqgan, self.opt, 'vqgan', 'vqgan_format',
                                         default_param_key='state_dict', default_strict=False)
        missing = list(report['missing']) + list(report['mismatched'])
        if missing:
            what = 'has no VQGAN encoder weights' if not report['mapped'] else \
                f'lacks {len(missing)} of the encoder\'s tensors ({", ".join(missing[:4])}...)'
            raise OptionError(f'path.pretrain_network_vqgan: {path} {what}; expected taming-transformers keys '
                              '(encoder.*, quant_conv.*, quantize.embedding.weight) matching network_vqgan.ddconfig.')

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
        freeze(self.net_his)

    def history_source(self) -> nn.Module:
        return self.net_g_ema if hasattr(self, 'net_g_ema') else self.get_bare_model(self.net_g)

    # ------------------------------------------------------------------ training step
    def needs_teacher_output(self) -> bool:
        return super().needs_teacher_output() or self.cri_dcl is not None or self.cri_dmm is not None

    def restore_negatives(self) -> Tensor:
        """(num_neg + 1) * B history-model outputs, negative-major (the LQ input first)."""
        with torch.no_grad():
            return self.net_his(self.negatives(self.lq))

    def encoder_terms(self) -> 'OrderedDict[str, Tensor]':
        """L_dcl (Eq. 5) and L_dmm (Eq. 9) from two encoder passes (see the module docstring)."""
        batch = self.lq.size(0)
        taps, codes = self.cri_dcl is not None, self.cri_dmm is not None
        anchor, anchor_logits = self.net_vqgan.encode(self.output, taps=taps, full_rows=None if codes else 0)
        with torch.no_grad():
            frozen_in = torch.cat([self.output_t, self.restore_negatives()]) if taps else self.output_t
            frozen, positive_logits = self.net_vqgan.encode(frozen_in, taps=taps, full_rows=batch if codes else 0)
        terms = OrderedDict()
        if taps:
            positive = [feature[:batch] for feature in frozen]
            negatives = [feature[batch:].unflatten(0, (-1, batch)) for feature in frozen]
            terms['l_dcl'] = self.cri_dcl(anchor, positive, negatives)
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
