"""Teacher-loading hooks: load published teacher and encoder checkpoints safely, or say exactly why not.

Teachers come from their authors' releases (EDSR-PyTorch naming for RCAN/EDSR, SwinIR's own files) and the VQGAN from a
taming-transformers Lightning checkpoint, not from BasicSR. :func:`load_pretrained` reads such a file without running
pickled code (:func:`load_checkpoint_file`), picks the tensors (``params`` / ``params_ema`` with BasicSR's fallback,
``state_dict`` / ``model`` wrappers, ``module.`` prefixes), converts their names with a converter from
:data:`CHECKPOINT_REGISTRY` and loads them, raising :class:`~dckd_basicsr.errors.OptionError` naming the option and the
file when they do not fit.

A converter is ``fn(state_dict, net) -> Conversion | dict``: it receives the checkpoint's tensors (already unwrapped and
without ``module.``) and the bare network, and returns the tensors under the network's names. Keys it does not
recognise are returned unchanged, so that they show up as unexpected. Register your own like any BasicSR registry::

    from dckd_basicsr.checkpoints import CHECKPOINT_REGISTRY

    @CHECKPOINT_REGISTRY.register()
    def my_format(state_dict, net):
        return {key.replace('backbone.', ''): value for key, value in state_dict.items()}

and select it with the format option (``fmt='my_format'``).
"""
import _compat_pickle
import io
import math
import os.path as osp
import pickle
import re
import types
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from basicsr.utils import get_root_logger
from basicsr.utils.registry import Registry
from torch import nn

from dckd_basicsr.errors import OptionError, UnknownTypeError

CHECKPOINT_REGISTRY = Registry('checkpoint')

# Wrapper keys tried, in this order, when the file is not a flat dict of tensors (after the requested param_key).
WRAPPER_KEYS = ('params', 'params_ema', 'state_dict', 'model', 'net', 'network')


class ConversionError(ValueError):
    """Raised by converters when a checkpoint cannot become the network's weights; :func:`load_pretrained` turns it
    into an :class:`OptionError` naming the option and the file."""


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


# --------------------------------------------------------------------------------------------------------------------
# Safe loading
# --------------------------------------------------------------------------------------------------------------------


class PickledObject:
    """Inert stand-in for a class a checkpoint pickled (Lightning callbacks, omegaconf, argparse, user classes).

    Calling, constructing or restoring it only stores the arguments; no code of the original class runs. The
    original name is in ``pickled_name``.
    """
    pickled_name = '?'

    def __new__(cls, *args, **kwargs):
        obj = object.__new__(cls)
        obj.__dict__['pickled_args'] = args
        return obj

    def __init__(self, *args, **kwargs):
        self.__dict__['pickled_args'] = args

    def __setstate__(self, state):
        self.__dict__['pickled_state'] = state

    def __setitem__(self, key, value):  # pickled dict subclasses
        self.__dict__.setdefault('pickled_items', {})[key] = value

    def append(self, value):  # pickled list subclasses
        self.__dict__.setdefault('pickled_list', []).append(value)

    def extend(self, values):
        self.__dict__.setdefault('pickled_list', []).extend(values)

    def __repr__(self):
        return f'<{self.pickled_name} (pickled object, not loaded)>'


_placeholders: Dict[Tuple[str, str], type] = {}


def _placeholder(module: str, name: str) -> type:
    key = (module, name)
    if key not in _placeholders:
        _placeholders[key] = type(
            name.rsplit('.', 1)[-1], (PickledObject, ), {
                '__module__': 'dckd_basicsr.checkpoints.pickled',
                'pickled_name': f'{module}.{name}'
            })
    return _placeholders[key]


def _rebuild_from_type_v2(func, new_type, args, state):
    # torch's version calls `as_subclass(new_type)` and restores attributes from `state`; keep a plain tensor (or
    # Parameter) and no attributes.
    ret = func(*args)
    if new_type is nn.Parameter and isinstance(ret, torch.Tensor) and not isinstance(ret, nn.Parameter):
        ret = nn.Parameter(ret, requires_grad=ret.requires_grad)
    return ret


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks, metadata=None):
    # Pickled backward hooks would be called on backward; metadata only carries conj/neg bits.
    import torch._utils as tutils
    if not (isinstance(metadata, dict) and all(isinstance(v, bool) for v in metadata.values())):
        metadata = None
    return tutils._rebuild_tensor_v2(storage, storage_offset, size, stride, bool(requires_grad), OrderedDict(),
                                     metadata)


