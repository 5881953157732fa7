"""spandrel's trainable SR and restoration networks as ordinary BasicSR archs: students (and teachers) of any model.

::

    network_g: {type: SPAN, num_in_ch: 3, num_out_ch: 3, feature_channels: 48, upscale: 4}
    network_g: {type: RealPLKSR, dim: 64, n_blocks: 12, upscaling_factor: 4}

Every architecture of :data:`ARCHS` is registered in BasicSR's ``ARCH_REGISTRY`` as a subclass of the network class
spandrel's architecture package exports (``spandrel.architectures.SPAN.SPAN``), built from the option block's keys as
that class's keyword arguments. The network is the raw ``nn.Module``: no descriptor (spandrel's descriptors switch to
``eval()``, run under ``inference_mode`` and clamp the output), the same module and parameter names as spandrel's
(so its state dict is the one spandrel reads, and FAKD taps name its modules), and BasicSR's ``train()``/``eval()``.
Only ``spandrel`` itself is used: ``spandrel_extra_arches`` carries non-commercial licences.

**Names.** The name spandrel's architecture package exports (``SPAN``, ``RealPLKSR``, ``ESRGAN``, ``Compact``,
``UpCunet4x``), unless BasicSR or another arch of this plugin already registers it: then ``Spandrel`` followed by that
name (:func:`registered_name`). With BasicSR 1.4.2 and this plugin that gives ``SpandrelSwinIR``, ``SpandrelRCAN``
and ``SpandrelNAFNet``; BasicSR's ``RRDBNet`` and ``SRVGGNetCompact`` keep their names, spandrel's are ``ESRGAN`` and
``Compact``.

**What the wrapper changes**, each invisible in the weights and the outputs:

* parameters the architecture's forward never uses (SwiftSRGAN's activation of blocks built without one, FFTformer's
  ``reduce_chan_level2``, HVICIDNet's ``I_LCA5`` whose output the forward overwrites, FDAT's unused half of each
  interaction module) are frozen (``requires_grad = False``): they would never change anyway, and DDP stops at the
  second iteration on parameters that get no gradient;
* SPAN's ``Conv3XC`` re-fuses its three-branch convolution into ``eval_conv`` on every eval-mode forward. Its fused
  weight and bias are derived, never learned: they become buffers (same state-dict keys), and they are re-fused before
  every ``state_dict()``, so a saved file, the EMA copy and DCKD's history model (built with ``load_state_dict``)
  always hold the fusion of their own branch weights;
* spandrel's RCAN multiplies its input by ``rgb_range`` in place: the wrapper hands it a copy, so the LQ batch that
  the teacher and the loss terms see is not scaled.
* an input that does not meet the arch's size requirements (spandrel's ``size_requirements``: SAFMN a multiple of 8,
  DRCT of 16, Uformer of 128, SCUNet at least 40 px, ...) is padded at the bottom and right as spandrel's own
  inference pads it (:func:`pad_as_spandrel`) and the output cropped back, so validation, ``dckd-infer`` and the
  models' dry runs take any image size and give what spandrel gives; training patches that meet them are not padded.

**Checks** (:func:`check_network_options`, :func:`check_precision`): an unknown keyword names the arch and the
arguments it accepts; a scale the arch cannot build is named with those it can (several archs silently build another
scale, e.g. SwiftSRGAN x2 for ``upscale_factor: 3``); a missing required keyword is named; a face-restoration,
inpainting, colourisation or otherwise refused architecture (:data:`REFUSED`) says why it cannot be a student; and
``train.fast.amp``/``autocast`` in a precision spandrel marks as unsupported (``supports_half``,
``supports_bfloat16``), or that fails to train, is refused in one line naming the arch and the option.
"""
import importlib
import inspect
import os
from dataclasses import dataclass, field
from os import path as osp
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Union

import torch
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from dckd_basicsr.archs.padding import pad_as_spandrel
from dckd_basicsr.errors import OptionError

PREFIX = 'Spandrel'
ANY_SCALE = 'any'
POW2_OR_3 = '1, 3 or a power of 2'
INPUT_SUFFIX = ':input'

# ---------------------------------------------------------------------------------------------- FAKD stages
Stages = Callable[[Dict[str, Any]], Tuple[List[str], str]]


def _numbered(pattern: str, count_key: Optional[str] = None, count: int = 0, first: int = 0) -> Callable:
    def names(options: Dict[str, Any]) -> List[str]:
        value = options[count_key] if count_key else count
        number = len(value) if isinstance(value, (list, tuple)) else int(value)
        return [pattern.format(first + i) for i in range(number)]

    return names


def _stages(stage_names: Callable, end: Union[str, Callable[[Dict[str, Any]], str]]) -> Stages:
    return lambda options: (stage_names(options), end(options) if callable(end) else end)


