"""A student's weights in the official key layouts spandrel detects, with what spandrel cannot read folded in.

SwinIR and NAFNet keep BasicSR's keys (they are the official ones); BasicSR's RCAN keys are renamed to the official
RCAN layout (``head``, ``body``, ``tail``, ``sub_mean``/``add_mean``: :func:`~.official_layouts.rcan_to_official`).
Hyperparameters spandrel cannot read from the weights are folded into them: BasicSR's ``img_range`` (spandrel
assumes 255 for RCAN; 1 for SwinIR, 255 for window 7) scales the first and last convolutions, RCAN's ``rgb_mean``
goes into ``sub_mean``/``add_mean`` and its ``res_scale`` into each block's second convolution. spandrel 0.4 has no
EDSR, MSRResNet or Restormer architecture.

A student of a spandrel architecture (:mod:`dckd_basicsr.archs.spandrel_students_arch`: SPAN, RealPLKSR, SAFMN, ...)
keeps spandrel's module names, so its state dict is the file: SPAN's fused ``eval_conv`` weights hold the fusion of
its trained branches (its deployed form, refreshed by every ``state_dict()``), MixDehazeNet's last convolution absorbs
the output mapping of spandrel's call. Before anything is written the weights are read back by
``spandrel.ModelLoader`` (:func:`check_spandrel_reads`): spandrel must build the same class at the same scale, read
every option it cannot take from the weights (:attr:`~dckd_basicsr.archs.spandrel_students_arch.SpandrelArch.unread`:
ATD's ``category_size``, DCTLSA's ``num_head``, GRL's window and stripe sizes, SPAN's ``img_range``, ...) as the
student has it, and give the student's output; otherwise the export is refused with one message naming the option.
"""
from collections import OrderedDict
from typing import Callable, Dict

import torch
from torch import Tensor, nn

from dckd_basicsr.archs.spandrel_students_arch import SpandrelArch, option_values, same_value, spandrel_arch
from dckd_basicsr.checkpoints.official_layouts import rcan_to_official
from dckd_basicsr.checkpoints.students import Student
from dckd_basicsr.errors import OptionError