def _rebuild_parameter(data, requires_grad, backward_hooks, state=None):
    # Stands for _rebuild_parameter and _rebuild_parameter_with_state, without hooks and pickled attributes.
    if not isinstance(data, torch.Tensor):
        raise pickle.UnpicklingError(f'a pickled Parameter holds a {type(data).__name__}, not a tensor')
    return nn.Parameter(data, requires_grad=bool(requires_grad))


def _allowed_globals() -> Dict[Tuple[str, str], Any]:
    import torch._utils as tutils
    return {
        ('collections', 'OrderedDict'): OrderedDict,
        ('builtins', 'set'): set,
        ('builtins', 'frozenset'): frozenset,
        ('builtins', 'complex'): complex,
        ('torch', 'Size'): torch.Size,
        ('torch', 'Tensor'): torch.Tensor,
        ('torch.nn.parameter', 'Parameter'): nn.Parameter,
        ('torch._tensor', '_rebuild_from_type_v2'): _rebuild_from_type_v2,
        ('torch._utils', '_rebuild_tensor'): tutils._rebuild_tensor,
        ('torch._utils', '_rebuild_tensor_v2'): _rebuild_tensor_v2,
        ('torch._utils', '_rebuild_parameter'): _rebuild_parameter,
        ('torch._utils', '_rebuild_parameter_with_state'): _rebuild_parameter,
    }


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only tensor-rebuilding globals; every other class or function becomes an inert
    :class:`PickledObject` subclass, so opening a checkpoint cannot execute code. Storages are resolved by
    ``torch.load`` itself before this ``find_class`` is reached."""
    allowed = None

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _compat_pickle.NAME_MAPPING:  # Python 2 names, as pickle's own find_class maps them
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if RestrictedUnpickler.allowed is None:
            RestrictedUnpickler.allowed = _allowed_globals()
        obj = RestrictedUnpickler.allowed.get((module, name))
        if obj is not None:
            return obj
        if module == 'torch' and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        return _placeholder(module, name)


def _restricted_load(file, **kwargs):
    return RestrictedUnpickler(file, **kwargs).load()


# torch.load(pickle_module=...) needs a module-like object with Unpickler and load (load for the legacy format).
restricted_pickle = types.ModuleType('dckd_basicsr_restricted_pickle')
restricted_pickle.Unpickler = RestrictedUnpickler
restricted_pickle.load = _restricted_load
restricted_pickle.loads = lambda data, **kwargs: _restricted_load(io.BytesIO(data), **kwargs)
restricted_pickle.UnpicklingError = pickle.UnpicklingError


def pickled_objects(obj: Any) -> List[str]:
    """Names of the classes replaced by :class:`PickledObject` anywhere in ``obj`` (dicts, lists, placeholders)."""
    found, stack, seen = set(), [obj], set()
    while stack:
        item = stack.pop()
        if id(item) in seen or isinstance(item, torch.Tensor):
            continue
        seen.add(id(item))
        if isinstance(item, type) and issubclass(item, PickledObject):
            found.add(item.pickled_name)
        elif isinstance(item, PickledObject):
            found.add(item.pickled_name)
            stack.extend(item.__dict__.values())
        elif isinstance(item, Mapping):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            stack.extend(item)
    return sorted(found)


def load_checkpoint_file(path: str, trusted: bool = False, option: Optional[str] = None) -> Any:
    """Read a checkpoint onto the CPU without executing code from it.

    1. ``torch.load(weights_only=True)`` (BasicSR files, official RCAN/EDSR/SwinIR releases).
    2. If that refuses the file (Lightning checkpoints pickle callbacks, omegaconf and argparse objects), unpickle it
       with :class:`RestrictedUnpickler`: tensors and plain containers come back, every other object is an inert
       :class:`PickledObject`.
    3. Only when ``trusted`` is True (the user said the file is trusted), full unpickling, which runs whatever code
       the file contains.

    Args:
        path: the file.
        trusted: allow full unpickling when the weights-only load refuses the file.
        option: option key for error messages, e.g. ``path.pretrain_network_t``.

    Raises:
        OptionError: the file is missing or is no PyTorch checkpoint.
    """
    where = f'{option}: ' if option else ''
    if not path or not osp.isfile(str(path)):
        raise OptionError(f'{where}{path}: no such checkpoint file.')
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except Exception as error:  # noqa: B902  (weights-only refusal, or not a checkpoint at all; told apart below)
        weights_only_error = error
    try:
        if trusted:
            return torch.load(path, map_location='cpu', weights_only=False)
        obj = torch.load(path, map_location='cpu', weights_only=False, pickle_module=restricted_pickle)
    except Exception as error:  # noqa: B902
        if trusted:
            raise OptionError(f'{where}{path}: full unpickling (trusted) failed: {error}. Without trusted, the '
                              'classes the file pickles are replaced by inert placeholders.') from error
        raise OptionError(f'{where}{path} cannot be read as a PyTorch checkpoint: {error} '
                          f'(weights-only load: {str(weights_only_error).splitlines()[0]})') from error
    names = pickled_objects(obj)
    if names:
        get_root_logger().info(f'{path}: pickled objects kept as inert placeholders (not executed): '
                               f'{", ".join(names)}')
    return obj


# --------------------------------------------------------------------------------------------------------------------
# Unwrapping and format detection
# --------------------------------------------------------------------------------------------------------------------


def _is_tensor_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


def extract_state_dict(raw: Any,
                       param_key: Optional[str] = 'params',
                       trusted_option: str = 'trusted') -> Tuple[Dict[str, torch.Tensor], Optional[str]]:
    """The tensors of a loaded checkpoint and the wrapper key they were under (None for a raw state dict).

    ``param_key`` is tried first; ``params_ema`` falls back to ``params`` as in BasicSR's ``load_network``; then the
    usual wrappers (``params``, ``params_ema``, ``state_dict``, ``model``, ...). ``module.`` prefixes (DDP,
    DataParallel) are removed and non-tensor entries are ignored.

    ``trusted_option`` names the option that allows full unpickling, for the message about a pickled model.

    Raises:
        ConversionError: no state dict could be found.
    """
    if isinstance(raw, PickledObject):
        raise ConversionError(f'the file holds a pickled {raw.pickled_name} object, not a state dict; re-save its '
                              f'state_dict(), or, if you trust the file, allow full unpickling ({trusted_option}) '
                              'to load the whole model.')
    if isinstance(raw, nn.Module):  # a whole pickled model, loaded because the file is trusted
        return OrderedDict(raw.state_dict()), None
    if not isinstance(raw, Mapping):
        raise ConversionError(f'the file holds a {type(raw).__name__}, not a state dict.')
    used = None
    if _is_tensor_dict(raw):
        tensors = raw
    else:
        candidates = ([param_key] if param_key else []) + (['params'] if param_key == 'params_ema' else [])
        for key in candidates + [key for key in WRAPPER_KEYS if key not in candidates]:
            if isinstance(raw.get(key), Mapping) and any(isinstance(v, torch.Tensor) for v in raw[key].values()):
                used = key
                break
        if used is None and any(isinstance(v, torch.Tensor) for v in raw.values()):
            tensors = raw  # a state dict with a few non-tensor entries (epoch, ...), which are ignored
        elif used is None:
            raise ConversionError(f'no tensors under {param_key!r} or any of {", ".join(WRAPPER_KEYS)}; the file\'s '
                                  f'top-level keys are: {", ".join(map(str, list(raw)[:20]))}.')
        else:
            tensors = raw[used]
    state_dict = OrderedDict()
    for key, value in tensors.items():
        if isinstance(value, torch.Tensor):
            while key.startswith('module.'):
                key = key[len('module.'):]
            state_dict[key] = value
    return state_dict, used


def detect_format(state_dict: Mapping[str, torch.Tensor], net: nn.Module, wrapper: Optional[str] = None) -> str:
    """Name of the converter that fits the checkpoint's keys (``fmt: auto``)."""
    keys = set(state_dict)
    if 'quantize.embedding.weight' in keys or any(k.startswith('encoder.conv_in.') for k in keys):
        return 'taming'
    if 'head.0.weight' in keys and any(k.startswith('tail.') for k in keys):
        return 'rcan_official' if any('.conv_du.' in k for k in keys) else 'edsr_official'
    if any(k.endswith('relative_position_bias_table') for k in keys) and hasattr(net, 'patch_embed'):
        return 'swinir_official'
    return 'basicsr' if wrapper in ('params', 'params_ema') else 'state_dict'


