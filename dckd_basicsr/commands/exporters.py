"""The formats ``dckd-export`` writes and how each file is checked against the network before it is kept: ONNX
(:func:`export_onnx`), TorchScript (:func:`export_torchscript`) and a spandrel-loadable state dict
(:func:`export_spandrel`); the input/output convention written next to the file (:func:`convention`); the sizes
checked (:func:`check_sizes`); the operator an exporter's error names (:func:`failing_op`). See
:mod:`dckd_basicsr.commands.export` for what each format holds.
"""
import contextlib
import json
import os
import os.path as osp
import re
import time
import warnings
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from dckd_basicsr.archs.padding import PaddedNetwork, padded_forward
from dckd_basicsr.checkpoints.spandrel_export import spandrel_state_dict
from dckd_basicsr.checkpoints.students import Student
from dckd_basicsr.errors import OptionError

# The batch of the example the graphs are exported with and checked at, besides 1 (a batch of 1 would be fixed).
CHECK_BATCH = 2


@contextlib.contextmanager
def stage(text: str) -> Iterator[None]:
    """Print ``dckd-export: <text> ...`` now and ``dckd-export: <text>: done in <s> s`` when the stage ends."""
    print(f'dckd-export: {text} ...', flush=True)
    start = time.perf_counter()
    yield
    print(f'dckd-export: {text}: done in {time.perf_counter() - start:.1f} s', flush=True)


class ExportError(OptionError):
    """An export that failed or whose result differs from the network."""


def _window_reverse(windows: Tensor, window_size: int, h: int, w: int) -> Tensor:
    """BasicSR SwinIR's ``window_reverse`` with the batch inferred by ``view(-1, ...)`` instead of computed with
    ``int()``, which a trace or export records as a constant (the same values)."""
    x = windows.view(-1, h // window_size, w // window_size, window_size, window_size, windows.shape[-1])
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, h, w, windows.shape[-1])


@contextlib.contextmanager
def batch_free_code() -> Iterator[None]:
    """While exporting, BasicSR's SwinIR computes its window shapes without fixing the batch size."""
    import basicsr.archs.swinir_arch as swinir
    original = swinir.window_reverse
    swinir.window_reverse = _window_reverse
    try:
        yield
    finally:
        swinir.window_reverse = original