def _swinir_end(options: Dict[str, Any]) -> str:
    """The body's end of the SwinIR family: what its upsampler (or ``conv_last``) receives."""
    module = {'pixelshuffle': 'conv_before_upsample', 'nearest+conv': 'conv_before_upsample',
              'pixelshuffledirect': 'upsample'}.get(options.get('upsampler', 'pixelshuffle'), 'conv_last')
    return module + INPUT_SUFFIX


def _layers(count_key: str) -> Stages:
    return _stages(_numbered('layers.{}', count_key), _swinir_end)


# ---------------------------------------------------------------------------------------------- parameters never used
def _hat_overlap(options: Dict[str, Any]) -> Optional[str]:
    """HAT's overlapping cross-attention unfolds windows of ``window_size + int(window_size * overlap_ratio)`` with a
    padding of half the extra; an odd extra loses a row and the attention's reshape fails (spandrel's default
    window 7 does)."""
    window, ratio = options.get('window_size', 7), options.get('overlap_ratio', 0.5)
    extra = int(window * ratio)
    if extra % 2:
        return (f'window_size {window} with overlap_ratio {ratio} gives an overlapping window of {window + extra}, '
                f'which HAT\'s attention cannot unfold (int(window_size * overlap_ratio) must be even; the released '
                'HAT models use window_size: 16)')
    return None


def _inactive_activations(net: nn.Module) -> Iterator[nn.Parameter]:
    for module in net.modules():
        if getattr(module, 'use_act', True) is False and isinstance(getattr(module, 'act', None), nn.Module):
            yield from module.act.parameters()


def _submodule(name: str) -> Callable[[nn.Module], Iterator[nn.Parameter]]:
    return lambda net: net.get_submodule(name).parameters()


def _unused_interaction(net: nn.Module) -> Iterator[nn.Parameter]:
    """FDAT: a spatial block modulates by channel (``cg``), a channel block by space (``sg``); the other is unused."""
    for module in net.modules():
        inter = getattr(module, 'inter', None)
        if hasattr(module, 'btype') and inter is not None:
            yield from (inter.sg if module.btype == 'spatial' else inter.cg).parameters()


# ---------------------------------------------------------------------------------------------- fixes
class FusedConvBuffers:
    """SPAN: ``eval_conv`` of every ``Conv3XC`` holds buffers, re-fused from the branch weights before
    ``state_dict()`` (see the module docstring). spandrel's eval forward re-fuses them too."""

    def _after_build(self) -> None:
        super()._after_build()
        for module in self.modules():
            conv = getattr(module, 'eval_conv', None)
            if not (isinstance(conv, nn.Conv2d) and callable(getattr(module, 'update_params', None))):
                continue
            for name in ('weight', 'bias'):
                value = getattr(conv, name)
                if isinstance(value, nn.Parameter):
                    delattr(conv, name)
                    conv.register_buffer(name, value.detach())
            module.register_state_dict_pre_hook(_fuse_again)


    def switch_to_deploy(self) -> None:
        """Fuse every ``Conv3XC`` once and run its ``eval_conv`` alone from now on, in either mode: the network as
        deployed, for inference and export only (spandrel's eval forward re-fuses on every call, which also costs
        time and FLOPs and cannot be traced by ``torch.export``)."""
        for module in self.modules():
            if isinstance(getattr(module, 'eval_conv', None), nn.Conv2d) and hasattr(module, 'update_params'):
                with torch.no_grad():
                    module.update_params()
                module.forward = module.eval_conv.forward

    def deployed_parameters(self) -> int:
        """The parameters of the deployed network: each ``Conv3XC`` counted as its fused ``eval_conv`` (SPAN-48:
        426,288 of 1,840,488 trained)."""
        total = sum(p.numel() for p in self.parameters())
        for module in self.modules():
            if isinstance(getattr(module, 'eval_conv', None), nn.Conv2d) and hasattr(module, 'update_params'):
                total -= sum(p.numel() for name, p in module.named_parameters() if not name.startswith('eval_conv.'))
                total += sum(b.numel() for b in module.eval_conv.buffers())
        return total


@torch.no_grad()
def _fuse_again(module: nn.Module, prefix: str, keep_vars: bool) -> None:
    module.update_params()