# --------------------------------------------------------------------------------------------------------------------
# Converters
# --------------------------------------------------------------------------------------------------------------------


@CHECKPOINT_REGISTRY.register()
def basicsr(state_dict: Dict[str, torch.Tensor], net: nn.Module) -> Conversion:
    """BasicSR files (``params`` / ``params_ema``): names already match; unwrapping did the rest.

    Also the format of the official NAFNet and Restormer releases, which are BasicSR ``{'params': ...}`` files with
    the official module names (see the note above :func:`state_dict`).
    """
    conversion = Conversion()
    for key in state_dict:
        conversion.take(key, key, state_dict)
    return conversion


@CHECKPOINT_REGISTRY.register()
def state_dict(state_dict: Dict[str, torch.Tensor], net: nn.Module) -> Conversion:  # noqa: F811  (format name)
    """Raw state dicts and ``{'state_dict': ...}`` / ``{'model': ...}`` wrappers, names as in the network."""
    return basicsr(state_dict, net)


# NAFNet / Restormer: the official releases (megvii-research/NAFNet, swz30/Restormer) are BasicSR files
# ({'params': ...}) whose keys are the official archs' module names (intro, encoders.I.J.sca.1, beta, gamma, ups, downs,
# ending / patch_embed.proj, encoder_levelN.I.attn.temperature, down1_2.body.0, reduce_chan_levelN, refinement, output).
# dckd_basicsr/archs/nafnet_arch.py and restormer_arch.py keep those names, so the `basicsr` format loads them
# (tests/test_checkpoints.py::test_nafnet_restormer_official_names). If an arch ever renames modules, register a
# `nafnet_official` / `restormer_official` converter here that maps the names (a Conversion with `take` per key) and
# add its key signature to detect_format.


