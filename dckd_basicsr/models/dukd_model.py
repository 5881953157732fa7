"""DUKDModel: Data Upcycling Knowledge Distillation (Zhang et al., "Data Upcycling Knowledge Distillation for Image
Super-Resolution", 2023), as the authors' code trains it: two optimizer steps per iteration.

1. ``l_pix = L_rec(S(x), y)`` and ``l_kd = L_kd(S(x), T(x))`` (the KD base's terms), backward, optimizer step.
2. Data upcycling (:mod:`dckd_basicsr.distill.upcycling`), backward, optimizer step:

   * ``l_zoom_in = L_kd(S(t), T(t))`` on zoom-in tiles ``t``: ``n_gt_sub`` LQ-sized cells of the ``scale x scale``
     grid of the GT patch, the same cells for the whole batch. With ``train.noisy`` given, label consistency: per tile
     and per op with probability ``noisy.prob`` the *student's* input is colour-inverted, flipped (H, then W) and/or
     transposed, and its output mapped back by the inverse ops (:mod:`dckd_basicsr.distill.invertible_ops`); the teacher
     sees the clean tile;
   * with ``dukd_opt.zoom_out``: the LQ downscaled by MATLAB bicubic ``imresize(x, 1 / scale)``, ``x_down``:
     ``l_zoom_out_pix = L_rec(S(x_down), x)`` and ``l_zoom_out_kd = L_kd(S(x_down), T(x_down))``.

   As in the authors' code, the gradients of step 1 are not zeroed before step 2's backward pass: step 2 applies
   the sum of both steps' gradients (``dukd_opt.zero_grad_between_steps: true`` zeroes them).
3. EMA (and :meth:`after_step`) once, after both steps.

Options: DUKD's keys run as they are (``model_type: DUKD`` is an alias of ``DUKDModel``): ``train.pixel_opt``,
``train.kd_opt`` (or ``logits_opt``; required, it also weighs the zoom terms), ``train.noisy.prob`` (default 0.3;
an absent or empty ``train.noisy`` turns label consistency off), ``train.dukd_opt.n_gt_sub`` (an int or DUKD's
one-element list, default 1), ``train.dukd_opt.zoom_out`` (default false). The KD base's other terms
(``lcr_opt``, ``fakd_opt``) join step 1.

Deliberate differences from the authors' code, each a defect there:

* the label-consistency inverse: their code maps the student output back by applying the same ops again in the
  same order (invert, flip H, flip W, transpose), which is not the inverse when a transpose follows exactly one flip
  (the result is rotated by 180 degrees); here the inverse ops run in reverse order;
* the teacher: theirs is wrapped in DDP, left in train mode (SwinIR's stochastic depth stays active, so its labels
  are noisy) and keeps ``requires_grad``; here it is frozen (eval, no gradients, never in DDP), as in the KD base;
* a zoom-out input whose size is no multiple of SwinIR's window (12x12 at x4) crashes their code; here it is
  padded and cropped back (:func:`~dckd_basicsr.archs.padding.padded_forward`).

Also ours: both steps skip their optimizer update when one of their terms is NaN/Inf (a skipped step 1's gradients
are dropped before step 2); under ``train.fast.amp`` both steps run under autocast, and with ``fp16`` each step goes
through the GradScaler (step 1's gradients, unscaled by its step, are scaled again before step 2's backward pass, or
dropped when they overflowed); every random draw comes from the model's own stream, so a resumed run draws what an
uninterrupted one would; ``l_zoom_in`` is logged (their code does not log it).
"""
import contextlib
import math
from collections import OrderedDict
from typing import Dict, List, Tuple

from basicsr.utils.registry import MODEL_REGISTRY
from torch import Tensor

from dckd_basicsr.archs.padding import padded_forward
from dckd_basicsr.distill.invertible_ops import apply_invertible_ops, random_invertible_ops, undo_invertible_ops
from dckd_basicsr.distill.upcycling import matlab_bicubic_downscale, random_grid_positions, zoom_in_tiles
from dckd_basicsr.errors import OptionError
from dckd_basicsr.models.kd_model import KDModel, Step
from dckd_basicsr.options import check_unit_interval, train_option

DUKD_OPT_KEYS = ('n_gt_sub', 'zoom_out', 'zero_grad_between_steps')


