"""A trained student (or any network of an option file) built and loaded from its checkpoint, ready to run.

The network comes from an option file's ``network_g`` block or, without one, is detected from the checkpoint's keys
and shapes (:mod:`dckd_basicsr.checkpoints.detect`), so a bare BasicSR ``net_g_<iter>.pth`` of a SwinIR, RCAN, EDSR,
MSRResNet, NAFNet or Restormer student, or of a spandrel architecture (SPAN, RealPLKSR, SAFMN, ...), needs nothing
else. The EMA weights (``params_ema``) are used when the file has them, else ``params``. ``dckd-infer``,
``dckd-export`` and ``dckd-profile`` load their networks here.

A file without BasicSR's ``params``/``params_ema`` wrapper (what ``dckd-export --to spandrel`` writes, or a release
spandrel reads) is read as spandrel reads it: a spandrel architecture whose spandrel call maps the output
(MixDehazeNet) gets the weights that compute what spandrel computes. A spandrel student's inputs are padded as
spandrel pads them, not to a ``window_size`` of its options: to the multiple its size requirements ask for, outside
the network by validation's rule (so exported graphs keep it; spandrel's rule is the same for an image larger than the
padding), or, where the requirements also set a minimum size or a square, by the network itself.
"""
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from basicsr.archs import build_network
from torch import nn

from dckd_basicsr.archs.arch_util import input_channels, switch_to_deploy
from dckd_basicsr.archs.spandrel_students_arch import option_values, spandrel_arch
from dckd_basicsr.checkpoints import load_pretrained
from dckd_basicsr.checkpoints.detect import DetectedNetwork, detect_network
from dckd_basicsr.errors import ConversionError
from dckd_basicsr.checkpoints.safe_load import extract_state_dict, load_checkpoint_file
from dckd_basicsr.errors import OptionError
from dckd_basicsr.options import read_option_file, validation_pad_multiple


@dataclass
class Student:
    """A network ready to run, and how it was obtained.

    Attributes:
        net: The network in eval mode, weights loaded strictly, in its deployed form (SPAN's fused convolutions).
        opt: Its ``network_g`` block.
        pad_multiple: Inputs are padded to a multiple of this (validation's rule).
        param_key: The checkpoint key the weights came from (``params_ema``, ``params``; None for a raw state dict).
        source: ``'-opt FILE'`` or ``'detected'``.
        assumed: Hyperparameters the weights do not determine (detection only).
    """
    net: nn.Module
    opt: Dict
    pad_multiple: int = 1
    param_key: Optional[str] = None
    source: str = 'detected'
    assumed: List[str] = field(default_factory=list)

    @property
    def input_channels(self) -> int:
        return input_channels(self.net)

    def describe(self) -> str:
        """What was loaded, for the command's first line of output."""
        args = ', '.join(f'{k}: {v}' for k, v in self.opt.items() if k != 'type')
        text = (f"{self.opt['type']} ({args}) from {self.source}, weights '{self.param_key or 'state dict'}', "
                f'inputs padded to a multiple of {self.pad_multiple}')
        if self.assumed:
            text += '\n  not in the weights, assumed (give -opt FILE if the student differs): ' + '; '.join(
                self.assumed)
        return text


def load_student(model_path: str, opt_path: Optional[str] = None, network: str = 'network_g') -> Student:
    """Build the network and load the checkpoint's weights (``params_ema`` when present, else ``params``).

    Args:
        model_path: A BasicSR ``net_g_<iter>.pth`` (or any checkpoint ``dckd-convert`` formats read, with ``-opt``).
        opt_path: An option file whose ``network`` block builds the network; None detects it from the weights.
        network: The block of the option file (``network_g``, or ``network_t`` to run a teacher).

    Raises:
        OptionError: naming ``--model`` or ``-opt``: missing or unreadable file, no such block, undetectable
            network, weights that do not fit.
    """
    if opt_path:
        opt = read_option_file(opt_path)
        net_opt = opt.get(network)
        if not isinstance(net_opt, dict) or 'type' not in net_opt:
            blocks = [k for k, v in opt.items() if k.startswith('network_') and isinstance(v, dict)]
            raise OptionError(f'-opt {opt_path} has no {network} block with a type; it has: '
                              f'{", ".join(blocks) or "no network_* block"}.')
        net_opt = dict(net_opt)
        net = build_network(dict(net_opt))
        report = load_pretrained(net, model_path, fmt='auto', param_key='params_ema', strict=True, option='--model')
        student = Student(net, net_opt, validation_pad_multiple(opt, network), report['param_key'], f'-opt {opt_path}')
    else:
        raw = load_checkpoint_file(model_path, option='--model')
        try:
            state_dict, used = extract_state_dict(raw, 'params_ema',
                                                  trusted_option='dckd-convert --trusted, then use the file it writes')
        except ConversionError as error:
            raise OptionError(f'--model {model_path}: {error}') from error
        detected: DetectedNetwork = detect_network(state_dict, source=f'--model {model_path}')
        net = build_network(dict(detected.opt))
        try:
            net.load_state_dict(detected.weights if detected.weights is not None else state_dict, strict=True)
        except RuntimeError as error:
            problems = '; '.join(line.strip() for line in str(error).splitlines()[1:4])
            raise OptionError(f'--model {model_path}: detected {detected.describe()}, but the weights do not fit it '
                              f'({problems}); give the network with -opt FILE.') from error
        student = Student(net, detected.opt, detected.pad_multiple, used, 'the checkpoint\'s keys (detected)',
                          detected.assumed)
    arch = spandrel_arch(student.opt['type'])
    if arch is not None:
        if arch.for_spandrel is not None and student.param_key is None:  # a file in spandrel's convention
            student.net.load_state_dict(arch.for_spandrel(student.net.state_dict(), True))
        minimum, multiple, square = arch.size_requirements(option_values(arch, student.opt))
        student.pad_multiple = 1 if square or minimum > multiple else multiple
    switch_to_deploy(student.net.eval().requires_grad_(False))
    return student