def _conv_out(state_dict: Mapping[str, torch.Tensor], key: str) -> int:
    return int(state_dict[key].shape[0])


def _upsample_scale(conv_out_channels: List[int], num_feat: int) -> Optional[int]:
    """Scale of an EDSR-style upsampler from its convs' output channels (4*nf per x2 step, 9*nf for x3)."""
    if len(conv_out_channels) == 1 and conv_out_channels[0] == 9 * num_feat:
        return 3
    if conv_out_channels and all(c == 4 * num_feat for c in conv_out_channels):
        return 2**len(conv_out_channels)
    return None


def _net_scale(net: nn.Module) -> Optional[int]:
    convs = [m.out_channels for m in net.upsample if isinstance(m, nn.Conv2d)]
    return _upsample_scale(convs, net.conv_first.out_channels)


def _require(net: nn.Module,
             arch: str,
             attributes: Sequence[str],
             fmt: str,
             body_block: Optional[Sequence[str]] = None) -> None:
    """Check ``net`` has BasicSR ``arch``'s attributes (and, for ``body_block``, those of its first body block)."""
    fits = all(hasattr(net, name) for name in attributes)
    if fits and body_block:
        fits = len(net.body) > 0 and all(hasattr(net.body[0], name) for name in body_block)
    if not fits:
        raise ConversionError(f"format '{fmt}' converts into BasicSR's {arch}, but the network is "
                              f'{type(net).__name__}; check the network type or the checkpoint format.')


def _check_mean_shift(tensors: Mapping[str, torch.Tensor], net: nn.Module, conversion: Conversion) -> None:
    """Compare the official ``sub_mean`` / ``add_mean`` layers with the network's ``rgb_mean`` and ``img_range``.

    EDSR-PyTorch's MeanShift is a 1x1 conv with weight ``I / std`` and bias ``sign * rgb_range * mean / std``; BasicSR
    computes ``(x - mean) * img_range`` and ``x / img_range + mean`` (no std). They agree iff ``std == 1`` and
    ``bias == sign * img_range * mean``.
    """
    mean = net.mean.detach().flatten().double()
    img_range = float(net.img_range)
    for name, sign in (('sub_mean', -1.), ('add_mean', 1.)):
        weight_key, bias_key = f'{name}.weight', f'{name}.bias'
        if weight_key not in tensors or bias_key not in tensors:
            continue
        weight = tensors[weight_key].double().reshape(3, 3)
        bias = tensors[bias_key].double().flatten()
        if not torch.allclose(weight, torch.eye(3, dtype=torch.float64), atol=1e-6):
            std = [round(1 / w, 4) if w else float('inf') for w in torch.diagonal(weight).tolist()]
            raise ConversionError(f'{name} divides by rgb_std {std}; BasicSR\'s {type(net).__name__} has no rgb_std '
                                  '(it assumes 1), so this checkpoint cannot be converted faithfully.')
        file_mean = bias / (sign * img_range)
        if not torch.allclose(file_mean, mean, rtol=0, atol=5e-5):
            shown = ', '.join(f'{v:.4f}' for v in file_mean.tolist())
            net_mean = ', '.join(f'{v:.4f}' for v in mean.tolist())
            if ((file_mean < 0) | (file_mean > 1)).any():  # not a mean of [0, 1] images: the range differs
                rgb_range = (bias / (sign * mean)).mean().item()
                hint = f'the teacher was trained with rgb_range {rgb_range:.4g}: set the network\'s img_range: ' \
                    f'{rgb_range:.4g}'
            else:
                hint = f'set the network\'s rgb_mean: [{shown}]'
            raise ConversionError(
                f'{name}.bias = ({", ".join(f"{v:.3f}" for v in bias.tolist())}) means rgb_mean ({shown}) at '
                f'img_range {img_range:g}, but the network has rgb_mean ({net_mean}); {hint}.')
        for key in (weight_key, bias_key):
            conversion.dropped[key] = 'MeanShift, agrees with rgb_mean/img_range (BasicSR keeps them as attributes)'


