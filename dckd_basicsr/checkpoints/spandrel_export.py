"""A student's weights in the official key layouts spandrel detects, with what spandrel cannot read folded in.

SwinIR and NAFNet keep BasicSR's keys (they are the official ones); BasicSR's RCAN keys are renamed to the official
RCAN layout (``head``, ``body``, ``tail``, ``sub_mean``/``add_mean``: :func:`~.official_layouts.rcan_to_official`).
Hyperparameters spandrel cannot read from the weights are folded into them: BasicSR's ``img_range`` (spandrel
assumes 255 for RCAN; 1 for SwinIR, 255 for window 7) scales the first and last convolutions, RCAN's ``rgb_mean``
goes into ``sub_mean``/``add_mean`` and its ``res_scale`` into each block's second convolution. spandrel 0.4 has no
EDSR, MSRResNet or Restormer architecture.
"""
from collections import OrderedDict
from typing import Callable, Dict

from torch import Tensor, nn

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


def spandrel_state_dict(student: Student) -> Dict[str, Tensor]:
    """The student's weights (float32, on the CPU) in the layout spandrel detects."""
    arch = student.opt['type']
    if arch not in SPANDREL_LAYOUTS:
        raise OptionError(f'{arch} cannot be exported for spandrel: spandrel has no {arch} architecture (it loads '
                          f'{", ".join(SPANDREL_LAYOUTS)} students from here); export to onnx or torchscript instead.')
    state_dict = OrderedDict((k, v.detach().float().cpu().clone()) for k, v in student.net.state_dict().items())
    return SPANDREL_LAYOUTS[arch](student.net, student.opt, state_dict)