@MODEL_REGISTRY.register()
class DUKDModel(KDModel):
    """KD base + DUKD's zoom-in/zoom-out upcycling as a second optimizer step per iteration."""

    SKIPPED_UPDATES = 'both optimizer steps and the EMA update'

    def setup_losses(self) -> None:
        super().setup_losses()
        train_opt = self.opt['train']
        if self.cri_kd is None:
            raise OptionError(f'train.kd_opt: missing; {type(self).__name__} needs the KD loss (kd_opt or logits_opt), '
                              'which also weighs the zoom-in and zoom-out terms.')
        dukd_opt = train_opt.get('dukd_opt') or {}
        unknown = sorted(set(dukd_opt) - set(DUKD_OPT_KEYS))
        if unknown:
            raise OptionError(f'train.dukd_opt.{unknown[0]}: unknown key; {type(self).__name__} knows '
                              f'{", ".join(DUKD_OPT_KEYS)}.')
        n_gt_sub = dukd_opt.get('n_gt_sub', 1)
        # DUKD's files give a one-element list and its code reads the first entry
        self.n_gt_sub = int(n_gt_sub[0] if isinstance(n_gt_sub, (list, tuple)) else n_gt_sub)
        scale = int(self.opt['scale'])
        if not 1 <= self.n_gt_sub <= scale * scale:
            raise OptionError(f'train.dukd_opt.n_gt_sub: {n_gt_sub}; a x{scale} GT patch holds 1 to {scale * scale} '
                              'LQ-sized zoom-in tiles.')
        self.zoom_out = bool(dukd_opt.get('zoom_out', False))
        self.zero_grad_between_steps = bool(dukd_opt.get('zero_grad_between_steps', False))
        self.loss_names += ['l_zoom_in']  # step 2's terms, weighted by kd_opt and pixel_opt
        if self.zoom_out:
            self.loss_names += (['l_zoom_out_pix'] if self.cri_pix is not None else []) + ['l_zoom_out_kd']
        noisy = train_option(self.opt, 'noisy')
        # as DUKD: an absent or empty `noisy` turns label consistency off
        self.zoom_in_prob = check_unit_interval('train.noisy.prob', float(noisy.get('prob', 0.3))) if noisy else None

    # ------------------------------------------------------------------ random draws (the model's stream)
    def draw_zoom_in_cells(self) -> List[Tuple[int, int]]:
        """The grid cells of this iteration's zoom-in tiles, one draw for the whole batch."""
        return random_grid_positions(int(self.opt['scale']), self.n_gt_sub)

    def draw_label_masks(self, tiles: Tensor) -> Dict[str, Tensor]:
        """Per-tile masks of the label-consistency ops (:data:`~dckd_basicsr.distill.invertible_ops.INVERTIBLE_OPS`)."""
        return random_invertible_ops(tiles, self.zoom_in_prob)

    # ------------------------------------------------------------------ training step
    def upcycling_terms(self) -> 'OrderedDict[str, Tensor]':
        """Step 2's terms. The student passes go through ``self.net_g`` (DDP-wrapped when distributed), so that
        DDP prepares this step's own gradient all-reduce."""
        # SwinIR students and teachers need sizes divisible by their windows (a 12x12 zoom-out at x4)
        multiple = math.lcm(self.pad_multiple, int(self.opt['network_t'].get('window_size', 1)))
        terms = OrderedDict()
        with self.fakd_pairs.paused() if self.fakd_pairs is not None else contextlib.nullcontext():
            tiles = zoom_in_tiles(self.gt, tuple(self.lq.shape[-2:]), self.draw_zoom_in_cells())
            target = padded_forward(self.teacher, tiles, multiple)
            if self.zoom_in_prob is None:
                output = padded_forward(self.net_g, tiles, multiple).float()  # fp32 unless train.fast.amp
            else:
                masks = self.draw_label_masks(tiles)
                output = undo_invertible_ops(
                    padded_forward(self.net_g, apply_invertible_ops(tiles, masks), multiple).float(), masks)
            terms['l_zoom_in'] = self.cri_kd(output, target)
            if self.zoom_out:
                scale = int(self.opt['scale'])
                if self.cri_pix is not None and (self.lq.size(-2) % scale or self.lq.size(-1) % scale):
                    raise OptionError(f'train.dukd_opt.zoom_out: the LQ patch ({self.lq.size(-2)}x{self.lq.size(-1)}) '
                                      f'must be divisible by the scale ({scale}) for the zoomed-out output to match '
                                      'it; choose datasets.train.gt_size divisible by scale * scale.')
                small = matlab_bicubic_downscale(self.lq, scale)
                output = padded_forward(self.net_g, small, multiple).float()
                if self.cri_pix is not None:
                    terms['l_zoom_out_pix'] = self.cri_pix(output, self.lq)
                terms['l_zoom_out_kd'] = self.cri_kd(output, padded_forward(self.teacher, small, multiple))
        return terms

    def optimizer_steps(self, current_iter: int) -> List[Step]:
        """Step 1 (the KD base's terms), then step 2 (upcycling), as DUKD does; EMA and :meth:`after_step` follow once
        (:meth:`KDModel.optimize_parameters`). Each step is skipped on its own when one of its terms is NaN/Inf."""
        (first, skipped_first), = super().optimizer_steps(current_iter)
        # never carry NaN/Inf gradients into step 2 (nor fp16 gradients that overflowed)
        if skipped_first or self.zero_grad_between_steps or self.precision.overflow:
            self.optimizer_g.zero_grad(set_to_none=True)
        else:
            self.precision.rescale_kept_gradients(self.optimizer_g)
        with self.precision.step_autocast():
            second = self.upcycling_terms()
        return [(first, skipped_first), (second, self.backward_and_step(second))]


@MODEL_REGISTRY.register()
class DUKD(DUKDModel):
    """``model_type: DUKD``, the name in the authors' option files: the same model as :class:`DUKDModel`."""