class CopiesInput:
    """spandrel's RCAN scales its input in place: give it a copy."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.clone())


# ---------------------------------------------------------------------------------------------- spandrel's call
StateDict = Dict[str, torch.Tensor]


def _mixdehazenet_for_spandrel(state_dict: StateDict, inverse: bool = False) -> StateDict:
    """MixDehazeNet computes ``(K + 1) * x - B`` from the last convolution's maps ``K, B``; spandrel's call returns
    ``0.5 * net(x) + 0.5`` (the authors' [-1, 1] output range). The last convolution mapped ``K, B -> 2K + 1, 2B + 1``
    (weight doubled, bias doubled plus one) makes spandrel's output equal the student's; ``inverse`` undoes it."""
    state_dict = dict(state_dict)
    weight, bias = 'patch_unembed.proj.0.weight', 'patch_unembed.proj.0.bias'
    if inverse:
        state_dict[weight], state_dict[bias] = state_dict[weight] / 2, (state_dict[bias] - 1) / 2
    else:
        state_dict[weight], state_dict[bias] = state_dict[weight] * 2, state_dict[bias] * 2 + 1
    return state_dict


# ---------------------------------------------------------------------------------------------- the table
@dataclass(frozen=True)
class SpandrelArch:
    """One trainable spandrel architecture and what a user and the plugin need to know about it.

    Attributes:
        name: The class name spandrel's architecture package exports.
        package: Its package, ``spandrel.architectures.<package>``.
        licence: The licence of its code (``__arch/LICENSE`` in spandrel's repository).
        scale_key: The constructor keyword holding the upscale factor; None when the class fixes it.
        scales: The factors it builds: :data:`ANY_SCALE`, :data:`POW2_OR_3` or a tuple.
        fp16, bf16: spandrel's ``supports_half`` / ``supports_bfloat16`` for it (its architecture loader's).
        fp16_needs: An option that must be true for spandrel's ``supports_half`` (RealPLKSR: ``layer_norm``).
        bf16_fails: Why it does not train under bf16 autocast although spandrel allows bf16, or None.
        stages: ``options -> (stage module names in order, body-end tap)`` for FAKD's default taps; None where the
            network has no such sequence of stages (U-Nets and the like: ``student_layers`` must be listed).
        unused: ``net -> parameters`` its forward never uses (frozen).
        fix: A class put before spandrel's in the registered class's bases.
        size: spandrel's ``size_requirements`` for it, ``(minimum, multiple_of, square)`` or a function of the
            options giving them: inputs that do not meet them are padded (see :class:`SpandrelStudent`).
        unread: Options that change the network's output but that spandrel's loader does not (always) read from the
            weights: it assumes a value (SPAN's ``img_range``, ATD's ``category_size``, ...). A network whose value
            differs from the one spandrel assumes is not the network spandrel loads from its file.
        for_spandrel: ``(state_dict, inverse) -> state_dict``: the weights that make spandrel's call of the
            network (which may transform its output) compute the student's function, and back; None when it is the
            identity.
        constraint: ``options -> why they cannot run`` (None when they can), for combinations the constructor
            accepts but the forward cannot compute.
        runnable: Options that make spandrel's defaults runnable where they are not (HAT's window of 7), for a
            network built with no options of the user's (a smoke run's stand-in).
        note: Anything else a user must know, for the README.
    """
    name: str
    package: str
    licence: str
    scale_key: Optional[str]
    scales: Union[str, Tuple[int, ...]]
    fp16: bool
    bf16: bool = True
    fp16_needs: Optional[str] = None
    bf16_fails: Optional[str] = None
    stages: Optional[Stages] = field(default=None, compare=False)
    unused: Optional[Callable[[nn.Module], Iterator[nn.Parameter]]] = field(default=None, compare=False)
    fix: Optional[type] = None
    size: Union[Tuple[int, int, bool], Callable[[Dict[str, Any]], Tuple[int, int, bool]]] = (0, 1, False)
    unread: Tuple[str, ...] = ()
    for_spandrel: Optional[Callable[[StateDict, bool], StateDict]] = field(default=None, compare=False)
    constraint: Optional[Callable[[Dict[str, Any]], Optional[str]]] = field(default=None, compare=False)
    runnable: Tuple[Tuple[str, Any], ...] = ()
    note: str = ''

    @property
    def network_class(self) -> type:
        return getattr(importlib.import_module(f'spandrel.architectures.{self.package}'), self.name)

    def builds(self, scale: int) -> bool:
        if self.scales == ANY_SCALE:
            return scale >= 1
        if self.scales == POW2_OR_3:
            return scale in (1, 3) or (scale >= 2 and scale & (scale - 1) == 0)
        return scale in self.scales

    def size_requirements(self, options: Dict[str, Any]) -> Tuple[int, int, bool]:
        """``(minimum, multiple_of, square)`` of the input, for the completed ``options``."""
        return self.size(options) if callable(self.size) else self.size

    def describe_scales(self) -> str:
        if self.scales == ANY_SCALE:
            return 'any integer factor'
        if self.scales == POW2_OR_3:
            return 'x1, x3 or a power of 2'
        return ', '.join(f'x{s}' for s in self.scales)


APACHE, MIT, BSD3, CC0 = 'Apache-2.0', 'MIT', 'BSD-3-Clause', 'CC0-1.0'
X1 = (1, )
KBA_BF16 = "the custom backward of its kernel-basis attention (spandrel's KBNet kb_utils) multiplies fp32 by bf16"

ARCHS: Tuple[SpandrelArch, ...] = (
    # ----- SR (x1 with a scale of 1)
    SpandrelArch('SPAN', 'SPAN', APACHE, 'upscale', ANY_SCALE, fp16=True, fix=FusedConvBuffers,
                 unread=('img_range', 'rgb_mean'),
                 stages=_stages(_numbered('block_{}', count=6, first=1), 'upsampler' + INPUT_SUFFIX)),
    SpandrelArch('RealPLKSR', 'PLKSR', MIT, 'upscaling_factor', ANY_SCALE, fp16=False, fp16_needs='layer_norm',
                 unread=('norm_groups', ),
                 stages=lambda o: (_numbered('feats.{}', 'n_blocks', first=1)(o),
                                   f'feats.{int(o["n_blocks"]) + 1}{INPUT_SUFFIX}')),
    SpandrelArch('PLKSR', 'PLKSR', MIT, 'upscaling_factor', ANY_SCALE, fp16=True,
                 unread=('use_max_kernel', 'sparse_kernels', 'sparse_dilations', 'with_idt'),
                 stages=lambda o: (_numbered('feats.{}', 'n_blocks', first=1)(o),
                                   f'feats.{int(o["n_blocks"]) + 1}{INPUT_SUFFIX}')),
    SpandrelArch('SAFMN', 'SAFMN', APACHE, 'upscaling_factor', ANY_SCALE, fp16=False, size=(0, 8, False),
                 stages=_stages(_numbered('feats.{}', 'n_blocks'), 'to_img' + INPUT_SUFFIX)),
    SpandrelArch('OmniSR', 'OmniSR', APACHE, 'up_scale', ANY_SCALE, fp16=True, size=(16, 1, False),
                 unread=('window_size', ),
                 stages=_stages(_numbered('residual_layer.{}', 'res_num'), 'up' + INPUT_SUFFIX)),
    SpandrelArch('DITN', 'DITN', APACHE, 'upscale', ANY_SCALE, fp16=True,
                 size=lambda o: (0, int(o['patch_size']), False), unread=('patch_size', ),
                 stages=_stages(_numbered('UFONE.{}', 'UFONE_blocks'), 'upsample' + INPUT_SUFFIX)),
    SpandrelArch('DCTLSA', 'DCTLSA', APACHE, 'upscale', ANY_SCALE, fp16=False, size=(16, 1, False),
                 unread=('num_head', ),
                 stages=_stages(_numbered('B{}', count=6, first=1), 'upsampler' + INPUT_SUFFIX),
                 note='num_modules must be 6 (the forward concatenates six blocks)'),
    SpandrelArch('MoSR', 'MoSR', MIT, 'upscale', ANY_SCALE, fp16=True,
                 stages=_stages(_numbered('gblocks.{}', 'n_block', first=1), 'upsampler' + INPUT_SUFFIX)),
    SpandrelArch('MoESR', 'MoESR', MIT, 'scale', ANY_SCALE, fp16=True, size=(2, 1, False),
                 stages=_stages(_numbered('blocks.{}', 'n_blocks'), 'upscale' + INPUT_SUFFIX)),
    SpandrelArch('FDAT', 'FDAT', MIT, 'scale', (1, 2, 3, 4), fp16=True, unused=_unused_interaction,
                 stages=_stages(_numbered('groups.{}', 'num_groups'), 'upsampler' + INPUT_SUFFIX)),
    SpandrelArch('Compact', 'Compact', BSD3, 'upscale', ANY_SCALE, fp16=True),
    SpandrelArch('SwiftSRGAN', 'SwiftSRGAN', CC0, 'upscale_factor', (1, 2, 4, 8), fp16=True,
                 unused=_inactive_activations,
                 stages=_stages(_numbered('residual.{}', 'num_blocks'), 'upsampler' + INPUT_SUFFIX)),
    SpandrelArch('ESRGAN', 'ESRGAN', APACHE, 'scale', (1, 2, 3, 4, 8), fp16=True,
                 size=lambda o: (2, 4 if o.get('shuffle_factor') else 1, False),
                 stages=_stages(_numbered('model.1.sub.{}', 'num_blocks'), 'model.1')),
    SpandrelArch('CRAFT', 'CRAFT', APACHE, 'upscale', ANY_SCALE, fp16=True, size=(16, 16, False),
                 unread=('window_size', 'qk_scale', 'img_range'),
                 note='its stages run on the input padded by a whole window, so FAKD needs student_layers listed'),
    SpandrelArch('SwinIR', 'SwinIR', APACHE, 'upscale', POW2_OR_3, fp16=False, size=(16, 1, False),
                 stages=_layers('depths'), unread=('qk_scale', 'img_range')),
    SpandrelArch('Swin2SR', 'Swin2SR', APACHE, 'upscale', POW2_OR_3, fp16=False, size=(16, 1, False),
                 stages=_layers('depths'), unread=('img_range', )),
    SpandrelArch('HAT', 'HAT', MIT, 'upscale', POW2_OR_3, fp16=False, size=(16, 1, False), stages=_layers('depths'),
                 unread=('conv_scale', 'qk_scale', 'img_range'), constraint=_hat_overlap,
                 runnable=(('window_size', 16), )),
    SpandrelArch('DRCT', 'DRCT', MIT, 'upscale', POW2_OR_3, fp16=False, size=(0, 16, False), stages=_layers('depths'),
                 unread=('img_range', )),
    SpandrelArch('ATD', 'ATD', APACHE, 'upscale', POW2_OR_3, fp16=False, size=(8, 1, False), stages=_layers('depths'),
                 unread=('category_size', 'img_range')),
    SpandrelArch('GRL', 'GRL', MIT, 'upscale', POW2_OR_3, fp16=False, stages=_layers('depths'),
                 unread=('window_size', 'stripe_size', 'anchor_window_down_factor', 'stripe_shift', 'img_range',
                         'pretrained_window_size', 'pretrained_stripe_size', 'euclidean_dist')),
    SpandrelArch('DAT', 'DAT', APACHE, 'upscale', POW2_OR_3, fp16=False, size=(16, 1, False), stages=_layers('depth'),
                 unread=('img_size', 'img_range')),
    SpandrelArch('RGT', 'RGT', APACHE, 'upscale', POW2_OR_3, fp16=False, size=(16, 1, False), stages=_layers('depth'),
                 unread=('qk_scale', 'img_range')),
    SpandrelArch('RCAN', 'RCAN', MIT, 'scale', POW2_OR_3, fp16=False, fix=CopiesInput,
                 unread=('rgb_range', 'res_scale'),
                 stages=_stages(_numbered('body.{}', 'n_resgroups'), 'tail' + INPUT_SUFFIX)),
    SpandrelArch('UpCunet2x', 'RealCUGAN', MIT, None, (2, ), fp16=True, size=(32, 1, False)),
    SpandrelArch('UpCunet2x_fast', 'RealCUGAN', MIT, None, (2, ), fp16=True, size=(40, 4, False)),
    SpandrelArch('UpCunet3x', 'RealCUGAN', MIT, None, (3, ), fp16=True, size=(32, 1, False)),
    SpandrelArch('UpCunet4x', 'RealCUGAN', MIT, None, (4, ), fp16=True, size=(32, 1, False)),
    # ----- restoration (x1)
    SpandrelArch('NAFNet', 'NAFNet', MIT, None, X1, fp16=False),
    SpandrelArch('SCUNet', 'SCUNet', APACHE, None, X1, fp16=True, size=(40, 1, False), unread=('input_resolution', )),
    SpandrelArch('KBNet_s', 'KBNet', MIT, None, X1, fp16=False, bf16_fails=KBA_BF16),
    SpandrelArch('KBNet_l', 'KBNet', MIT, None, X1, fp16=False, bf16_fails=KBA_BF16, size=(0, 16, False)),
    SpandrelArch('FFTformer', 'FFTformer', MIT, None, X1, fp16=False, size=(0, 32, False),
                 unused=_submodule('reduce_chan_level2')),
    SpandrelArch('Uformer', 'Uformer', MIT, None, X1, fp16=False, size=(0, 128, True),
                 unread=('qk_scale', 'shift_flag')),
    SpandrelArch('SAFMNBCIE', 'SAFMNBCIE', APACHE, None, X1, fp16=False, size=(0, 16, False)),
    SpandrelArch('RetinexFormer', 'RetinexFormer', MIT, None, X1, fp16=False, size=(0, 8, False)),
    SpandrelArch('HVICIDNet', 'HVICIDNet', MIT, None, X1, fp16=False, size=(0, 8, False),
                 unused=_submodule('I_LCA5')),
    SpandrelArch('MixDehazeNet', 'MixDehazeNet', MIT, None, X1, fp16=False, size=(40, 1, False),
                 for_spandrel=_mixdehazenet_for_spandrel),
    SpandrelArch('DnCNN', 'DnCNN', MIT, None, X1, fp16=False, note='mode: DnCNN only (FDnCNN takes a noise map)'),
)

FACE = ('it is a face-restoration network: it restores aligned 512x512 face crops at scale 1 through a pretrained '
        'face prior, so it cannot learn an SR mapping from LQ/GT patches')
INPAINTING = 'it is an inpainting network: it needs a mask with each image and fills the masked region'
EXTRA = ('it is in spandrel_extra_arches, whose licences forbid commercial use; the plugin registers the main '
         'spandrel package only')

# Architectures of spandrel (and of spandrel_extra_arches) that are not registered, and why.
REFUSED: Dict[str, str] = {
    'GFPGAN': FACE,
    'RestoreFormer': FACE,
    'CodeFormer': f'{FACE}; and {EXTRA}',
    'LaMa': INPAINTING,
    'MAT': f'{INPAINTING}; and {EXTRA}',
    'DDColor': ('it is a colourisation network: it predicts the colour of a grey image at scale 1, so it cannot '
                f'learn an SR mapping; and {EXTRA}'),
    'FBCNN': ('it returns (image, predicted JPEG quality), and its quality branch (the 512-channel qf_pred/qf_embed '
              'head) needs the quality labels of its own training, which an SR/KD loss lacks'),
    'MMRealSR': ("spandrel holds MM-RealSR's inference network (MMRRDBNet_test), whose degradation-degree branch is "
                 "trained from the degradation labels of MM-RealSR's own pipeline"),
    'IPT': ('it is a multi-task transformer whose position embeddings fix its input to patch_size x patch_size, '
            'while BasicSR validates on whole images'),
    'DRUNet': ('it takes the image plus a noise-level map (in_nc = image channels + 1; spandrel appends the map), '
               'while a student sees the image only'),
    'SeemoRe': ('its eval-mode forward routes the experts of one image only (topk_experts.squeeze(0)), while the '
                'DCKD history model, the KD dry run and batched validation run batches of several images'),
    'AuraSR': ('it is a GigaGAN upsampler with a fixed input size, a style network and a noise input, trained '
               'adversarially, which a KD loss on LQ patches cannot replace'),
}
REFUSED.update((name, EXTRA) for name in ('AdaCode', 'FeMaSR', 'M3SNet', 'MIRNet2', 'MPRNet', 'SRFormer'))


# ---------------------------------------------------------------------------------------------- the registered classes
class SpandrelStudent:
    """The part of every registered class that is not spandrel's: option checks before the network is built, the
    fixes of :class:`SpandrelArch` after, and inputs padded to the arch's size requirements (as spandrel's own
    inference pads them), so validation, inference and the dry runs take any image size; training patches that meet
    them (``gt_size / scale`` at least ``minimum`` and a multiple of ``multiple_of``) are not padded.
    ``spandrel_arch`` is the class's :class:`SpandrelArch`."""
    spandrel_arch: SpandrelArch

    def __init__(self, **options: Any):
        from spandrel import SizeRequirements
        arch = self.spandrel_arch
        resolve_options(type(self).__name__, arch, options)
        super().__init__(**options)
        values = option_values(arch, options)
        self.upscale_factor = network_scale(arch, values)
        minimum, multiple, square = arch.size_requirements(values)
        self.size_requirements = SizeRequirements(minimum=minimum, multiple_of=multiple, square=square)
        self._after_build()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """spandrel's forward, on ``x`` padded at the bottom and right to the arch's size requirements when it does
        not meet them (:func:`pad_as_spandrel`), the output cropped back."""
        height, width = x.shape[-2:]
        pad_w, pad_h = self.size_requirements.get_padding(width, height)
        if not (pad_w or pad_h):
            return super().forward(x)
        out = super().forward(pad_as_spandrel(x, pad_h, pad_w))
        return out[..., :height * self.upscale_factor, :width * self.upscale_factor]

    @property
    def input_channels(self) -> int:
        """The channels of the input, as spandrel's loader reads them from the weights (the first convolution in
        module order is not always the input's: OmniSR, RetinexFormer, SAFMNBCIE, UpCunet2x_fast); where spandrel
        cannot load them, the first convolution's."""
        if getattr(self, '_input_channels', None) is None:
            from spandrel import ModelLoader
            try:
                self._input_channels = int(ModelLoader().load_from_state_dict(self.state_dict()).input_channels)
            except Exception:  # noqa: B902  (a configuration spandrel cannot read)
                self._input_channels = next(m.in_channels for m in self.modules() if isinstance(m, nn.Conv2d))
        return self._input_channels

    def _after_build(self) -> None:
        if self.spandrel_arch.unused is not None:
            for parameter in self.spandrel_arch.unused(self):
                parameter.requires_grad_(False)


def registered_name(name: str, taken: Any) -> str:
    """The ``type`` under which spandrel's ``name`` is registered: ``name``, or ``Spandrel<name>`` when ``taken``
    (BasicSR's ``ARCH_REGISTRY`` with the plugin's other archs, at registration) holds ``name``."""
    return f'{PREFIX}{name}' if name in taken else name


def _register_plugin_archs_first() -> None:
    """Import the plugin's other ``*_arch.py`` modules, so the names they register are known whatever the order."""
    folder = osp.dirname(osp.abspath(__file__))
    own = osp.splitext(osp.basename(__file__))[0]
    for module in sorted(osp.splitext(f)[0] for f in os.listdir(folder) if f.endswith('_arch.py')):
        if module != own:
            importlib.import_module(f'{__package__}.{module}')


def _register() -> Dict[str, SpandrelArch]:
    _register_plugin_archs_first()
    registered = {}
    for arch in ARCHS:
        name = registered_name(arch.name, ARCH_REGISTRY)
        bases = ((arch.fix, ) if arch.fix else ()) + (SpandrelStudent, arch.network_class)
        doc = (f'spandrel {arch.name} ({arch.network_class.__module__}), trainable; licence {arch.licence}. See '
               f':mod:`{__name__}`.')
        cls = type(name, bases, {'__module__': __name__, '__qualname__': name, '__doc__': doc, 'spandrel_arch': arch})
        globals()[name] = cls
        ARCH_REGISTRY.register(cls)
        registered[name] = arch
    return registered


REGISTERED: Dict[str, SpandrelArch] = _register()


# ---------------------------------------------------------------------------------------------- checks
def accepted_options(arch: SpandrelArch) -> Dict[str, inspect.Parameter]:
    """The keyword arguments of the spandrel class, by name."""
    parameters = inspect.signature(arch.network_class.__init__).parameters
    return {name: p for name, p in parameters.items() if name != 'self' and p.kind != p.VAR_KEYWORD}


def option_values(arch: SpandrelArch, options: Dict[str, Any]) -> Dict[str, Any]:
    """``options`` completed with the class's defaults (``type`` dropped)."""
    values = {name: p.default for name, p in accepted_options(arch).items() if p.default is not p.empty}
    values.update((k, v) for k, v in options.items() if k != 'type')
    return values


def network_scale(arch: SpandrelArch, options: Dict[str, Any]) -> int:
    """The upscale factor a block builds: its scale keyword (or that keyword's default), or the class's own."""
    if arch.scale_key is None:
        return arch.scales[0]
    return int(option_values(arch, options)[arch.scale_key])


def resolve_options(type_name: str, arch: SpandrelArch, options: Dict[str, Any], key: str = '') -> None:
    """OptionError for a block that would not build what it says: an unknown or missing keyword, or a scale the arch
    cannot build. ``key`` (``network_g``) prefixes the message."""
    where = f'{key}: ' if key else ''
    accepted = accepted_options(arch)
    unknown = sorted(set(options) - set(accepted) - {'type'})
    if unknown:
        raise OptionError(f"{where}{type_name} (spandrel {arch.name}) has no option {unknown[0]!r}; it accepts "
                          f"{', '.join(accepted)}.")
    missing = [name for name, p in accepted.items() if p.default is p.empty and name not in options]
    if missing:
        raise OptionError(f"{where}{type_name} (spandrel {arch.name}) needs {', '.join(missing)}; it accepts "
                          f"{', '.join(accepted)}.")
    scale = network_scale(arch, options)
    if arch.scale_key is not None and not arch.builds(scale):
        given = 'given' if arch.scale_key in options else "spandrel's default"
        raise OptionError(f'{where}{type_name} cannot build {arch.scale_key}: {scale} ({given}); it builds '
                          f'{arch.describe_scales()}.')
    problem = arch.constraint(option_values(arch, options)) if arch.constraint else None
    if problem:
        raise OptionError(f'{where}{type_name}: {problem}.')


