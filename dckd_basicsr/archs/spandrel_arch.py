"""SpandrelTeacher: a teacher of any architecture spandrel detects, loaded from its release with no network options.

::

    network_t:
      type: SpandrelTeacher          # optional: architecture: SPAN (the spandrel id the file must be detected as)
    path:
      pretrain_network_t: 4x-SPAN.safetensors   # .pth, .pt, .ckpt or .safetensors, as published

``build_network`` makes an empty module. Loading the teacher (:func:`dckd_basicsr.checkpoints.load_pretrained`, which
picks the format ``spandrel`` for this type) reads the file with the plugin's safe reader (weights-only, else the
restricted unpickler; ``.safetensors`` through safetensors), takes its tensors as for any teacher
(``path.param_key_t``, the usual wrappers, ``module.`` removed) and hands them to
``spandrel.ModelLoader().load_from_state_dict``, which detects the architecture and its hyperparameters and builds
the network; :meth:`SpandrelTeacher.load_spandrel_state_dict` installs it as ``self.model``. Every architecture of
the installed spandrel's ``MAIN_REGISTRY`` that restores an image (``ImageModelDescriptor``: SR, restoration; not
inpainting) can be a teacher: HAT, DAT, ATD, DRCT, SwinIR, Swin2SR, RCAN, SPAN, PLKSR, NAFNet, SCUNet, ...

Before training, :func:`dckd_basicsr.distill.teacher.check_spandrel_teacher` compares what spandrel detected (scale,
input channels, fp16/bf16 support) with ``scale``, ``network_g`` and ``train.fast``; KDModel's dry run then compares
the outputs.

Forward, as spandrel's own consumers do (its ``ImageModelDescriptor.__call__``): the input is padded at the bottom
and right to the architecture's ``size_requirements`` (minimum size, multiple; reflect padding, replicate where the
padding is as large as the image, the rule of :mod:`dckd_basicsr.archs.padding`), the network runs with the
architecture's calling convention, and the output is cropped back to ``scale`` times the input size. Unlike that
``__call__``, the output is not clamped to [0, 1] (a BasicSR teacher's is not either), no ``inference_mode`` is
entered (the model runs the teacher under ``torch.no_grad()``), and the input is copied first, since some spandrel
archs (RCAN) scale their input in place.

Module names (FAKD's ``train.fakd_opt.teacher_layers``, :mod:`dckd_basicsr.distill.feature_taps`) are those of the
loaded network itself (:attr:`SpandrelTeacher.feature_root`), i.e. of the checkpoint's keys: ``body.2`` of an official
RCAN, ``layers.1`` of SwinIR; its state dict is under ``model.`` in this wrapper.
"""
from typing import Any, Dict, List, Mapping, Optional

import torch
from basicsr.utils.registry import ARCH_REGISTRY
from torch import Tensor, nn

from dckd_basicsr.archs.padding import pad_bottom_right
from dckd_basicsr.errors import ConversionError


def detected_architecture(state_dict: Mapping[str, Tensor]) -> Optional[str]:
    """Id of the first architecture of spandrel's ``MAIN_REGISTRY`` (in its detection order) whose detector accepts
    ``state_dict`` (canonicalized as spandrel does), or None."""
    from spandrel import MAIN_REGISTRY, canonicalize_state_dict
    state_dict = canonicalize_state_dict(dict(state_dict))
    return next((str(support.architecture.id) for support in MAIN_REGISTRY.architectures('detection')
                 if support.detect(state_dict)), None)


def _keys(state_dict: Mapping[str, Tensor], limit: int = 6) -> str:
    keys = list(state_dict)
    return ', '.join(keys[:limit]) + (f', ... ({len(keys)} in all)' if len(keys) > limit else '')


