"""The converter contract and :data:`CHECKPOINT_REGISTRY`, with the detectors behind ``format: auto``.

A converter is ``fn(state_dict, net) -> Conversion | dict``: it receives the checkpoint's tensors (already unwrapped
and without ``module.``) and the bare network, and returns the tensors under the network's names. Keys it does not
recognise are returned unchanged, so that they show up as unexpected.

A converter registers itself, under its function name, together with its detector, ``detect(state_dict, net,
wrapper) -> bool`` (``wrapper``: the key the tensors were under, e.g. ``'params'``, or None for a raw state dict;
``net`` is None when ``dckd-convert`` detects the format to infer the network from the checkpoint)::

    from dckd_basicsr.checkpoints import register_converter

    @register_converter(detect=lambda state_dict, net, wrapper: any(k.startswith('backbone.') for k in state_dict))
    def my_format(state_dict, net):
        return {key.replace('backbone.', '', 1): value for key, value in state_dict.items()}

Import that code before the model is built (e.g. from the module that registers your arch). ``format: my_format``
selects it by name, and ``format: auto`` asks it too. Auto-detection (:func:`detect_format`) asks the detectors by
descending ``priority``, in registration order where priorities are equal, and takes the first that says yes:

=========  ===================  =================================================================================
priority   format               detector
=========  ===================  =================================================================================
1000       ``spandrel``         the network is a ``SpandrelTeacher`` (spandrel then detects the architecture)
400        ``taming``           ``quantize.embedding.weight`` or ``encoder.conv_in.*``; in a ``params`` /
                                ``params_ema`` file only with decoder or loss keys to drop (else it is ``basicsr``)
310        ``rcan_official``    spandrel's RCAN detector (``head.0``/``head.1``, ``tail.1``, ``body.0.body.0.body.0``,
                                channel attention ``body.0.body.0.body.3.conv_du.0``)
300        ``edsr_official``    ``head.0.weight``, ``tail.*`` and no channel attention
200        ``swinir_official``  ``*relative_position_bias_table`` and a network with ``patch_embed``
100        (default)            converters registered with :func:`register_converter` without a priority
=========  ===================  =================================================================================

A converter may also come with ``infer(state_dict) -> network options``: the BasicSR network block (with ``type``)
that the checkpoint's keys and shapes determine, which ``dckd-convert`` uses when no ``--arch`` / ``-opt`` is given
(:func:`infer_network`).

When no detector says yes, the names are taken as they are: ``basicsr`` for ``params`` / ``params_ema`` files,
``state_dict`` otherwise. Those two, and converters registered with plain ``CHECKPOINT_REGISTRY.register()``, have no
detector; they are used by name, or as that fallback.
"""
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, TypeVar

import torch
from basicsr.utils.registry import Registry
from torch import nn

from dckd_basicsr.errors import ConversionError  # noqa: F401  (part of the converter contract)

CHECKPOINT_REGISTRY = Registry('checkpoint')

# Detector signature: (state_dict, net, wrapper key or None) -> whether the converter handles this checkpoint.
Detector = Callable[[Mapping[str, torch.Tensor], nn.Module, Optional[str]], bool]
# Inference signature: state_dict -> the network option block (with `type`) the converter's target must have.
Inferrer = Callable[[Mapping[str, torch.Tensor]], Dict[str, Any]]
DEFAULT_PRIORITY = 100
# Taken when no detector recognises the file, by the wrapper the tensors were under.
FALLBACK_FORMATS = ('basicsr', 'state_dict')

ConverterT = TypeVar('ConverterT', bound=Callable)


@dataclass
class Conversion:
    """What a converter returns.

    Attributes:
        state_dict: tensors under the network's names.
        sources: network key -> checkpoint key it came from (for the report).
        dropped: checkpoint key -> why it is left out on purpose.
        recomputed: network key -> why the network keeps its own value (buffers derived from the arch options).
    """
    state_dict: Dict[str, torch.Tensor] = field(default_factory=OrderedDict)
    sources: Dict[str, str] = field(default_factory=OrderedDict)
    dropped: Dict[str, str] = field(default_factory=OrderedDict)
    recomputed: Dict[str, str] = field(default_factory=OrderedDict)

    def take(self, target: str, source: str, tensors: Mapping[str, torch.Tensor]) -> None:
        self.state_dict[target] = tensors[source]
        self.sources[target] = source


def register_converter(detect: Optional[Detector] = None,
                       priority: int = DEFAULT_PRIORITY,
                       infer: Optional[Inferrer] = None) -> Callable[[ConverterT], ConverterT]:
    """Decorator: register a converter in :data:`CHECKPOINT_REGISTRY` under its name, with its detector.

    Args:
        detect: ``detect(state_dict, net, wrapper) -> bool``; None keeps the converter out of auto-detection (it is
            then used only by name).
        priority: detectors with a higher priority are asked first (see the table in this module's docstring).
        infer: ``infer(state_dict) -> network options`` (see :func:`infer_network`); None when the checkpoint does
            not determine the network.
    """

    def deco(converter: ConverterT) -> ConverterT:
        converter.detect = detect
        converter.priority = priority
        converter.infer = infer
        CHECKPOINT_REGISTRY.register(converter)
        return converter

    return deco


def detection_order() -> List[Tuple[str, Callable]]:
    """``(name, converter)`` of every registered converter with a detector, in the order ``auto`` asks them."""
    candidates = [(name, converter) for name, converter in CHECKPOINT_REGISTRY
                  if getattr(converter, 'detect', None) is not None]
    return sorted(candidates, key=lambda item: -item[1].priority)  # stable: registration order among equals


def detect_format(state_dict: Mapping[str, torch.Tensor], net: nn.Module, wrapper: Optional[str] = None) -> str:
    """Name of the converter for ``fmt: auto``: the first whose detector recognises the checkpoint, in
    :func:`detection_order`; else ``basicsr`` for a ``params`` / ``params_ema`` file and ``state_dict`` otherwise."""
    for name, converter in detection_order():
        if converter.detect(state_dict, net, wrapper):
            return name
    return 'basicsr' if wrapper in ('params', 'params_ema') else 'state_dict'


def infer_network(fmt: str, state_dict: Mapping[str, torch.Tensor]) -> Dict[str, Any]:
    """The BasicSR network block (``{'type': ..., options}``) that the checkpoint of format ``fmt`` determines, from
    its keys and shapes, through the converter's ``infer``.

    Raises:
        ConversionError: the format has no inference (say the network with ``--arch`` or ``-opt``), or the tensors
            describe a network that the format's target arch cannot hold.
    """
    converter = CHECKPOINT_REGISTRY.get(fmt)
    infer = getattr(converter, 'infer', None)
    if infer is None:
        able = [name for name, conv in CHECKPOINT_REGISTRY if getattr(conv, 'infer', None) is not None]
        raise ConversionError(f"format '{fmt}' does not determine the network from the checkpoint (formats that do: "
                              f"{', '.join(able)}); give it with --arch TYPE --arch-opt key=value or -opt FILE.")
    return infer(state_dict)
