"""The key layouts of the official RCAN and EDSR releases (EDSR-PyTorch naming) against BasicSR's ``RCAN`` / ``EDSR``.

Each layout is one table of name correspondences, read in both directions: ``rcan_official`` / ``edsr_official``
(:mod:`.official_converters`) rename official keys to BasicSR's, and ``dckd-export --to spandrel`` renames a BasicSR
RCAN student's keys to the official ones (:func:`rcan_to_official`).

The official RCAN computes on [0, 255] images with ``sub_mean`` / ``add_mean`` MeanShift convolutions and adds each
block's residual unscaled; BasicSR's RCAN multiplies its [0, 1] input by ``img_range``, subtracts ``rgb_mean`` as an
attribute and multiplies each residual by ``res_scale``. Towards the official layout these three are folded into the
weights (:data:`RCAN_FOLDS`, MeanShift layers written from ``rgb_mean``). From the official layout the weights are
taken as they are: the file's MeanShift must agree with the network's ``rgb_mean`` and ``img_range``, which the
converters check.
"""
import functools
import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Dict, Mapping, Optional, Sequence, Tuple

import torch
from torch import Tensor

from dckd_basicsr.errors import OptionError

# Placeholders of the name templates: indices in the key, and counts given to KeyLayout.rename.
_INDEX_PATTERNS = {'g': r'\d+', 'b': r'\d+', 'k': r'\d+', 'p': r'weight|bias'}


@functools.lru_cache(maxsize=None)
def _compiled(template: str, counts: Tuple[Tuple[str, int], ...]) -> 're.Pattern[str]':
    """The regex of a name template: index placeholders become named groups, count placeholders their values."""
    values = dict(counts)
    parts = re.split(r'\{(\w+)\}', template)
    regex = ''.join(
        re.escape(part) if i % 2 == 0 else
        (f'(?P<{part}>{_INDEX_PATTERNS[part]})' if part in _INDEX_PATTERNS else re.escape(str(values[part])))
        for i, part in enumerate(parts))
    return re.compile(regex)


@dataclass(frozen=True)
class KeyLayout:
    """Name correspondences ``(official, BasicSR)`` between an official layout and BasicSR's.

    Templates hold ``{g}`` (residual group), ``{b}`` (block), ``{k}`` (upsampler convolution) and ``{p}`` (``weight``
    or ``bias``), which carry over, and ``{num_group}`` / ``{num_block}``, the network's counts given to
    :meth:`rename` (the official layouts put a group's last convolution and the body's at index ``num_block`` /
    ``num_group`` of a sequence).
    """
    pairs: Tuple[Tuple[str, str], ...]

    def rename(self, key: str, to: str, **counts: int) -> Optional[str]:
        """``key`` in the other layout (``to``: ``'basicsr'`` or ``'official'``); None when no pair matches."""
        source, target = (0, 1) if to == 'basicsr' else (1, 0)
        frozen = tuple(sorted(counts.items()))
        for pair in self.pairs:
            match = _compiled(pair[source], frozen).fullmatch(key)
            if match:
                return pair[target].format(**counts, **match.groupdict())
        return None


_HEAD_AND_TAIL = (
    ('head.0.{p}', 'conv_first.{p}'),
    ('tail.0.{k}.{p}', 'upsample.{k}.{p}'),
    ('tail.1.{p}', 'conv_last.{p}'),
)

RCAN_LAYOUT = KeyLayout((
    ('body.{g}.body.{b}.body.0.{p}', 'body.{g}.residual_group.{b}.rcab.0.{p}'),
    ('body.{g}.body.{b}.body.2.{p}', 'body.{g}.residual_group.{b}.rcab.2.{p}'),
    ('body.{g}.body.{b}.body.3.conv_du.0.{p}', 'body.{g}.residual_group.{b}.rcab.3.attention.1.{p}'),
    ('body.{g}.body.{b}.body.3.conv_du.2.{p}', 'body.{g}.residual_group.{b}.rcab.3.attention.3.{p}'),
    ('body.{g}.body.{num_block}.{p}', 'body.{g}.conv.{p}'),
    ('body.{num_group}.{p}', 'conv_after_body.{p}'),
) + _HEAD_AND_TAIL)

EDSR_LAYOUT = KeyLayout((
    ('body.{b}.body.0.{p}', 'body.{b}.conv1.{p}'),
    ('body.{b}.body.2.{p}', 'body.{b}.conv2.{p}'),
    ('body.{num_block}.{p}', 'conv_after_body.{p}'),
) + _HEAD_AND_TAIL)

# BasicSR RCAN name -> how its value changes in the official layout, f(value, img_range, res_scale): the first
# convolution sees [0, 255] instead of [0, img_range] inputs, the last one gives [0, 255] outputs, and res_scale moves
# into each block's second convolution (the channel attention's first convolution, which reads that output, undoes
# it, so the attention weights stay the same).
RCAN_FOLDS: Dict[str, Callable[[Tensor, float, float], Tensor]] = {
    'conv_first.weight': lambda value, img_range, res_scale: value * (img_range / 255.),
    'body.{g}.residual_group.{b}.rcab.2.{p}': lambda value, img_range, res_scale: value * res_scale,
    'body.{g}.residual_group.{b}.rcab.3.attention.1.weight': lambda value, img_range, res_scale: value / res_scale,
    'conv_last.{p}': lambda value, img_range, res_scale: value * (255. / img_range),
}


def rcan_to_official(state_dict: Mapping[str, Tensor], num_group: int, num_block: int, img_range: float,
                     res_scale: float, rgb_mean: Sequence[float]) -> 'OrderedDict[str, Tensor]':
    """A BasicSR RCAN state dict in the official layout, ``img_range``, ``res_scale`` and ``rgb_mean`` folded in
    (MeanShift ``sub_mean`` / ``add_mean`` with bias ``-/+ 255 * rgb_mean``)."""
    out = OrderedDict()
    for key, value in state_dict.items():
        new = RCAN_LAYOUT.rename(key, 'official', num_group=num_group, num_block=num_block)
        if new is None:
            raise OptionError(f'RCAN key {key} has no place in the official RCAN layout.')
        fold = next((f for template, f in RCAN_FOLDS.items() if _compiled(template, ()).fullmatch(key)), None)
        out[new] = fold(value, img_range, res_scale) if fold else value
    mean = torch.as_tensor(rgb_mean).detach().flatten().float()
    eye = torch.eye(3).view(3, 3, 1, 1)
    out['sub_mean.weight'], out['sub_mean.bias'] = eye.clone(), -255. * mean
    out['add_mean.weight'], out['add_mean.bias'] = eye.clone(), 255. * mean
    return out
