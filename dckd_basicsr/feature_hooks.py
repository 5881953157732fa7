"""Structure-agnostic feature taps for feature-level KD (FAKD): forward hooks on modules named in the options.

A :class:`FeatureRecorder` hooks the modules of a network by their ``named_modules()`` names (``body.3`` is the
fourth residual group of BasicSR's RCAN, ``layers.2`` the third RSTB of SwinIR) and keeps what they return during
the forward passes it is enabled for. Token outputs ``(B, H*W, C)`` of transformer stages (SwinIR's RSTB returns
tokens and takes the spatial size as its second input) are turned back into ``(B, C, H, W)`` maps.

Defaults (:func:`default_feature_layers`), so that option files name nothing by hand: the output of every residual
group of ``RCAN`` (``body.0`` ... ``body.{num_group - 1}``) and of every RSTB of ``SwinIR``
(``layers.0`` ... ``layers.{len(depths) - 1}``). Student layer ``i`` of ``Gs`` is paired with teacher layer
``ceil((i + 1) * Gt / Gs) - 1`` of ``Gt`` (:func:`pair_layers`): the teacher layer at the same relative depth, so
the last student layer always meets the last teacher layer; with as many layers on both sides the pairing is the
identity (RCAN 10 groups -> 10 groups), and SwinIR 4 RSTB -> 6 RSTB pairs ``layers.0-3`` with ``layers.1, 2, 4, 5``.
"""
import contextlib
from typing import Any, Dict, Iterator, List, Optional, Sequence

from torch import Tensor, nn

from dckd_basicsr.errors import OptionError


def default_feature_layers(net_opt: Dict[str, Any]) -> Optional[List[str]]:
    """The module names FAKD taps by default for a network option block, or None for an unknown architecture."""
    arch = net_opt.get('type')
    if arch == 'RCAN':
        return [f'body.{i}' for i in range(int(net_opt.get('num_group', 10)))]
    if arch == 'SwinIR':
        return [f'layers.{i}' for i in range(len(net_opt.get('depths', [6, 6, 6, 6])))]
    return None


def pair_layers(num_student: int, teacher_layers: Sequence[str]) -> List[str]:
    """Teacher layer for each of ``num_student`` student layers: index ``ceil((i + 1) * Gt / Gs) - 1``."""
    num_teacher = len(teacher_layers)
    return [teacher_layers[-(-(i + 1) * num_teacher // num_student) - 1] for i in range(num_student)]


def _as_map(output: Any, inputs: tuple) -> Tensor:
    if isinstance(output, (tuple, list)):
        output = output[0]
    if output.dim() == 3:  # tokens (B, L, C): the spatial size is an (H, W) input of the module
        size = next((s for s in inputs if isinstance(s, (tuple, list)) and len(s) == 2
                     and int(s[0]) * int(s[1]) == output.size(1)), None)
        if size is None:
            raise ValueError(f'a hooked module returned tokens of shape {tuple(output.shape)} without an (H, W) input '
                             'giving their spatial size; hook a module that returns (B, C, H, W) maps.')
        output = output.transpose(1, 2).reshape(output.size(0), output.size(2), int(size[0]), int(size[1]))
    return output


class FeatureRecorder:
    """Keep the outputs of the named modules of ``net`` while :attr:`enabled` (see the module docstring).

    With ``only_in_training``, passes in eval mode (validation of a student without EMA) are not recorded.
    ``records[name]`` lists one map per recorded forward pass, oldest first; :meth:`clear` empties it. The hooks keep
    the autograd graph (the student's loss must reach its features); a network run under ``torch.no_grad()`` (the
    teacher) gives maps without one.
    """

    def __init__(self, net: nn.Module, layers: Sequence[str], option: str, only_in_training: bool = False):
        modules = dict(net.named_modules())
        unknown = [name for name in layers if name not in modules]
        if unknown:
            names = [name for name in modules if name and name.count('.') <= 1][:12]
            raise OptionError(f'{option}: no module named {", ".join(unknown)} in {type(net).__name__}; module '
                              f'names look like {", ".join(names)}, ...')
        self.layers = list(layers)
        self.enabled = True
        self.only_in_training = only_in_training
        self.records: Dict[str, List[Tensor]] = {name: [] for name in self.layers}
        self.handles = [modules[name].register_forward_hook(self._hook(name)) for name in self.layers]

    def _hook(self, name: str):

        def hook(module, inputs, output):
            if self.enabled and (module.training or not self.only_in_training):
                self.records[name].append(_as_map(output, inputs))

        return hook

    def first(self) -> List[Tensor]:
        """Per layer, the map of the first recorded pass since the last :meth:`clear`."""
        missing = [name for name in self.layers if not self.records[name]]
        if missing:
            raise RuntimeError(f'no forward pass through {", ".join(missing)} was recorded.')
        return [self.records[name][0] for name in self.layers]

    def clear(self) -> None:
        for records in self.records.values():
            records.clear()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Forward passes inside the block are not recorded."""
        enabled, self.enabled = self.enabled, False
        try:
            yield
        finally:
            self.enabled = enabled

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []
