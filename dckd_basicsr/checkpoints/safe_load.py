"""Reading checkpoint files without running code stored in them, and finding their tensors.

:func:`load_checkpoint_file` reads ``.safetensors`` files with :func:`read_safetensors` (no code can be stored in
them) and everything else with ``torch.load(weights_only=True)`` (BasicSR files and the official RCAN, EDSR,
SwinIR, NAFNet and Restormer releases); files it refuses, such as taming-transformers' Lightning checkpoints (which
pickle callbacks, omegaconf and argparse objects), go through :class:`RestrictedUnpickler`, which rebuilds tensors and
plain containers and turns every other class into an inert :class:`PickledObject`. Full unpickling runs only when the
user says the file is trusted (``path.trusted_<suffix>: true``, ``dckd-convert --trusted``).

:func:`extract_state_dict` then picks the tensors: ``params`` / ``params_ema`` with BasicSR's fallback, the usual
wrappers (:data:`WRAPPER_KEYS`), ``module.`` prefixes removed.
"""
import _compat_pickle
import os.path as osp
import pickle
import types
from collections import OrderedDict
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch
import torch._utils as tutils
from basicsr.utils import get_root_logger
from torch import nn

from dckd_basicsr.checkpoints.registry import ConversionError
from dckd_basicsr.errors import OptionError

# Wrapper keys tried, in this order, when the file is not a flat dict of tensors (after the requested param_key).
WRAPPER_KEYS = ('params', 'params_ema', 'params-ema', 'state_dict', 'model_state_dict', 'model', 'net', 'network')


class PickledObject:
    """Inert stand-in for a class a checkpoint pickled (Lightning callbacks, omegaconf, argparse, user classes).

    Calling, constructing or restoring it only stores the arguments; no code of the original class runs. The
    original name is in ``pickled_name``.
    """
    pickled_name = '?'

    def __new__(cls, *args, **kwargs):  # pickle's NEWOBJ and REDUCE (a call) both come here; object.__init__ is a no-op
        obj = object.__new__(cls)
        obj.__dict__['pickled_args'] = args
        return obj

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
                '__module__': __name__,
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
    if not (isinstance(metadata, dict) and all(isinstance(v, bool) for v in metadata.values())):
        metadata = None
    return tutils._rebuild_tensor_v2(storage, storage_offset, size, stride, bool(requires_grad), OrderedDict(),
                                     metadata)


def _rebuild_parameter(data, requires_grad, backward_hooks, state=None):
    # Stands for _rebuild_parameter and _rebuild_parameter_with_state, without hooks and pickled attributes.
    if not isinstance(data, torch.Tensor):
        raise pickle.UnpicklingError(f'a pickled Parameter holds a {type(data).__name__}, not a tensor')
    return nn.Parameter(data, requires_grad=bool(requires_grad))