def check_integer_scale(net: nn.Module, channels: int, multiple: int) -> Tuple[int, int]:
    """Run ``net`` once on a small input: an error when output size / input size is no integer (the padded graph
    crops the output to the scale times the input size). Returns (scale, output channels)."""
    size = max(16, multiple) if multiple == 1 else multiple * max(1, -(-16 // multiple))
    with torch.no_grad():
        out = padded_forward(net, torch.zeros(1, channels, size, size), multiple)
    if out.shape[-1] % size or out.shape[-2] % size:
        raise ExportError(f'the network maps {size}x{size} to {out.shape[-2]}x{out.shape[-1]}: no integer scale.')
    return out.shape[-1] // size, out.shape[1]


def convention(arch: str, channels: int, out_channels: int, scale: int, multiple: int,
               dynamic_batch: bool = True) -> Dict[str, Any]:
    """The input/output convention of an exported graph, as written next to it and into the ONNX metadata."""
    color = {1: 'gray', 3: 'RGB'}.get(channels, f'{channels} channels')
    batch = 'N' if dynamic_batch else 1
    return {
        'arch': arch, 'scale': scale,
        'input': {'name': 'input', 'shape': [batch, channels, 'H', 'W'], 'layout': 'NCHW', 'dtype': 'float32',
                  'color': color, 'range': [0.0, 1.0],
                  'dynamic': f'{"N, H and W" if dynamic_batch else "H and W (the batch is 1)"}; H and W at least '
                             f'{max(multiple, 2)} pixels'},
        'output': {'name': 'output', 'shape': [batch, out_channels, f'{scale}*H', f'{scale}*W'], 'layout': 'NCHW',
                   'dtype': 'float32', 'color': {1: 'gray', 3: 'RGB'}.get(out_channels, f'{out_channels} channels'),
                   'range': [0.0, 1.0], 'clamped': False},
        'padding': f'inside the graph: reflect to a multiple of {multiple} (bottom/right), output cropped back'
        if multiple > 1 else 'none needed',
    }


def describe_convention(conv: Dict[str, Any]) -> str:
    i, o = conv['input'], conv['output']
    shape = lambda s: '(' + ', '.join(map(str, s)) + ')'  # noqa: E731
    return (f"input '{i['name']}' {shape(i['shape'])} {i['dtype']} {i['color']} in [0, 1], {i['layout']}, dynamic "
            f"{i['dynamic']}; output '{o['name']}' {shape(o['shape'])} {o['color']} in [0, 1] (not clamped)")


def write_convention(path: str, conv: Dict[str, Any], onnx_metadata: bool) -> str:
    """``<path>.json`` and, for ONNX, the model's ``metadata_props``; returns the JSON file's path."""
    sidecar = f'{path}.json'
    with open(sidecar, 'w') as f:
        json.dump(conv, f, indent=2)
        f.write('\n')
    if onnx_metadata:
        import onnx
        model = onnx.load(path)
        del model.metadata_props[:]
        for key, value in (('dckd_basicsr.convention', json.dumps(conv)), ('description', describe_convention(conv))):
            model.metadata_props.add(key=key, value=value)
        onnx.save(model, path)
    return sidecar


def check_sizes(size: int, multiple: int, avoid: Optional[int] = None) -> List[Tuple[int, int]]:
    """Sizes (height, width) for export and checks: the export size first, then a different one that is no multiple
    of ``multiple``, then a multiple of 16.

    The export size is ``size`` moved to an odd number that is no multiple of ``multiple`` (when ``multiple > 1``), so
    a trace records the padding branches of networks that pad themselves (NAFNet, Restormer) and of
    ``PaddedNetwork``; and whose padded size is not ``avoid`` (SwinIR's ``img_size``, whose stored attention mask
    a trace would bake in).
    """
    size = max(size, multiple + 1, 9)

    def awkward(n: int) -> bool:
        return n % 2 == 1 and (multiple == 1 or n % multiple != 0) and (avoid is None or -(-n // multiple) * multiple
                                                                         != avoid)

    while not awkward(size):
        size += 1
    height, width = size + 6, max(size - 4, multiple + 1, 2)
    while multiple > 1 and height % multiple == 0:
        height += 1
    while multiple > 1 and width % multiple == 0:
        width += 1
    round_size = max(16, multiple) * max(1, -(-size // max(16, multiple)))
    return [(size, size), (height, width), (round_size, round_size)]


def _error_text(error: BaseException) -> str:
    """The messages of ``error`` and its causes, ANSI colours removed."""
    seen = []
    while error is not None and error not in seen:
        seen.append(error)
        error = error.__cause__ or error.__context__
    return re.sub(r'\x1b\[[0-9;]*m', '', '\n'.join(str(e) for e in seen))


# Operator names as the exporters print them, most specific first: the dynamo exporter's OpOverload(op='ns.name',
# overload='default') and torch.ops.ns.name.overload, TorchScript's ns::name.
_OP_PATTERNS = (r"OpOverload\(op='([\w.]+)', overload='(\w+)'\)", r'torch\.ops\.(\w+\.\w+)\.(\w+)',
                r'\b(aten::\w+|(?!torch::|c10::|at::|std::)[A-Za-z_]\w*::[A-Za-z_]\w*)()')


def failing_op(error: BaseException) -> Optional[Tuple[str, str]]:
    """The operator an exporter's error (or one of its causes) names, and the message line that names it."""
    text = _error_text(error)
    for pattern in _OP_PATTERNS:
        match = re.search(pattern, text)
        if match:
            op = '.'.join(part for part in match.groups() if part)
            line = next(line for line in text.splitlines() if match.group(0) in line)
            return op, re.sub(r"^<class '[\w.]+'>: ", '', line.strip())
    return None


def _first_line(error: BaseException) -> str:
    lines = [line for line in _error_text(error).splitlines() if line.strip()]
    return lines[0].strip() if lines else type(error).__name__


def _cannot_export(arch: str, target: str, error: BaseException) -> ExportError:
    found = failing_op(error)
    if found:
        op, line = found
        return ExportError(f'{arch} cannot be exported to {target}: the exporter stopped at operator {op} '
                           f'({line[:300]}).')
    return ExportError(f'{arch} cannot be exported to {target}: {type(error).__name__}: {_first_line(error)[:300]}')


def _compare(name: str, produced: Tensor, expected: Tensor, atol: float, shape: Sequence[int], path: str) -> float:
    if tuple(produced.shape) != tuple(expected.shape):
        _remove(path)
        raise ExportError(f'{name} gives shape {tuple(produced.shape)} for input {tuple(shape)}, PyTorch '
                          f'{tuple(expected.shape)}; {path} was not kept.')
    diff = (produced.float() - expected.float()).abs().max().item()
    print(f'dckd-export: {name} vs PyTorch at input {"x".join(map(str, shape))}: max abs difference {diff:.3g} '
          f'(limit {atol:g})', flush=True)
    if not diff <= atol:
        _remove(path)
        raise ExportError(f'{name} differs from PyTorch by {diff:.3g} > {atol:g} at input {tuple(shape)}; {path} was '
                          'not kept.')
    return diff


def _fails_at(name: str, shape: Sequence[int], error: BaseException, path: str) -> ExportError:
    _remove(path)
    return ExportError(f'the exported graph fails in {name} at input {tuple(shape)} ({type(error).__name__}: '
                       f'{_first_line(error)[:300]}); the network has shape logic the export cannot keep dynamic. '
                       f'{path} was not kept.')


def _remove(path: str) -> None:
    if osp.isfile(path):
        os.remove(path)
    if osp.isfile(path + '.data'):
        os.remove(path + '.data')


def _inputs(channels: int, sizes: Sequence[Tuple[int, int]], seed: int = 0, batch: int = 1) -> List[Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.rand(batch, channels, h, w, generator=generator) for h, w in sizes]


def _check_inputs(channels: int, sizes: Sequence[Tuple[int, int]], dynamic_batch: bool = True) -> List[Tensor]:
    """One image at each check size, then (``dynamic_batch``) a batch of :data:`CHECK_BATCH` at the second."""
    batch = _inputs(channels, [sizes[min(1, len(sizes) - 1)]], seed=2, batch=CHECK_BATCH) if dynamic_batch else []
    return _inputs(channels, sizes) + batch


def export_onnx(wrapper: PaddedNetwork, path: str, channels: int, export_size: Tuple[int, int],
                check: Sequence[Tuple[int, int]], opset: int = 18, atol: float = 1e-4,
                arch: str = 'the network', dynamic_batch: bool = True) -> List[float]:
    """Export ``wrapper`` to ONNX with dynamic batch (unless ``dynamic_batch`` is false: then 1), height and width and
    check it with onnxruntime at the ``check`` sizes and with a batch of :data:`CHECK_BATCH`; returns the max abs
    differences."""
    try:
        import onnx  # noqa: F401  (torch.onnx's dynamo exporter needs onnx and onnxscript)
        import onnxruntime
        import onnxscript  # noqa: F401
    except ImportError as error:
        raise ExportError(f'--to onnx needs onnx, onnxscript and onnxruntime ({error}); install them with '
                          'pip install "dckd-basicsr[export]" (or pip install -e ".[export]" in a clone).') from error
    # an example batch of 1 would be fixed at 1
    example = _inputs(channels, [export_size], seed=1, batch=CHECK_BATCH if dynamic_batch else 1)[0]
    low = max(2, wrapper.multiple)  # from this size on the exporter proves the padding rule's reflect branch
    dims = {2: torch.export.Dim('height', min=low), 3: torch.export.Dim('width', min=low)}
    if dynamic_batch:
        dims[0] = torch.export.Dim('batch', min=1)
    try:
        with stage(f'exporting {arch} to ONNX (opset {opset}, torch.onnx dynamo exporter)'), \
                warnings.catch_warnings(), batch_free_code():
            warnings.simplefilter('ignore')
            torch.onnx.export(wrapper, (example, ), path, dynamo=True, input_names=['input'], output_names=['output'],
                              dynamic_shapes={'x': dims}, opset_version=opset, verbose=False, external_data=False)
    except Exception as error:  # noqa: B902  (any exporter failure becomes one message naming the operator)
        _remove(path)
        raise _cannot_export(arch, f'ONNX (opset {opset})', error) from error
    with stage('checking the ONNX file with onnxruntime'):
        return _check_onnx(onnxruntime, wrapper, path, channels, check, atol, dynamic_batch)


def _check_onnx(onnxruntime: Any, wrapper: PaddedNetwork, path: str, channels: int, check: Sequence[Tuple[int, int]],
                atol: float, dynamic_batch: bool) -> List[float]:
    session = onnxruntime.InferenceSession(path, providers=['CPUExecutionProvider'])
    diffs = []
    for x in _check_inputs(channels, check, dynamic_batch):
        with torch.no_grad():
            expected = wrapper(x)
        try:
            produced = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
        except Exception as error:  # noqa: B902
            raise _fails_at('onnxruntime', x.shape, error, path) from error
        diffs.append(_compare('onnxruntime', produced, expected, atol, x.shape, path))
    return diffs


def export_torchscript(wrapper: PaddedNetwork, path: str, channels: int, export_size: Tuple[int, int],
                       check: Sequence[Tuple[int, int]], atol: float = 1e-4, arch: str = 'the network',
                       dynamic_batch: bool = True) -> List[float]:
    """Trace ``wrapper`` to TorchScript and check the saved file at the ``check`` sizes (and a batch of
    :data:`CHECK_BATCH` unless ``dynamic_batch`` is false); returns the differences."""
    example = _inputs(channels, [export_size], seed=1, batch=CHECK_BATCH if dynamic_batch else 1)[0]
    try:
        with stage(f'tracing {arch} to TorchScript'), warnings.catch_warnings(), torch.no_grad(), batch_free_code():
            warnings.simplefilter('ignore')  # tracer warnings (the check below is the test) and jit's deprecation
            traced = torch.jit.trace(wrapper, example, check_trace=False)
            torch.jit.save(traced, path)
    except Exception as error:  # noqa: B902
        _remove(path)
        raise _cannot_export(arch, 'TorchScript', error) from error
    with stage('checking the TorchScript file'):
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            loaded = torch.jit.load(path, map_location='cpu')
        diffs = []
        for x in _check_inputs(channels, check, dynamic_batch):
            with torch.no_grad():
                try:
                    produced = loaded(x)
                except Exception as error:  # noqa: B902
                    raise _fails_at('TorchScript', x.shape, error, path) from error
                diffs.append(_compare('TorchScript', produced, wrapper(x), atol, x.shape, path))
    return diffs


def export_spandrel(student: Student, path: str, channels: int, check: Sequence[Tuple[int, int]],
                    atol: float = 1e-4) -> List[float]:
    """Write the spandrel file, load it with ``spandrel.ModelLoader`` and compare its output with the network's."""
    from spandrel import ModelLoader
    state_dict = spandrel_state_dict(student, atol)
    if path.lower().endswith('.safetensors'):
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in state_dict.items()}, path)
    else:
        torch.save(state_dict, path)
    try:
        descriptor = ModelLoader().load_from_file(path)
    except Exception as error:  # noqa: B902
        _remove(path)
        raise ExportError(f'spandrel cannot load the exported {student.opt["type"]} ({type(error).__name__}: '
                          f'{_first_line(error)}); {path} was not kept.') from error
    descriptor.model.eval()
    print(f'dckd-export: spandrel reads {path} as {descriptor.architecture.id} x{descriptor.scale} '
          f'({descriptor.input_channels} -> {descriptor.output_channels} channels)', flush=True)
    diffs = []
    multiple = 1 if hasattr(student.net, 'spandrel_arch') else student.pad_multiple  # pads itself, as spandrel does
    for x in _inputs(channels, check):
        with torch.no_grad():
            expected = padded_forward(student.net, x, multiple).clamp(0, 1)
            diffs.append(_compare('spandrel', descriptor(x.clone()), expected, atol, x.shape, path))
    return diffs
