"""Structure-agnostic feature taps for feature-level KD (FAKD): hooks on modules named in the options.

A :class:`FeatureRecorder` hooks the modules of a network by their ``named_modules()`` names and keeps, during the
forward passes it is enabled for, what they return (``body.2``: the output of the third residual group of
BasicSR's RCAN; ``layers.0``: of SwinIR's first RSTB) or, with the suffix ``:input``, what they receive
(``upsample:input``: the map RCAN's upsampler gets). Token outputs ``(B, H*W, C)`` of transformer stages (SwinIR's
RSTB returns tokens and takes the spatial size as its second input) are turned back into ``(B, C, H, W)`` maps.

Default taps (:func:`default_feature_layers`), the FAKD authors' for RCAN: their official code
(Vincent-Hoo/Knowledge-Distillation-for-Super-resolution, ``code/models/rcan.py`` forward, ``--features [1,2,3]``
in ``code/option.py`` and every ``code/scripts/train_rcan_SA_x*.sh``) distils three maps of the 10-group RCAN:
the outputs of residual groups 3 and 7 (0-based 2 and 6, skip connection included), and the end of the deep
feature extraction, i.e. the last body conv plus the long skip, the map the upsampler receives (their list
holds the ``body_tail`` output, which the in-place ``res += x`` that follows turns into that sum). Student and
teacher both have 10 groups (6 vs 20 blocks each), so the same positions are paired.

The rule behind them, applied to any number ``G`` of stages of each network on its own: the stages ending at
relative depths 0.3 and 0.7 of the body (stage ``max(1, round(f * G))``, 1-based) and the body's end. RCAN
(10 groups): ``body.2``, ``body.6``, ``upsample:input``. SwinIR, by the same principle: its RSTBs are the stages
and the body's end is ``conv_after_body`` plus the long skip, the input of ``conv_before_upsample``
(``pixelshuffle``, ``nearest+conv``), of ``upsample`` (``pixelshuffledirect``) or of ``conv_last`` (no upsampler);
the DCKD student (4 RSTB) gets ``layers.0`` (1.2 -> 1), ``layers.2`` (2.8 -> 3) and the body's end, the teacher
(6 RSTB) ``layers.1`` (1.8 -> 2), ``layers.3`` (4.2 -> 4) and its body's end: relative depths 0.25/0.75 against
0.33/0.67, the closest stage boundaries to the authors' 0.3/0.7. Pairs are taken in list order.

A spandrel architecture registered as a student (:mod:`dckd_basicsr.archs.spandrel_students_arch`) states its
stages and its body's end; the same rule picks the default taps among them (SPAN's six blocks: ``block_2``,
``block_4``, ``upsampler:input``).

A teacher loaded by spandrel (``network_t: {type: SpandrelTeacher}``) is tapped by the loaded network's own module
names, i.e. those of its checkpoint keys (``body.2`` of an official RCAN, ``layers.1`` of SwinIR), not the wrapper's
``model.*``. Its defaults follow the same rule for the spandrel RCAN (``body.<g>`` groups, the body's end
``tail:input``) and SwinIR; for other architectures ``teacher_layers`` must be given, and the error lists the
candidate module names.
"""
import contextlib
import math
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from dckd_basicsr.archs.spandrel_arch import SpandrelTeacher
from dckd_basicsr.archs.spandrel_students_arch import feature_stages
from dckd_basicsr.errors import OptionError
from dckd_basicsr.options import network_in_channels

# Relative depths of the stages FAKD taps by default: after groups 3 and 7 of RCAN's 10 (the authors' --features).
FAKD_DEPTHS = (0.3, 0.7)
INPUT_SUFFIX = ':input'
SWINIR_BODY_END = {'pixelshuffle': 'conv_before_upsample', 'nearest+conv': 'conv_before_upsample',
                   'pixelshuffledirect': 'upsample'}


def stage_at(fraction: float, num_stages: int) -> int:
    """0-based index of the stage ending nearest to ``fraction`` of ``num_stages`` (at least the first)."""
    return max(1, math.floor(fraction * num_stages + 0.5)) - 1