def _check_count(what: str, in_file: int, in_net: int, option: str) -> None:
    if in_file != in_net:
        raise ConversionError(f'the checkpoint has {in_file} {what}, the network {in_net}; set {option}: {in_file}.')


def _edsr_family(tensors: Dict[str, torch.Tensor], net: nn.Module, fmt: str,
                 body_rules: Sequence[Tuple[str, Callable[[re.Match], Optional[str]]]]) -> Conversion:
    """Shared part of the EDSR-PyTorch converters: head, tail, MeanShift and scale checks; ``body_rules`` map the
    body keys (regex on the key, function of the match returning the BasicSR key or None)."""
    conversion = Conversion()
    num_feat = net.conv_first.out_channels
    if 'head.0.weight' in tensors:
        _check_count('features (head.0 output channels)', _conv_out(tensors, 'head.0.weight'), num_feat, 'num_feat')
    ups = sorted({int(m.group(1)) for m in (re.fullmatch(r'tail\.0\.(\d+)\.weight', k) for k in tensors) if m})
    file_scale = _upsample_scale([_conv_out(tensors, f'tail.0.{i}.weight') for i in ups], num_feat)
    net_scale = _net_scale(net)
    if ups and file_scale != net_scale:
        raise ConversionError(f'the checkpoint is a x{file_scale} model, the network x{net_scale}; '
                              f'set upscale: {file_scale} (or use the x{net_scale} checkpoint).')
    _check_mean_shift(tensors, net, conversion)
    rules = list(body_rules) + [
        (r'head\.0\.(weight|bias)', lambda m: f'conv_first.{m.group(1)}'),
        (r'tail\.0\.(\d+)\.(weight|bias)', lambda m: f'upsample.{m.group(1)}.{m.group(2)}'),
        (r'tail\.1\.(weight|bias)', lambda m: f'conv_last.{m.group(1)}'),
    ]
    for key in tensors:
        if key in conversion.dropped:
            continue
        target = None
        for pattern, rename in rules:
            match = re.fullmatch(pattern, key)
            if match:
                target = rename(match)
                break
        conversion.take(target if target is not None else key, key, tensors)
    return conversion


@CHECKPOINT_REGISTRY.register()
def rcan_official(tensors: Dict[str, torch.Tensor], net: nn.Module) -> Conversion:
    """Official RCAN (EDSR-PyTorch naming) into BasicSR's ``RCAN``, any number of groups/blocks, x2/x3/x4.

    ``head.0`` -> ``conv_first``; ``body.G.body.B.body.{0,2}`` -> ``body.G.residual_group.B.rcab.{0,2}``;
    ``body.G.body.B.body.3.conv_du.{0,2}`` -> ``...rcab.3.attention.{1,3}``; ``body.G.body.N`` -> ``body.G.conv``;
    ``body.NG`` -> ``conv_after_body``; ``tail.0.K`` -> ``upsample.K``; ``tail.1`` -> ``conv_last``; ``sub_mean`` /
    ``add_mean`` are checked against ``rgb_mean`` / ``img_range`` and dropped.
    """
    _require(
        net,
        'RCAN', ('conv_first', 'body', 'conv_after_body', 'upsample', 'conv_last', 'mean', 'img_range'),
        'rcan_official',
        body_block=('residual_group', 'conv'))
    num_group, num_block = len(net.body), len(net.body[0].residual_group)
    groups = {int(m.group(1)) for m in (re.fullmatch(r'body\.(\d+)\.body\.\d+\..*', k) for k in tensors) if m}
    blocks = {int(m.group(1)) for m in (re.fullmatch(r'body\.0\.body\.(\d+)\.body\..*', k) for k in tensors) if m}
    _check_count('residual groups', len(groups), num_group, 'num_group')
    _check_count('blocks per group', len(blocks), num_block, 'num_block')
    rcab = {'0': 'rcab.0', '2': 'rcab.2'}
    attention = {'0': 'rcab.3.attention.1', '2': 'rcab.3.attention.3'}
    rules = [
        (r'body\.(\d+)\.body\.(\d+)\.body\.([02])\.(weight|bias)',
         lambda m: f'body.{m[1]}.residual_group.{m[2]}.{rcab[m[3]]}.{m[4]}'),
        (r'body\.(\d+)\.body\.(\d+)\.body\.3\.conv_du\.([02])\.(weight|bias)',
         lambda m: f'body.{m[1]}.residual_group.{m[2]}.{attention[m[3]]}.{m[4]}'),
        (r'body\.(\d+)\.body\.(\d+)\.(weight|bias)', lambda m: f'body.{m[1]}.conv.{m[3]}'
         if int(m[2]) == num_block else None),
        (r'body\.(\d+)\.(weight|bias)', lambda m: f'conv_after_body.{m[2]}' if int(m[1]) == num_group else None),
    ]
    return _edsr_family(tensors, net, 'rcan_official', rules)