def _swinir(net: nn.Module, opt: Dict, state_dict: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """SwinIR: BasicSR's keys are the official ones; fold ``img_range`` into the range spandrel assumes."""
    img_range = float(opt.get('img_range', 1.))
    assumed = 255. if int(opt.get('window_size', 7)) == 7 else 1.
    if img_range != assumed:
        ratio = img_range / assumed
        state_dict['conv_first.weight'] = state_dict['conv_first.weight'] * ratio
        last = 'upsample.0' if opt.get('upsampler') == 'pixelshuffledirect' else 'conv_last'
        for suffix in ('weight', 'bias'):
            state_dict[f'{last}.{suffix}'] = state_dict[f'{last}.{suffix}'] / ratio
    return state_dict


def _rcan(net: nn.Module, opt: Dict, state_dict: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """RCAN: the official layout, with ``img_range``, ``rgb_mean`` and ``res_scale`` folded into the weights."""
    return rcan_to_official(state_dict, num_group=len(net.body), num_block=len(net.body[0].residual_group),
                            img_range=float(net.img_range), res_scale=float(net.body[0].residual_group[0].res_scale),
                            rgb_mean=net.mean)


SPANDREL_LAYOUTS: Dict[str, Callable[[nn.Module, Dict, Dict[str, Tensor]], Dict[str, Tensor]]] = {
    'SwinIR': _swinir,
    'RCAN': _rcan,
    'NAFNet': lambda net, opt, state_dict: state_dict,
}


def spandrel_state_dict(student: Student, atol: float = 1e-5) -> Dict[str, Tensor]:
    """The student's weights (float32, on the CPU) in the layout spandrel detects; for a spandrel architecture,
    checked by :func:`check_spandrel_reads` (outputs within ``atol``) before anything is written."""
    arch = student.opt['type']
    spandrel = spandrel_arch(arch)
    if spandrel is not None:
        state_dict = OrderedDict((key, (value.float() if value.is_floating_point() else value).detach().cpu().clone())
                                 for key, value in student.net.state_dict().items())  # index buffers stay integers
        if spandrel.for_spandrel is not None:
            state_dict = OrderedDict(spandrel.for_spandrel(state_dict, False))
        check_spandrel_reads(student, spandrel, state_dict, atol)
        return state_dict
    if arch not in SPANDREL_LAYOUTS:
        raise OptionError(f'{arch} cannot be exported for spandrel: spandrel has no {arch} architecture (it loads '
                          f'{", ".join(SPANDREL_LAYOUTS)} students from here); export to onnx or torchscript instead.')
    state_dict = OrderedDict((k, v.detach().float().cpu().clone()) for k, v in student.net.state_dict().items())
    return SPANDREL_LAYOUTS[arch](student.net, student.opt, state_dict)


def _refuse(type_name: str, reason: str, fix: str = '') -> OptionError:
    return OptionError(f'{type_name} cannot be exported for spandrel: {reason}; {fix}export to onnx or torchscript '
                       'instead.')


def _value(value) -> str:
    """An option value as an option file writes it."""
    if isinstance(value, (list, tuple)):
        return '[' + ', '.join(_value(v) for v in value) + ']'
    return repr(value) if isinstance(value, str) else str(value)


def check_spandrel_reads(student: Student, arch: SpandrelArch, state_dict: Dict[str, Tensor],
                         atol: float = 1e-5) -> None:
    """OptionError unless ``spandrel.ModelLoader`` reads ``state_dict`` back as the student: the same class and scale,
    each :attr:`~dckd_basicsr.archs.spandrel_students_arch.SpandrelArch.unread` option as the student has it, and the
    student's eval output (clamped to [0, 1], as spandrel clamps) within ``atol`` on an input meeting the arch's size
    requirements. The message names the option, the student's value and the one spandrel reads."""
    import spandrel
    version = f'spandrel {spandrel.__version__}'
    type_name = student.opt['type']
    try:
        tensors = OrderedDict((key, value.clone()) for key, value in state_dict.items())  # spandrel edits its input
        descriptor = spandrel.ModelLoader().load_from_state_dict(tensors)
    except Exception as error:  # noqa: B902  (any failure of spandrel's loader is the reason)
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise _refuse(type_name, f'{version} cannot load its weights ({type(error).__name__}: '
                      f'{first[:200]})') from error
    model = descriptor.model
    if type(model) is not arch.network_class:
        raise _refuse(type_name, f'{version} detects its weights as {descriptor.architecture.id} '
                      f'({type(model).__name__}), not {arch.name}')
    scale = student.net.upscale_factor
    if descriptor.scale != scale:
        raise _refuse(type_name, f'{version} reads its weights as x{descriptor.scale}, the student is x{scale}')
    ours = option_values(arch, student.opt)
    read = getattr(model, 'hyperparameters', {})
    for key in arch.unread:
        if key in ours and key in read and not same_value(ours[key], read[key]):
            raise _refuse(type_name, f'{key}: {_value(ours[key])} is not stored in the weights, and {version} '
                          f'assumes {key}: {_value(read[key])} when it reads the file, so it would load a different '
                          'network', f'train the student with {key}: {_value(read[key])} to export it for spandrel, '
                          'or ')
    minimum, multiple, square = arch.size_requirements(ours)
    size = -(-max(16, minimum) // multiple) * multiple
    x = torch.rand(1, descriptor.input_channels, size, size, generator=torch.Generator().manual_seed(0))
    model.eval()
    with torch.no_grad():
        expected = student.net.eval()(x.clone()).float().clamp(0, 1)
        got = descriptor(x.clone())
    diff = (got - expected).abs().max().item() if got.shape == expected.shape else float('inf')
    if not diff <= atol:
        differing = [f'{key}: {_value(ours[key])} (spandrel: {_value(read[key])})'
                     for key in sorted(set(ours) & set(read)) if not same_value(ours[key], read[key])]
        options = f'; the options it reads differently: {", ".join(differing)}' if differing else ''
        raise _refuse(type_name, f'{version} loads its weights as a network whose output differs from the '
                      f'student\'s by {diff:.3g} > {atol:g} on a {size}x{size} input{options}')