@ARCH_REGISTRY.register()
class SpandrelTeacher(nn.Module):
    """A network built by spandrel from its checkpoint (see the module docstring).

    Args:
        architecture: spandrel's id of the architecture the checkpoint must be detected as (e.g. ``SPAN``, ``HAT``,
            ``SwinIR``); None accepts whatever spandrel detects.

    Attributes (set by :meth:`load_spandrel_state_dict`): ``model`` (the network), ``architecture``, ``scale``,
    ``input_channels``, ``output_channels``, ``size_requirements``, ``tags``, ``supports_half``,
    ``supports_bfloat16``, ``hyperparameters`` (spandrel's, where its arch stores them).
    """

    def __init__(self, architecture: Optional[str] = None):
        super().__init__()
        self.expected_architecture = architecture
        self.register_module('model', None)
        # follows .to(device): the network spandrel builds later is moved to wherever the wrapper was sent
        self.register_buffer('device_anchor', torch.empty(0), persistent=False)
        self.architecture: Optional[str] = None
        self.scale = self.input_channels = self.output_channels = None
        self.size_requirements = None
        self.tags: List[str] = []
        self.supports_half = self.supports_bfloat16 = False
        self.hyperparameters: Dict[str, Any] = {}
        self._call_fn = None

    # ------------------------------------------------------------------ loading
    def load_spandrel_state_dict(self, state_dict: Mapping[str, Tensor]) -> None:
        """Detect and build the network of ``state_dict`` with ``spandrel.ModelLoader().load_from_state_dict`` and
        install it (on this module's device, in its train/eval mode).

        Raises:
            ConversionError: spandrel detects no architecture, cannot build the one it detects from these tensors,
                detects one other than ``architecture``, or the network does not map an image to an image.
        """
        import spandrel
        from spandrel import ImageModelDescriptor, ModelLoader, UnsupportedModelError
        detected = detected_architecture(state_dict)
        if detected is None:
            raise ConversionError(f'spandrel {spandrel.__version__} detects none of its {len(spandrel.MAIN_REGISTRY)} '
                                  f'architectures from these keys ({_keys(state_dict)}); give network_t the '
                                  'BasicSR/plugin arch of the checkpoint (with a converter, path.teacher_format) '
                                  'instead of SpandrelTeacher.')
        if self.expected_architecture and detected != self.expected_architecture:
            raise ConversionError(f'spandrel detects a {detected} checkpoint, but network_t.architecture is '
                                  f'{self.expected_architecture}; check the file or the option.')
        try:
            descriptor = ModelLoader().load_from_state_dict(dict(state_dict))
        except UnsupportedModelError as error:  # detection said yes above; kept for a registry changed meanwhile
            raise ConversionError(f'spandrel detects no architecture from these keys ({_keys(state_dict)}).') from error
        except Exception as error:  # noqa: B902  (the arch's loader: keys or shapes it does not expect)
            raise ConversionError(f'spandrel detects a {detected} checkpoint but cannot build it from these tensors: '
                                  f'{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ""}') \
                from error
        if not isinstance(descriptor, ImageModelDescriptor):
            raise ConversionError(f'spandrel loads a {descriptor.architecture.id} network, a {descriptor.purpose} '
                                  'model that needs more than the image (e.g. a mask); a teacher maps an image to an '
                                  'image.')
        model = descriptor.model.to(self.device_anchor.device)
        model.train(self.training)
        self.model = model
        self.architecture = str(descriptor.architecture.id)
        self.scale = int(descriptor.scale)
        self.input_channels = int(descriptor.input_channels)
        self.output_channels = int(descriptor.output_channels)
        self.size_requirements = descriptor.size_requirements
        self.tags = list(descriptor.tags)
        self.supports_half = bool(descriptor.supports_half)
        self.supports_bfloat16 = bool(descriptor.supports_bfloat16)
        self.hyperparameters = dict(getattr(model, 'hyperparameters', {}) or {})
        # the architecture's calling convention (FBCNN returns a tuple, DnCNN/DRUNet add a noise-level map, ...):
        # spandrel keeps it on the descriptor only, as the function its __call__ applies
        self._call_fn = getattr(descriptor, '_call_fn', None)

    def describe(self) -> str:
        """``'spandrel detected SPAN (48nf): x4, 3 -> 3 channels, input a multiple of 1'``."""
        if self.model is None:
            return 'SpandrelTeacher (no checkpoint loaded)'
        tags = f' ({", ".join(self.tags)})' if self.tags else ''
        req = self.size_requirements
        size = '' if req.none else f', input at least {req.minimum} px and a multiple of {req.multiple_of}' + \
            (', square' if req.square else '') + ' (padded inside the teacher)'
        return (f'spandrel detected {self.architecture}{tags}: x{self.scale}, {self.input_channels} -> '
                f'{self.output_channels} channels{size}')

    @property
    def feature_root(self) -> nn.Module:
        """The module whose ``named_modules()`` names FAKD's teacher taps: the loaded network itself."""
        if self.model is None:
            raise RuntimeError('SpandrelTeacher: no network loaded yet (path.pretrain_network_t).')
        return self.model

    # ------------------------------------------------------------------ forward
    def forward(self, x: Tensor) -> Tensor:
        if self.model is None:
            raise RuntimeError('SpandrelTeacher: no network loaded yet; it is built from the checkpoint '
                               '(path.pretrain_network_t, or load_pretrained(net, file, fmt="spandrel")).')
        height, width = x.shape[-2:]
        pad_w, pad_h = self.size_requirements.get_padding(width, height)
        if pad_w or pad_h:
            x = pad_bottom_right(x, pad_h, pad_w)
        else:
            x = x.clone()  # spandrel's RCAN multiplies its input by rgb_range in place
        out = self._call_fn(self.model, x) if self._call_fn is not None else self.model(x)
        if isinstance(out, (tuple, list)):
            out = out[0]
        return out[..., :height * self.scale, :width * self.scale]

    def extra_repr(self) -> str:
        return self.describe()