@CHECKPOINT_REGISTRY.register()
def edsr_official(tensors: Dict[str, torch.Tensor], net: nn.Module) -> Conversion:
    """Official EDSR (EDSR-PyTorch) into BasicSR's ``EDSR``: ``body.I.body.{0,2}`` -> ``body.I.conv{1,2}``,
    ``body.N`` -> ``conv_after_body``; head, tail and MeanShift as in :func:`rcan_official`. ``res_scale`` is not
    stored in the file: set it as the release says (0.1 for the large EDSR)."""
    _require(
        net,
        'EDSR', ('conv_first', 'body', 'conv_after_body', 'upsample', 'conv_last', 'mean', 'img_range'),
        'edsr_official',
        body_block=('conv1', 'conv2'))
    num_block = len(net.body)
    blocks = {int(m.group(1)) for m in (re.fullmatch(r'body\.(\d+)\.body\..*', k) for k in tensors) if m}
    _check_count('residual blocks', len(blocks), num_block, 'num_block')
    rules = [
        (r'body\.(\d+)\.body\.([02])\.(weight|bias)', lambda m: f'body.{m[1]}.conv{1 if m[2] == "0" else 2}.{m[3]}'),
        (r'body\.(\d+)\.(weight|bias)', lambda m: f'conv_after_body.{m[2]}' if int(m[1]) == num_block else None),
    ]
    return _edsr_family(tensors, net, 'edsr_official', rules)


