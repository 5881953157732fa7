"""The ``train.fast`` option block: settings that trade exactness for speed, all off by default (exact fp32).

:class:`FastOptions` reads and checks the block when a model is built; three objects carry it out:

* ``amp`` and ``autocast`` (``bf16``/``fp16``): :class:`~dckd_basicsr.training.precision.MixedPrecision` (the whole
  step under ``amp``, the frozen networks under ``autocast``; ``amp`` implies ``autocast`` of the same precision
  unless ``autocast`` is given, ``false`` keeping the frozen networks fp32; ``fp16`` scales the loss);
* ``channels_last``: :class:`~dckd_basicsr.training.frozen.FrozenNetworks` (teacher, history model and encoder);
* ``compile`` (``true`` or a ``torch.compile`` mode) and ``compile_strict``:
  :class:`~dckd_basicsr.training.compilation.Compiler`;
* a model may know more keys (DCKD: ``negatives_per_pass``), kept in :attr:`FastOptions.extra`.
"""
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Sequence

import torch

from dckd_basicsr.errors import OptionError
from dckd_basicsr.training import precision

COMPILE_MODES = ('default', 'reduce-overhead', 'max-autotune', 'max-autotune-no-cudagraphs')
# The keys every model understands; a model adds its own (FAST_KEYS of the model class).
KEYS = ('amp', 'autocast', 'channels_last', 'compile', 'compile_strict')


def _precision(fast: Dict[str, Any], key: str, default: Optional[str] = None) -> Optional[str]:
    value = fast.get(key, default) or None
    if value is not None and value not in precision.AUTOCAST_DTYPES:
        raise OptionError(f'train.fast.{key}: {value!r}; use bf16, fp16 or false.')
    return value


def _compile_mode(fast: Dict[str, Any]) -> Optional[str]:
    value = fast.get('compile', False)
    if value is None or value is False:
        return None
    if value is True:
        return 'default'
    if value not in COMPILE_MODES:
        raise OptionError(f'train.fast.compile: {value!r}; use true, false or a torch.compile mode '
                          f'({", ".join(COMPILE_MODES)}).')
    return value


@dataclass
class FastOptions:
    """``train.fast`` of one model, checked.

    Attributes:
        amp: Precision of the whole step (``bf16``, ``fp16``) or None.
        autocast: Precision of the frozen networks or None (``amp``'s unless given).
        channels_last: Frozen networks and their inputs in channels_last memory format.
        compile: ``torch.compile`` mode or None.
        compile_strict: A failing compilation is an error instead of a warning.
        extra: The model's own keys (e.g. DCKD's ``negatives_per_pass``), as given.
    """
    amp: Optional[str] = None
    autocast: Optional[str] = None
    channels_last: bool = False
    compile: Optional[str] = None
    compile_strict: bool = False
    extra: Dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, fast: Optional[Dict[str, Any]], known: Sequence[str], device: torch.device,
              model: str) -> 'FastOptions':
        """Check ``fast`` (None or empty: exact fp32) against the keys ``known`` to ``model`` (a class name, for
        messages) and against what torch supports on ``device``."""
        fast = fast or {}
        if not isinstance(fast, dict):
            raise OptionError(f'train.fast: {fast!r}; give a mapping, e.g. {{autocast: bf16, channels_last: true}}.')
        unknown = sorted(set(fast) - set(known))
        if unknown:
            raise OptionError(f'train.fast.{unknown[0]}: unknown key; {model} knows {", ".join(known)}.')
        amp = _precision(fast, 'amp')
        autocast = _precision(fast, 'autocast', amp)  # amp implies autocast of the frozen networks unless given
        for key, value in (('amp', amp), ('autocast', autocast)):
            if value == 'fp16' and not precision.fp16_supported(device):
                raise OptionError(f'train.fast.{key}: fp16; torch {torch.__version__} has no fp16 autocast on '
                                  f'{device.type}; use bf16.')
        return cls(amp=amp, autocast=autocast, channels_last=bool(fast.get('channels_last', False)),
                   compile=_compile_mode(fast), compile_strict=bool(fast.get('compile_strict', False)),
                   extra={key: value for key, value in fast.items() if key not in KEYS})
