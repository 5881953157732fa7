"""Export a trained student: ``dckd-export --model net_g_X.pth [-opt FILE] --to onnx|torchscript|spandrel -o OUT``.

The network is built as ``dckd-infer`` builds it (``-opt`` or detected from the checkpoint; EMA weights when present).

``onnx``
    ``torch.onnx.export`` (the dynamo exporter) of :class:`~dckd_basicsr.archs.padding.PaddedNetwork`: the network
    with validation's padding rule inside the graph (reflect-pad bottom/right to ``val.pad_multiple`` / the SwinIR
    window, run, crop the output back), so height and width are dynamic and need not be multiples of the window;
    inputs must be at least ``multiple`` pixels high and wide (reflection needs it). Input ``input`` ``(1, C, H, W)``
    RGB in [0, 1], output ``output`` ``(1, C, s*H, s*W)``. Checked with onnxruntime (CPU) against PyTorch at the
    export size, at a different size that is no multiple of the window and at a multiple of 16 (:func:`check_sizes`);
    the largest absolute difference is printed and the file is refused (deleted) above ``--atol`` (1e-4).
``torchscript``
    ``torch.jit.trace`` of the same ``PaddedNetwork`` (shapes are traced, so the padding stays dynamic), checked
    the same way with ``torch.jit.load``.
``spandrel``
    A state dict in the official key layout spandrel detects (``.pth``, or ``.safetensors`` by the file name), so
    chaiNNer, ComfyUI or ``spandrel.ModelLoader`` open the student directly; the hyperparameters spandrel cannot read
    from the weights are folded into them (:mod:`dckd_basicsr.checkpoints.spandrel_export`). Checked by loading the
    file with spandrel and comparing its output with the network's. spandrel 0.4 has no EDSR, MSRResNet or Restormer
    architecture: those export to ONNX or TorchScript.

An arch that an exporter cannot handle stops with a message naming the operator the exporter reported.
"""
import argparse
import os
import os.path as osp
import re
import warnings
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from dckd_basicsr.archs.arch_util import input_channels
from dckd_basicsr.archs.padding import PaddedNetwork, padded_forward
from dckd_basicsr.checkpoints.spandrel_export import spandrel_state_dict
from dckd_basicsr.checkpoints.students import Student, load_student
from dckd_basicsr.commands.student_arguments import add_student_arguments
from dckd_basicsr.errors import OptionError, report_option_errors

FORMATS = ('onnx', 'torchscript', 'spandrel')


class ExportError(OptionError):
    """An export that failed or whose result differs from the network."""