def default_feature_layers(net_opt: Dict[str, Any]) -> Optional[List[str]]:
    """The taps FAKD uses by default for a network option block (see the module docstring), or None for an unknown
    architecture: the stages at :data:`FAKD_DEPTHS`, then the end of the body."""
    arch = net_opt.get('type')
    if arch == 'RCAN':
        num_group = int(net_opt.get('num_group', 10))
        return [f'body.{stage_at(f, num_group)}' for f in FAKD_DEPTHS] + [f'upsample{INPUT_SUFFIX}']
    if arch == 'SwinIR':
        num_stages = len(net_opt.get('depths', [6, 6, 6, 6]))
        end = SWINIR_BODY_END.get(net_opt.get('upsampler', ''), 'conv_last')
        return [f'layers.{stage_at(f, num_stages)}' for f in FAKD_DEPTHS] + [f'{end}{INPUT_SUFFIX}']
    layout = feature_stages(net_opt)  # a spandrel arch registered as a student, when its stages are known
    if layout is not None:
        stages, end = layout
        return [stages[stage_at(f, len(stages))] for f in FAKD_DEPTHS] + [end]
    return None


def default_spandrel_layers(architecture: Optional[str], hyperparameters: Dict[str, Any]) -> Optional[List[str]]:
    """The default taps of a network spandrel built (a ``SpandrelTeacher``), by the same rule, for the architectures
    whose stages are known: spandrel's RCAN (``body.<g>`` groups, the body's end = ``tail:input``) and SwinIR
    (``layers.<i>``, the body's end = the input of its upsampler or of ``conv_last``); None otherwise."""
    if architecture == 'RCAN' and 'n_resgroups' in hyperparameters:
        groups = int(hyperparameters['n_resgroups'])
        return [f'body.{stage_at(f, groups)}' for f in FAKD_DEPTHS] + [f'tail{INPUT_SUFFIX}']
    if architecture == 'SwinIR' and 'depths' in hyperparameters:
        stages = len(hyperparameters['depths'])
        end = SWINIR_BODY_END.get(hyperparameters.get('upsampler', ''), 'conv_last')
        return [f'layers.{stage_at(f, stages)}' for f in FAKD_DEPTHS] + [f'{end}{INPUT_SUFFIX}']
    return None


def module_names(root: nn.Module, limit: int) -> List[str]:
    """Names of ``root``'s modules down to two levels (``body``, ``body.3``), at most ``limit``, for messages."""
    return [name for name, _ in root.named_modules() if name and name.count('.') <= 1][:limit]


def split_tap(layer: str) -> Tuple[str, bool]:
    """``'upsample:input'`` -> ``('upsample', True)``; ``'body.2'`` -> ``('body.2', False)``."""
    if layer.endswith(INPUT_SUFFIX):
        return layer[:-len(INPUT_SUFFIX)], True
    return layer, False


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


def feature_root(net: nn.Module) -> nn.Module:
    """The module whose ``named_modules()`` names the taps of ``net``: ``net`` itself, or the network a wrapper
    holds (a :class:`~dckd_basicsr.archs.spandrel_arch.SpandrelTeacher`'s loaded network, its ``feature_root``)."""
    root = getattr(net, 'feature_root', None)
    return net if root is None else root


class FeatureRecorder:
    """Keep the outputs (or, for ``name:input`` taps, the first inputs) of the named modules of ``net`` (of
    :func:`feature_root`) while :attr:`enabled` (see the module docstring).

    With ``only_in_training``, passes in eval mode (validation of a student without EMA) are not recorded.
    ``records[tap]`` lists one map per recorded forward pass, oldest first; :meth:`clear` empties it. A tap listed
    twice (tiny networks where two depths round to one stage) is hooked once. The hooks keep the autograd graph
    (the student's loss must reach its features); a network run under ``torch.no_grad()`` (the teacher) gives maps
    without one.
    """

    def __init__(self, net: nn.Module, layers: Sequence[str], option: str, only_in_training: bool = False):
        root = feature_root(net)
        modules = dict(root.named_modules())
        unknown = [name for name in layers if split_tap(name)[0] not in modules]
        if unknown:
            names = module_names(root, 12)
            raise OptionError(f'{option}: no module named {", ".join(unknown)} in {type(root).__name__}; module '
                              f'names look like {", ".join(names)}, ... (append {INPUT_SUFFIX} to record what a '
                              'module receives instead of what it returns)')
        self.layers = list(layers)
        self.enabled = True
        self.only_in_training = only_in_training
        self.records: Dict[str, List[Tensor]] = {name: [] for name in self.layers}
        self.handles = []
        for tap in self.records:
            name, is_input = split_tap(tap)
            if is_input:
                self.handles.append(modules[name].register_forward_pre_hook(self._pre_hook(tap)))
            else:
                self.handles.append(modules[name].register_forward_hook(self._hook(tap)))

    def _record(self, tap: str, module: nn.Module, value: Any, inputs: tuple) -> None:
        if self.enabled and (module.training or not self.only_in_training):
            self.records[tap].append(_as_map(value, inputs))

    def _hook(self, tap: str):

        def hook(module, inputs, output):
            self._record(tap, module, output, inputs)

        return hook

    def _pre_hook(self, tap: str):

        def hook(module, inputs):
            self._record(tap, module, inputs[0], inputs)

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