@CHECKPOINT_REGISTRY.register()
def swinir_official(tensors: Dict[str, torch.Tensor], net: nn.Module) -> Conversion:
    """Official SwinIR releases (classical, lightweight, real-world; ``params`` or ``params_ema``) into BasicSR's
    ``SwinIR``, which uses the same module names.

    ``relative_position_index`` and ``attn_mask`` are buffers computed from ``window_size`` and ``img_size``: the
    network keeps its own, so a checkpoint trained with another ``img_size`` loads. A different ``window_size`` (the
    bias tables differ) or an ``img_size`` so small that the network has no shifted windows where the checkpoint has
    them (or the reverse) changes the model and is an error.
    """
    _require(net, 'SwinIR', ('patch_embed', 'layers', 'conv_first'), 'swinir_official')
    own = net.state_dict()
    conversion = Conversion()
    for key, value in tensors.items():
        if key.endswith('.relative_position_bias_table') and key in own and own[key].shape != value.shape:
            file_ws, net_ws = ((math.isqrt(t.shape[0]) + 1) // 2 for t in (value, own[key]))
            raise ConversionError(f'{key}: the checkpoint was trained with window_size {file_ws}, the network has '
                                  f'window_size {net_ws}; set window_size: {file_ws}.')
        if key.endswith('.relative_position_index') or key.endswith('.attn_mask'):
            if key not in own:
                if key.endswith('.attn_mask'):
                    raise ConversionError(f'{key}: the checkpoint uses shifted windows in this block, the network does '
                                          'not (its img_size is not larger than window_size); increase img_size.')
                conversion.dropped[key] = 'buffer, not in the network'
            else:
                conversion.recomputed[key] = 'buffer, computed from the network\'s img_size/window_size'
            continue
        conversion.take(key, key, tensors)
    for key in own:
        if key.endswith('.attn_mask') and key not in tensors:
            raise ConversionError(f'{key}: the network uses shifted windows in this block, the checkpoint does not '
                                  '(it was trained with img_size <= window_size); set img_size as in training.')
        if key.endswith('.relative_position_index') and key not in conversion.recomputed:
            conversion.recomputed[key] = 'buffer, computed from the network\'s window_size'
    return conversion


@CHECKPOINT_REGISTRY.register()
def taming(tensors: Dict[str, torch.Tensor], net: nn.Module) -> Conversion:
    """taming-transformers VQGAN (Lightning ``state_dict``) into the plugin's VQGAN encoder.

    Keeps ``encoder.*``, ``quant_conv.*`` and ``quantize.embedding.weight``; drops ``loss.*`` (LPIPS and
    discriminator) and, when the network has no decoder, ``decoder.*`` and ``post_quant_conv.*``. An encoder-only
    file written by ``python -m dckd_basicsr.convert`` has the same names and loads too.
    """
    own = net.state_dict()
    has = {prefix: any(k.startswith(prefix) for k in own) for prefix in ('decoder.', 'post_quant_conv.', 'loss.')}
    conversion = Conversion()
    for key in tensors:
        prefix = key.split('.', 1)[0] + '.'
        if prefix in has and not has[prefix]:
            conversion.dropped[key] = 'training loss (LPIPS/discriminator)' if prefix == 'loss.' else \
                'decoder side of the VQGAN, unused by the encoder'
        else:
            conversion.take(key, key, tensors)
    return conversion


# --------------------------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------------------------


def _bare(net: nn.Module) -> nn.Module:
    from torch.nn.parallel import DataParallel, DistributedDataParallel
    while isinstance(net, (DataParallel, DistributedDataParallel)):
        net = net.module
    return net


# Format option keys of the KD models (dckd_basicsr/models), for messages; others are path.format_network_<suffix>.
FORMAT_OPTIONS = {'t': 'path.teacher_format', 'vqgan': 'path.vqgan_format'}


def _suffix(option: str) -> Optional[str]:
    """'path.pretrain_network_t' -> 't' (BasicSR names the companion options param_key_t, strict_load_t)."""
    match = re.fullmatch(r'(?:path\.)?pretrain_network_(\w+)', option or '')
    return match.group(1) if match else None


def _listing(keys: Sequence[str], limit: int = 8) -> str:
    keys = list(keys)
    shown = ', '.join(keys[:limit])
    return f'{shown}, ... ({len(keys)} in all)' if len(keys) > limit else shown


def load_pretrained(net: nn.Module,
                    path: str,
                    fmt: str = 'auto',
                    param_key: Optional[str] = 'params',
                    strict: bool = True,
                    trusted: bool = False,
                    option: str = 'path.pretrain_network_t') -> Dict[str, Any]:
    """Load ``path`` into ``net`` through the converter ``fmt`` (detected from the keys when ``'auto'``).

    Args:
        net: the network (DataParallel/DDP wrappers are looked through).
        path: checkpoint file.
        fmt: a name in :data:`CHECKPOINT_REGISTRY` (``basicsr``, ``state_dict``, ``rcan_official``, ``edsr_official``,
            ``swinir_official``, ``taming``, or your own), or ``auto``.
        param_key: wrapper key to read first (``params_ema`` falls back to ``params``, as in BasicSR); None tries the
            usual wrappers. Raw state dicts need none.
        strict: every network key must be filled and every checkpoint key used or dropped on purpose, with matching
            shapes. False loads what fits and reports the rest.
        trusted: allow full unpickling of the file (see :func:`load_checkpoint_file`).
        option: the option key naming the file, used in error messages.

    Returns:
        A report: ``file``, ``format``, ``param_key`` (wrapper used, None for a raw dict), ``mapped`` (network key ->
        checkpoint key), ``dropped`` (checkpoint key -> reason), ``recomputed`` (network key -> reason), ``missing``,
        ``unexpected`` and ``mismatched`` (key -> (checkpoint shape, network shape)); the last three are empty when
        ``strict``.

    Raises:
        OptionError: naming ``option`` and the file: missing file, unknown format, or keys/shapes that do not fit.
    """
    net = _bare(net)
    suffix = _suffix(option)
    raw = load_checkpoint_file(path, trusted=trusted, option=option)
    where = f'{option}: {path}'
    try:
        tensors, used = extract_state_dict(raw, param_key, f'path.trusted_{suffix}: true' if suffix else 'trusted')
        if fmt in (None, 'auto'):
            fmt = detect_format(tensors, net, used)
        if fmt not in CHECKPOINT_REGISTRY:
            fmt_option = FORMAT_OPTIONS.get(suffix, f'path.format_network_{suffix}') if suffix else 'format'
            raise UnknownTypeError('checkpoint format', fmt, CHECKPOINT_REGISTRY.keys(), where=f'{fmt_option} ({path})')
        result = CHECKPOINT_REGISTRY.get(fmt)(tensors, net)
    except ConversionError as error:
        raise OptionError(f'{where} (format {fmt}): {error}') from error
    if not isinstance(result, Conversion):
        result = Conversion(state_dict=OrderedDict(result), sources={k: k for k in result})

    own = net.state_dict()
    unexpected = [k for k in result.state_dict if k not in own]
    missing = [k for k in own if k not in result.state_dict and k not in result.recomputed]
    mismatched = OrderedDict((k, (tuple(v.shape), tuple(own[k].shape))) for k, v in result.state_dict.items()
                             if k in own and v.shape != own[k].shape)
    if strict and (unexpected or missing or mismatched):
        problems = []
        if missing:
            problems.append(f'network keys missing from the checkpoint: {_listing(missing)}')
        if unexpected:
            problems.append(f'checkpoint keys the network does not have: {_listing(unexpected)}')
        if mismatched:
            problems.append('shape mismatches (checkpoint vs network): ' +
                            _listing([f'{k} {a} vs {b}' for k, (a, b) in mismatched.items()], 4))
        strict_option = f'path.strict_load_{suffix}: false' if suffix else 'strict=False'
        raise OptionError(f'{where} does not fit {type(net).__name__} (format {fmt}): ' + '; '.join(problems) +
                          f'. Check the network options against the checkpoint, choose the right format, or set '
                          f'{strict_option} to load only what fits.')
    weights = OrderedDict(own)
    weights.update((k, v) for k, v in result.state_dict.items() if k in own and k not in mismatched)
    net.load_state_dict(weights, strict=True)
    report = {
        'file': path,
        'format': fmt,
        'param_key': used,
        'mapped': OrderedDict(
            (k, result.sources.get(k, k)) for k in result.state_dict if k in own and k not in mismatched),
        'dropped': result.dropped,
        'recomputed': result.recomputed,
        'missing': missing,
        'unexpected': unexpected,
        'mismatched': mismatched,
    }
    get_root_logger().info(f'Loaded {type(net).__name__} from {path} ({option}): {format_report(report)}')
    return report


def format_report(report: Mapping[str, Any]) -> str:
    """One-paragraph summary of a :func:`load_pretrained` report."""
    renamed = sum(1 for k, s in report['mapped'].items() if k != s)
    text = (f"format {report['format']}, {len(report['mapped'])} tensors loaded ({renamed} renamed), "
            f"{len(report['dropped'])} dropped on purpose")
    reasons = OrderedDict()
    for key, reason in report['dropped'].items():
        reasons.setdefault(reason, []).append(key)
    for reason, keys in reasons.items():
        text += f'\n  dropped ({reason}): {_listing(keys, 4)}'
    if report['recomputed']:
        text += f"\n  kept the network's own: {_listing(list(report['recomputed']), 4)}"
    for name in ('missing', 'unexpected', 'mismatched'):
        if report[name]:
            text += f'\n  {name} (not loaded): {_listing(list(report[name]), 8)}'
    return text


def check_output_size(teacher: nn.Module,
                      student: nn.Module,
                      lq_shape: Sequence[int] = (1, 3, 32, 32),
                      option: str = 'network_t',
                      path: Optional[str] = None) -> Tuple[int, ...]:
    """Run teacher and student on one input of ``lq_shape`` and check their outputs have the same size.

    Catches a teacher built with another ``upscale`` (or channel count) than the student before training starts.
    Both networks run in eval mode under ``torch.no_grad()``; their modes are restored.

    Returns:
        The common output shape.

    Raises:
        OptionError: naming ``option`` (and ``path``) when the sizes differ or the teacher's output is not finite.
    """
    outputs = []
    for net in (teacher, student):
        bare = _bare(net)
        param = next(iter(bare.parameters()), None)
        device = param.device if param is not None else torch.device('cpu')
        was_training = bare.training
        bare.eval()
        try:
            with torch.no_grad():
                out = bare(torch.full(tuple(lq_shape), 0.5, device=device))
        finally:
            bare.train(was_training)
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