def spandrel_arch(type_name: Any) -> Optional[SpandrelArch]:
    """The :class:`SpandrelArch` registered as ``type_name``, or None."""
    return REGISTERED.get(type_name) if isinstance(type_name, str) else None


def network_of_package(package: str, scale: int, channels: int = 3) -> Optional[Dict[str, Any]]:
    """A network block of the first registered arch of spandrel's architecture package ``package`` (spandrel's id of
    it, e.g. ``HAT``), at ``scale``, its required arguments (channel counts) set to ``channels``, otherwise spandrel's
    defaults; spandrel detects its weights as ``package``. None when no registered arch of that package builds
    ``scale``."""
    for registered, arch in REGISTERED.items():
        required = {name: channels for name, parameter in accepted_options(arch).items()
                    if parameter.default is inspect.Parameter.empty}
        if arch.package != package or (arch.scale_key is None and network_scale(arch, required) != scale):
            continue
        block = {'type': registered, **required, **dict(arch.runnable)}
        if arch.scale_key is not None:
            block[arch.scale_key] = scale
        return block
    return None


def refusal(type_name: Any) -> Optional[str]:
    """Why spandrel's ``type_name`` is not registered (a face-restoration, inpainting, colourisation,
    non-commercial or untrainable architecture), or None."""
    if not isinstance(type_name, str) or type_name in ARCH_REGISTRY:
        return None
    name = type_name[len(PREFIX):] if type_name.startswith(PREFIX) else type_name
    return REFUSED.get(name)