class FeaturePairs:
    """The student and teacher maps FAKD compares (``train.fakd_opt``): one :class:`FeatureRecorder` on each network,
    taps paired in list order.

    ``student_layers`` / ``teacher_layers`` of the option block default to :func:`default_feature_layers` of each
    network. A dry run on a small input checks, before training, that paired maps have the same spatial size.

    Args:
        fakd_opt: The ``train.fakd_opt`` block.
        student_opt, teacher_opt: ``network_g`` and ``network_t`` option blocks (for the defaults and messages).
        student, teacher: The bare student and the frozen teacher.
    """

    def __init__(self, fakd_opt: Dict[str, Any], student_opt: Dict[str, Any], teacher_opt: Dict[str, Any],
                 student: nn.Module, teacher: nn.Module):
        student_layers = fakd_opt.get('student_layers') or default_feature_layers(student_opt)
        teacher_layers = fakd_opt.get('teacher_layers') or default_feature_layers(teacher_opt)
        if teacher_layers is None and isinstance(teacher, SpandrelTeacher):
            teacher_layers = default_spandrel_layers(teacher.architecture, teacher.hyperparameters)
            if teacher_layers is None:
                candidates = module_names(teacher.feature_root, 40)
                raise OptionError(f'train.fakd_opt.teacher_layers: missing, and there is no default for the '
                                  f'{teacher.describe()} (defaults exist for RCAN and SwinIR); list one module of '
                                  'the loaded network per student layer (its own names, append :input for what a '
                                  f'module receives), e.g. from: {", ".join(candidates)}.')
        if student_layers is None:
            raise OptionError(f"train.fakd_opt.student_layers: missing, and there is no default for network_g.type "
                              f"{student_opt.get('type')!r} (defaults exist for RCAN and SwinIR); list the student "
                              'modules whose outputs to distil, e.g. [body.2, body.6, upsample:input].')
        if teacher_layers is None:
            raise OptionError(f"train.fakd_opt.teacher_layers: missing, and there is no default for network_t.type "
                              f"{teacher_opt.get('type')!r}; list one teacher module per student layer.")
        if len(teacher_layers) != len(student_layers):
            raise OptionError(f'train.fakd_opt: {len(student_layers)} student_layers but {len(teacher_layers)} '
                              'teacher_layers; give one teacher layer per student layer.')
        self.student = FeatureRecorder(student, student_layers, 'train.fakd_opt.student_layers',
                                       only_in_training=True)
        self.teacher = FeatureRecorder(teacher, teacher_layers, 'train.fakd_opt.teacher_layers')
        self.check_shapes(student, teacher, network_in_channels(student_opt))

    def check_shapes(self, student: nn.Module, teacher: nn.Module, channels: int, size: int = 16) -> None:
        """Run both networks once on a ``size`` x ``size`` input: every paired map must have the same spatial size."""
        x = torch.zeros(1, channels, size, size, device=next(student.parameters()).device)
        was_training = student.training
        student.eval()  # no batch-norm statistics updated by the dry run; record it although in eval mode
        self.student.only_in_training = False
        with torch.no_grad():
            student(x)
            teacher(x)
        self.student.only_in_training = True
        student.train(was_training)
        pairs = zip(self.student.layers, self.student.first(), self.teacher.layers, self.teacher.first())
        self.clear()
        for s_name, s_map, t_name, t_map in pairs:
            if s_map.dim() != 4 or t_map.dim() != 4 or s_map.shape[-2:] != t_map.shape[-2:]:
                raise OptionError(f'train.fakd_opt: student layer {s_name} gives {tuple(s_map.shape)} and teacher '
                                  f'layer {t_name} {tuple(t_map.shape)} for a {size}x{size} input; paired maps need '
                                  'the same spatial size (channels may differ).')

    def maps(self, batch: int) -> Tuple[List[Tensor], List[Tensor]]:
        """The maps of this step's student pass and of the teacher's pass on the LQ batch (its first ``batch``
        samples, fp32), then forgets them."""
        student, teacher = self.student.first(), [t[:batch].float() for t in self.teacher.first()]
        self.clear()
        return student, teacher

    def clear(self) -> None:
        self.student.clear()
        self.teacher.clear()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Forward passes inside the block are recorded by neither network (DUKD's upcycling step)."""
        with self.student.paused(), self.teacher.paused():
            yield

