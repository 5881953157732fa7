"""Teacher-loading hooks: load published teacher and encoder checkpoints safely, or say exactly why not.

:func:`load_pretrained` reads a checkpoint without running pickled code, picks its tensors, converts their names with
a converter from :data:`CHECKPOINT_REGISTRY` (chosen by name, or detected with ``auto``) and loads them, raising
:class:`~dckd_basicsr.errors.OptionError` naming the option and the file when they do not fit.

Modules:

``safe_load``
    Reading files: :func:`load_checkpoint_file` (weights-only, else a restricted unpickler that turns every non-tensor
    class into an inert :class:`PickledObject`; full unpickling only for trusted files), :func:`pickled_objects`, and
    :func:`extract_state_dict` with the wrapper keys :data:`WRAPPER_KEYS`.
``registry``
    The converter contract (:class:`Conversion`, :class:`ConversionError`), :data:`CHECKPOINT_REGISTRY`,
    :func:`register_converter`, and auto-detection (:func:`detect_format`, :func:`detection_order`); the order in which
    ``auto`` asks the detectors is documented there.
``converters``
    The formats that keep the network's names, ``basicsr`` and ``state_dict``, and ``spandrel``.
``official_converters``
    ``rcan_official``, ``edsr_official`` and ``swinir_official``, with the releases each one reads and the network
    options they determine (:func:`~.official_converters.swinir_options`, also used by ``detect``).
``official_layouts``
    The key maps of the official RCAN and EDSR releases against BasicSR's archs, read in both directions, and the
    folding of a BasicSR RCAN's ``img_range`` / ``rgb_mean`` / ``res_scale`` into official weights.
``taming_converter``
    ``taming``: the taming-transformers VQGAN into the plugin's encoder.
``detect``
    The ``network_g`` block a bare BasicSR checkpoint holds, read from its keys and shapes.
``students``
    :func:`~.students.load_student`: a trained network built and loaded for ``dckd-infer``, ``dckd-export`` and
    ``dckd-profile``.
``spandrel_export``
    A student's weights in the layouts spandrel detects (``dckd-export --to spandrel``).
this file
    :func:`load_pretrained`, :func:`read_state_dict` and :func:`format_report`, the API the models and
    ``dckd-convert`` use.

A teacher of any architecture spandrel detects needs no converter: ``network_t: {type: SpandrelTeacher}``
(:mod:`dckd_basicsr.archs.spandrel_arch`) makes ``auto`` pick ``spandrel``, which hands the file's tensors, read by
the safe reader here, to ``spandrel.ModelLoader().load_from_state_dict``.

Register your own format, with a detector so that ``auto`` finds it too::

    from dckd_basicsr.checkpoints import register_converter

    @register_converter(detect=lambda state_dict, net, wrapper: any(k.startswith('backbone.') for k in state_dict))
    def my_format(state_dict, net):
        return {key.replace('backbone.', '', 1): value for key, value in state_dict.items()}

and select it with the format option (``path.teacher_format: my_format``) or let ``auto`` detect it.
"""
import re
from collections import OrderedDict
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

from basicsr.utils import get_root_logger
from torch import nn
from torch.nn.parallel import DataParallel, DistributedDataParallel

# registers the built-in formats, in the order they are listed
from dckd_basicsr.checkpoints import converters, official_converters, taming_converter  # noqa: F401
from dckd_basicsr.checkpoints.registry import (CHECKPOINT_REGISTRY, DEFAULT_PRIORITY, FALLBACK_FORMATS, Conversion,
                                               ConversionError, Detector, detect_format, detection_order,
                                               infer_network, register_converter)
from dckd_basicsr.checkpoints.safe_load import (WRAPPER_KEYS, PickledObject, RestrictedUnpickler, extract_state_dict,
                                                load_checkpoint_file, pickled_objects)
from dckd_basicsr.errors import OptionError, UnknownTypeError

__all__ = [
    'CHECKPOINT_REGISTRY', 'DEFAULT_PRIORITY', 'WRAPPER_KEYS', 'Conversion', 'ConversionError', 'Detector',
    'PickledObject', 'RestrictedUnpickler', 'detect_format', 'detection_order',
    'extract_state_dict', 'file_layout', 'format_report', 'infer_network', 'load_checkpoint_file', 'load_pretrained',
    'pickled_objects', 'read_state_dict', 'register_converter'
]


def _bare(net: nn.Module) -> nn.Module:
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


LIGHTNING_KEYS = ('pytorch-lightning_version', 'global_step', 'optimizer_states', 'callbacks')