def check_network_options(opt: Dict[str, Any]) -> None:
    """Check every ``network_*`` block naming a spandrel architecture, before anything is built or written:
    :func:`resolve_options`, the network's scale against the option file's ``scale`` (student ``network_g`` and
    teacher ``network_t``), and :data:`REFUSED` types. One OptionError naming the key."""
    for key, block in opt.items():
        if not (key.startswith('network_') and isinstance(block, dict)):
            continue
        type_name = block.get('type')
        reason = refusal(type_name)
        if reason is not None:
            raise OptionError(f'{key}.type: spandrel\'s {type_name} is not registered: {reason}.')
        arch = spandrel_arch(type_name)
        if arch is None:
            continue
        resolve_options(type_name, arch, block, key)
        scale = opt.get('scale')
        built = network_scale(arch, block)
        if key in ('network_g', 'network_t') and scale is not None and built != int(scale):
            fix = f'set {key}.{arch.scale_key}: {scale}' if arch.scale_key else f'use a x{scale} network'
            raise OptionError(f'{key}: {type_name} builds x{built} but scale is {scale}; {fix}.')


def check_precision(net_opt: Dict[str, Any], precision: Any, option: str = 'train.fast.amp',
                    key: str = 'network_g') -> None:
    """OptionError when the spandrel arch of ``net_opt`` cannot run in ``precision`` (``bf16``/``fp16``; anything
    else passes), as ``option`` asks: spandrel marks it as not supporting that precision, or it fails to train under
    bf16 autocast. One line naming ``key``'s type and ``option``; other archs pass."""
    type_name = net_opt.get('type')
    arch = spandrel_arch(type_name)
    if arch is None or precision not in ('bf16', 'fp16'):
        return
    if precision == 'bf16' and arch.bf16_fails:
        raise OptionError(f'{option}: bf16, but {key}.type {type_name} does not train in bf16 ({arch.bf16_fails}); '
                          f'use {option}: false.')
    allowed = arch.bf16 if precision == 'bf16' else arch.fp16 or bool(
        arch.fp16_needs and option_values(arch, net_opt).get(arch.fp16_needs))
    if not allowed:
        instead = 'bf16' if precision == 'fp16' and arch.bf16 and not arch.bf16_fails else 'false'
        needs = f' without {arch.fp16_needs}: true' if arch.fp16_needs else ''
        raise OptionError(f'{option}: {precision}, but spandrel marks {key}.type {type_name}{needs} as not supporting '
                          f'{precision}; use {option}: {instead}.')