def check_integer_scale(net: nn.Module, channels: int, multiple: int) -> None:
    """Run ``net`` once on a small input: an error when output size / input size is no integer (the padded graph
    crops the output to the scale times the input size)."""
    size = max(16, multiple) if multiple == 1 else multiple * max(1, -(-16 // multiple))
    with torch.no_grad():
        out = padded_forward(net, torch.zeros(1, channels, size, size), multiple)
    if out.shape[-1] % size or out.shape[-2] % size:
        raise ExportError(f'the network maps {size}x{size} to {out.shape[-2]}x{out.shape[-1]}: no integer scale.')


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


def _inputs(channels: int, sizes: Sequence[Tuple[int, int]], seed: int = 0) -> List[Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.rand(1, channels, h, w, generator=generator) for h, w in sizes]


def export_onnx(wrapper: PaddedNetwork, path: str, channels: int, export_size: Tuple[int, int],
                check: Sequence[Tuple[int, int]], opset: int = 18, atol: float = 1e-4,
                arch: str = 'the network') -> List[float]:
    """Export ``wrapper`` to ONNX with dynamic height/width and check it with onnxruntime at the ``check`` sizes;
    returns the max abs differences."""
    try:
        import onnx  # noqa: F401  (torch.onnx's dynamo exporter needs onnx and onnxscript)
        import onnxruntime
        import onnxscript  # noqa: F401
    except ImportError as error:
        raise ExportError(f'--to onnx needs onnx, onnxscript and onnxruntime ({error}); install them with '
                          'pip install "dckd-basicsr[export]" (or pip install -e ".[export]" in a clone).') from error
    example = _inputs(channels, [export_size], seed=1)[0]
    low = max(2, wrapper.multiple)  # from this size on the exporter proves the padding rule's reflect branch
    dims = {2: torch.export.Dim('height', min=low), 3: torch.export.Dim('width', min=low)}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            torch.onnx.export(wrapper, (example, ), path, dynamo=True, input_names=['input'], output_names=['output'],
                              dynamic_shapes={'x': dims}, opset_version=opset, verbose=False, external_data=False)
    except Exception as error:  # noqa: B902  (any exporter failure becomes one message naming the operator)
        _remove(path)
        raise _cannot_export(arch, f'ONNX (opset {opset})', error) from error
    session = onnxruntime.InferenceSession(path, providers=['CPUExecutionProvider'])
    diffs = []
    for x in _inputs(channels, check):
        with torch.no_grad():
            expected = wrapper(x)
        try:
            produced = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
        except Exception as error:  # noqa: B902
            raise _fails_at('onnxruntime', x.shape, error, path) from error
        diffs.append(_compare('onnxruntime', produced, expected, atol, x.shape, path))
    return diffs


def export_torchscript(wrapper: PaddedNetwork, path: str, channels: int, export_size: Tuple[int, int],
                       check: Sequence[Tuple[int, int]], atol: float = 1e-4, arch: str = 'the network') -> List[float]:
    """Trace ``wrapper`` to TorchScript and check the saved file at the ``check`` sizes; returns the differences."""
    example = _inputs(channels, [export_size], seed=1)[0]
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter('ignore')  # tracer warnings (the check below is the test) and jit's deprecation
            traced = torch.jit.trace(wrapper, example, check_trace=False)
            torch.jit.save(traced, path)
    except Exception as error:  # noqa: B902
        _remove(path)
        raise _cannot_export(arch, 'TorchScript', error) from error
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        loaded = torch.jit.load(path, map_location='cpu')
    diffs = []
    for x in _inputs(channels, check):
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
    state_dict = spandrel_state_dict(student)
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
    for x in _inputs(channels, check):
        with torch.no_grad():
            expected = padded_forward(student.net, x, student.pad_multiple).clamp(0, 1)
            diffs.append(_compare('spandrel', descriptor(x.clone()), expected, atol, x.shape, path))
    return diffs


def export(student: Student, to: str, path: str, size: int = 64, opset: int = 18, atol: float = 1e-4,
           check_size: Optional[Tuple[int, int]] = None) -> Dict[str, object]:
    """Export ``student`` as ``to`` into ``path`` and check the file; returns the sizes checked and differences."""
    if to not in FORMATS:
        raise OptionError(f'--to {to}: choose one of {", ".join(FORMATS)}.')
    student.net.float().cpu().eval()
    channels = input_channels(student.net)
    multiple = student.pad_multiple
    sizes = check_sizes(size, multiple, student.opt.get('img_size'))
    if check_size:
        sizes[1] = tuple(check_size)
    export_size = sizes[0]
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    arch = student.opt['type']
    if to == 'spandrel':
        diffs = export_spandrel(student, path, channels, sizes, atol)
    else:
        check_integer_scale(student.net, channels, multiple)
        wrapper = PaddedNetwork(student.net, multiple).eval()
        if to == 'onnx':
            diffs = export_onnx(wrapper, path, channels, export_size, sizes, opset, atol, arch)
        else:
            diffs = export_torchscript(wrapper, path, channels, export_size, sizes, atol, arch)
    print(f'dckd-export: wrote {path}', flush=True)
    return {'path': path, 'sizes': sizes, 'max_abs_diff': diffs}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='dckd-export',
        description='Export a trained student to ONNX (dynamic height/width, padding inside the graph), TorchScript or '
        'a spandrel-loadable file, and check the result against PyTorch. Without -opt the network is detected from '
        'the checkpoint.')
    add_student_arguments(parser)
    parser.add_argument('--to', required=True, choices=FORMATS, help='target format')
    parser.add_argument('-o', '--output', required=True, help='file to write (.onnx, .pt, .pth or .safetensors)')
    parser.add_argument('--size', type=int, default=64,
                        help='example input size, moved to the next odd size that is no multiple of the window '
                        '(default: 64 -> 65)')
    parser.add_argument('--check-size', type=int, nargs=2, metavar=('H', 'W'),
                        help='second size checked (default: one that differs and is no multiple of the window)')
    parser.add_argument('--opset', type=int, default=18, help='ONNX opset (default: 18)')
    parser.add_argument('--atol', type=float, default=1e-4, help='largest accepted max abs difference (default 1e-4)')
    return parser


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, object]:
    """Parse ``argv``, export and check; returns :func:`export`'s summary."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.size < 1:
        parser.error('--size must be >= 1.')
    student = load_student(args.model, args.opt, args.network)
    print(f'dckd-export: {student.describe()}', flush=True)
    return export(student, args.to, args.output, args.size, args.opset, args.atol,
                  tuple(args.check_size) if args.check_size else None)


def cli() -> None:
    """Console script ``dckd-export``."""
    with report_option_errors(prog='dckd-export'):
        main()


if __name__ == '__main__':
    cli()