# The only globals a checkpoint may resolve to real objects: containers, torch types and tensor rebuilders (the
# parameter/tensor ones replaced by the versions above, which drop pickled hooks and attributes).
_ALLOWED_GLOBALS: Dict[Tuple[str, str], Any] = {
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

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _compat_pickle.NAME_MAPPING:  # Python 2 names, as pickle's own find_class maps them
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        obj = _ALLOWED_GLOBALS.get((module, name))
        if obj is not None:
            return obj
        if module == 'torch' and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        return _placeholder(module, name)


def _restricted_load(file, **kwargs):
    return RestrictedUnpickler(file, **kwargs).load()


# torch.load(pickle_module=...) uses the module's Unpickler (zip format) and load (legacy pre-1.6 format).
restricted_pickle = types.ModuleType('dckd_basicsr_restricted_pickle')
restricted_pickle.Unpickler = RestrictedUnpickler
restricted_pickle.load = _restricted_load


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


def read_safetensors(path: str) -> Dict[str, Any]:
    """The tensors of a ``.safetensors`` file on the CPU.

    A file this plugin wrote (``logger.save_format: safetensors``; its metadata lists ``param_keys``, e.g.
    ``params,params_ema``) comes back nested as the ``.pth`` file would be, ``{'params': {...}, 'params_ema': {...}}``;
    any other file (a model hub's) is one flat state dict.
    """
    from safetensors import safe_open
    with safe_open(str(path), framework='pt', device='cpu') as file:
        metadata = file.metadata() or {}
        tensors = OrderedDict((name, file.get_tensor(name)) for name in file.keys())
    param_keys = [key for key in metadata.get('param_keys', '').split(',') if key]
    if not param_keys or not all(any(name.startswith(f'{key}.') for name in tensors) for key in param_keys):
        return tensors
    nested = OrderedDict((key, OrderedDict()) for key in param_keys)
    for name, tensor in tensors.items():
        key, _, rest = name.partition('.')
        nested[key][rest] = tensor
    return nested


# What to do about a file that cannot be read, by the diagnosis of :func:`unreadable_file`.
REFETCH = 'download it again, or run again the training that wrote it'


def _safetensors_data_size(path: str, header_size: int) -> int:
    """The data size a safetensors header announces (the end of its last tensor), or 0 when it cannot be read."""
    import json
    try:
        with open(path, 'rb') as f:
            f.seek(8)
            header = json.loads(f.read(header_size))
        return max((entry['data_offsets'][1] for name, entry in header.items() if name != '__metadata__'), default=0)
    except (ValueError, KeyError, TypeError, IndexError):
        return 0


def unreadable_file(path: str, error: Optional[BaseException] = None) -> str:
    """What is wrong with a checkpoint file that could not be read, in words, and what to do: empty, ending early
    (a truncated download or an interrupted write), damaged inside, an HTML page saved instead of the file, or no
    checkpoint at all. ``error`` is the reader's own error, quoted when nothing better is known."""
    import zipfile
    size = osp.getsize(path)
    with open(path, 'rb') as f:
        head = f.read(64)
    if size == 0:
        return f'the file is empty (0 bytes); {REFETCH}.'
    if str(path).lower().endswith('.safetensors'):
        header = int.from_bytes(head[:8], 'little') if len(head) >= 8 else 0
        if len(head) > 8 and head[8:9] != b'{':
            return 'the file is not a safetensors file (it does not start with a safetensors header).'
        if len(head) < 8 or 8 + header > size or 8 + header + _safetensors_data_size(path, header) > size:
            return f'the file ends early ({size} bytes; a truncated download?); {REFETCH}.'
        return f'the file is a safetensors file whose contents are damaged ({error}); {REFETCH}.'
    if head.startswith(b'PK\x03\x04'):  # torch's zip format keeps its directory at the end of the file
        if not zipfile.is_zipfile(path):
            return (f'the file ends early ({size} bytes; a truncated download or an interrupted write?): it starts as '
                    f'a PyTorch checkpoint but its end is missing; {REFETCH}.')
        first = str(error).strip().splitlines()[0] if error is not None and str(error).strip() else 'unknown error'
        return f'the file is a PyTorch checkpoint that cannot be read ({first[:200]}); {REFETCH}.'
    elif head[:1] == b'\x80':  # a pickle: torch's legacy format
        text = str(error or '')
        if 'EOF' in text or 'Ran out of input' in text or 'truncated' in text:
            return f'the file ends early ({size} bytes; a truncated download?); {REFETCH}.'
    stripped = head.lstrip().lower()
    if stripped.startswith((b'<!doctype html', b'<html', b'<?xml', b'<')):
        return ('the file is an HTML page, not a checkpoint (a download saved the web page instead of the file?); '
                'download the file itself.')
    if stripped.startswith(b'version https://git-lfs'):
        return 'the file is a Git LFS pointer, not the checkpoint; fetch it with git lfs pull or download it.'
    first = str(error).strip().splitlines()[0] if error is not None and str(error).strip() else ''
    return f'the file is not a PyTorch or safetensors checkpoint ({first[:200] or "unrecognised content"}).'


def damaged_file(path: str) -> Optional[str]:
    """:func:`unreadable_file`'s words for a checkpoint that is visibly damaged without reading it whole (empty, a
    zip checkpoint or safetensors file that ends early, an HTML page, a Git LFS pointer), else None. Cheap enough for
    the preflight: it reads the start of the file and, for the zip format, its directory at the end."""
    import zipfile
    size = osp.getsize(path)
    with open(path, 'rb') as f:
        head = f.read(64)
    damaged = (size == 0 or (head.startswith(b'PK\x03\x04') and not zipfile.is_zipfile(path)) or
               head.lstrip().lower().startswith((b'<!doctype html', b'<html', b'version https://git-lfs')))
    if str(path).lower().endswith('.safetensors') and len(head) > 8 and head[8:9] == b'{':
        header = int.from_bytes(head[:8], 'little')
        damaged = damaged or 8 + header > size or 8 + header + _safetensors_data_size(path, header) > size
    return unreadable_file(path) if damaged else None


def load_checkpoint_file(path: str, trusted: bool = False, option: Optional[str] = None) -> Any:
    """Read a checkpoint onto the CPU without executing code from it.

    0. ``.safetensors`` files: :func:`read_safetensors` (``trusted`` does not matter: they hold only tensors).
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
        OptionError: the file is missing or cannot be read, in one line saying what is wrong with it and what to do
            (:func:`unreadable_file`).
    """
    where = f'{option}: ' if option else ''
    if not path or not osp.isfile(str(path)):
        raise OptionError(f'{where}{path}: no such checkpoint file.')
    if osp.getsize(path) == 0:
        raise OptionError(f'{where}{path}: {unreadable_file(path)}')
    if str(path).lower().endswith('.safetensors'):
        try:
            return read_safetensors(path)
        except Exception as error:  # noqa: B902  (safetensors' own error types differ between versions)
            raise OptionError(f'{where}{path}: {unreadable_file(path, error)}') from error
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except Exception:  # noqa: B902  (weights-only refusal, or not a checkpoint at all; told apart below)
        pass
    try:
        if trusted:
            return torch.load(path, map_location='cpu', weights_only=False)
        obj = torch.load(path, map_location='cpu', weights_only=False, pickle_module=restricted_pickle)
    except Exception as error:  # noqa: B902
        if trusted and damaged_file(path) is None:
            raise OptionError(f'{where}{path}: full unpickling (trusted) failed: {error}. Without trusted, the '
                              'classes the file pickles are replaced by inert placeholders.') from error
        raise OptionError(f'{where}{path}: {unreadable_file(path, error)}') from error
    names = pickled_objects(obj)
    if names:
        get_root_logger().info(f'{path}: pickled objects kept as inert placeholders (not executed): '
                               f'{", ".join(names)}')
    return obj


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