def feature_stages(net_opt: Dict[str, Any]) -> Optional[Tuple[List[str], str]]:
    """``(stage module names in order, body-end tap)`` of a spandrel network block, for FAKD's default taps (the rule
    of :mod:`dckd_basicsr.distill.feature_taps` picks the stages); None for other types and for spandrel archs
    without a sequence of stages."""
    arch = spandrel_arch(net_opt.get('type'))
    if arch is None or arch.stages is None:
        return None
    return arch.stages(option_values(arch, net_opt))


def registered_type(model: nn.Module) -> Optional[str]:
    """The registered name of the spandrel network ``model`` (an instance of spandrel's own class, as spandrel's
    loader builds it), or None when its class is not registered."""
    return next((name for name, arch in REGISTERED.items() if type(model) is arch.network_class), None)


def options_from_hyperparameters(type_name: str, hyperparameters: Dict[str, Any]) -> Dict[str, Any]:
    """The network block that builds ``type_name`` with spandrel's ``hyperparameters`` (those of a loaded model):
    ``type`` and every value that differs from the class's default."""
    defaults = {name: p.default for name, p in accepted_options(REGISTERED[type_name]).items()}
    block = {'type': type_name}
    block.update((key, value) for key, value in hyperparameters.items()
                 if key in defaults and not same_value(value, defaults[key]))
    return block


def same_value(a: Any, b: Any) -> bool:
    """Option values compared as an option file states them: lists equal tuples, 2 equals 2.0."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    return a == b
