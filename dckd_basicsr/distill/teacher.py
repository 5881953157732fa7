"""The frozen teacher: read from its checkpoint through the path options, and checked against the student and the
data before training.

* :func:`load_pretrained_network`: ``path.pretrain_network_<suffix>`` and its companion options, read through
  :func:`dckd_basicsr.checkpoints.load_pretrained` (the teacher, and DCKD's VQGAN encoder);
* :func:`check_spandrel_teacher`: what spandrel detected in a ``SpandrelTeacher``'s file against ``scale``,
  ``network_g`` and ``train.fast``;
* :func:`check_output_size`: a dry run of teacher and student on one input (same output size, no NaN/Inf).
"""
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from dckd_basicsr.archs.spandrel_arch import SpandrelTeacher
from dckd_basicsr.errors import OptionError
from dckd_basicsr.options import network_in_channels

# The spandrel descriptor flag that says whether a network runs in each train.fast precision.
AUTOCAST_SUPPORT = {'fp16': 'supports_half', 'bf16': 'supports_bfloat16'}


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


def check_spandrel_teacher(teacher: SpandrelTeacher, opt: Mapping[str, Any]) -> None:
    """What spandrel detected against the data's ``scale``, ``network_g``'s input channels and
    ``train.fast.autocast`` (or ``amp``, which implies it); OptionError naming the option, ``path.pretrain_network_t``
    and the detection."""
    path = (opt.get('path') or {}).get('pretrain_network_t')
    where = f'network_t (SpandrelTeacher, path.pretrain_network_t: {path}): {teacher.describe()}'
    scale = opt.get('scale')
    if scale is not None and int(scale) != teacher.scale:
        raise OptionError(f'scale: {scale}, but {where}; use a x{scale} teacher checkpoint (or data and a student '
                          f'of scale {teacher.scale}).')
    student_in = network_in_channels(opt.get('network_g') or {})
    if student_in != teacher.input_channels:
        raise OptionError(f'network_g takes {student_in} input channels, but {where}; the teacher sees the '
                          'student\'s input: use a teacher checkpoint for that many channels, or change '
                          'network_g.')
    fast = (opt.get('train') or {}).get('fast') or {}
    key = 'autocast' if 'autocast' in fast else 'amp'  # amp implies the frozen networks' autocast
    autocast = fast.get(key)
    if autocast in AUTOCAST_SUPPORT and not getattr(teacher, AUTOCAST_SUPPORT[autocast]):
        instead = 'bf16' if autocast == 'fp16' and teacher.supports_bfloat16 else 'false'
        raise OptionError(f'train.fast.{key}: {autocast}, but {where}, which spandrel marks as not supporting '
                          f'{autocast}; use {instead}.')