def file_layout(path: str, raw: Any, wrapper: Optional[str]) -> str:
    """What the file is, for the report: ``BasicSR file (params)``, ``Lightning checkpoint (state_dict)``, ..."""
    container = 'safetensors file' if str(path).lower().endswith('.safetensors') else None
    if isinstance(raw, nn.Module):
        return f'pickled {type(raw).__name__} model'
    if wrapper in ('params', 'params_ema'):
        return f'BasicSR file ({wrapper})'
    if wrapper is None:
        return container or 'raw state dict'
    if isinstance(raw, Mapping) and any(key in raw for key in LIGHTNING_KEYS):
        return f'Lightning checkpoint ({wrapper})'
    return f'checkpoint with the tensors under {wrapper!r}'


def read_state_dict(path: str,
                    param_key: Optional[str] = 'params',
                    trusted: bool = False,
                    option: str = 'path.pretrain_network_t') -> Tuple[Dict[str, Any], Optional[str], str]:
    """The tensors of a checkpoint file as :func:`load_pretrained` reads them: ``(tensors, wrapper key or None,
    file layout)``. Raises OptionError naming ``option`` and the file."""
    suffix = _suffix(option)
    raw = load_checkpoint_file(path, trusted=trusted, option=option)
    try:
        tensors, used = extract_state_dict(raw, param_key, f'path.trusted_{suffix}: true' if suffix else 'trusted')
    except ConversionError as error:
        raise OptionError(f'{option}: {path}: {error}') from error
    return tensors, used, file_layout(path, raw, used)


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
        path: checkpoint file (``.pth``, ``.pt``, ``.ckpt``, ``.safetensors``).
        fmt: a name in :data:`CHECKPOINT_REGISTRY` (``spandrel``, ``basicsr``, ``state_dict``, ``rcan_official``,
            ``edsr_official``, ``swinir_official``, ``taming``, or your own), or ``auto``.
        param_key: wrapper key to read first (``params_ema`` falls back to ``params``, as in BasicSR); None tries the
            usual wrappers. Raw state dicts need none.
        strict: every network key must be filled and every checkpoint key used or dropped on purpose, with matching
            shapes. False loads what fits and reports the rest.
        trusted: allow full unpickling of the file (see :func:`load_checkpoint_file`).
        option: the option key naming the file, used in error messages.

    Returns:
        A report: ``file``, ``layout`` (what the file is: :func:`file_layout`), ``format`` (the converter that read
        it), ``param_key`` (wrapper used, None for a raw dict), ``mapped`` (network key ->
        checkpoint key), ``dropped`` (checkpoint key -> reason), ``recomputed`` (network key -> reason), ``missing``,
        ``unexpected`` and ``mismatched`` (key -> (checkpoint shape, network shape)); the last three are empty when
        ``strict``.

    Raises:
        OptionError: naming ``option`` and the file: missing file, unknown format, or keys/shapes that do not fit.
    """
    net = _bare(net)
    suffix = _suffix(option)
    fmt_option = FORMAT_OPTIONS.get(suffix, f'path.format_network_{suffix}') if suffix else None
    raw = load_checkpoint_file(path, trusted=trusted, option=option)
    where = f'{option}: {path}'
    detected = fmt in (None, 'auto')
    try:
        tensors, used = extract_state_dict(raw, param_key, f'path.trusted_{suffix}: true' if suffix else 'trusted')
        layout = file_layout(path, raw, used)
        if detected:
            fmt = detect_format(tensors, net, used)
        if fmt not in CHECKPOINT_REGISTRY:
            raise UnknownTypeError('checkpoint format', fmt, CHECKPOINT_REGISTRY.keys(),
                                   where=f'{fmt_option or "format"} ({path})')
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
        if detected and fmt in FALLBACK_FORMATS:
            asked = ', '.join(name for name, _ in detection_order())
            problems.append(f'no format was recognised (auto asked, in order: {asked}), so the keys were taken as '
                            'they are')
        strict_option = f'path.strict_load_{suffix}: false' if suffix else 'strict=False'
        format_hint = f' ({fmt_option})' if fmt_option else ''
        raise OptionError(f'{where} does not fit {type(net).__name__} (format {fmt}): ' + '; '.join(problems) +
                          f'. Check the network options against the checkpoint, choose the right format{format_hint}, '
                          f'or set {strict_option} to load only what fits.')
    weights = OrderedDict(own)
    weights.update((k, v) for k, v in result.state_dict.items() if k in own and k not in mismatched)
    net.load_state_dict(weights, strict=True)
    report = {
        'file': path,
        'layout': layout,
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
    layout = f" ({report['layout']})" if report.get('layout') else ''
    text = (f"format {report['format']}{layout}, {len(report['mapped'])} tensors loaded ({renamed} renamed), "
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
