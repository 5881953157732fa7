"""Export a trained student: ``dckd-export --model net_g_X.pth [-opt FILE] --to onnx|torchscript|spandrel -o OUT``.

The network is built as ``dckd-infer`` builds it (``-opt`` or detected from the checkpoint; EMA weights when present).

``onnx``
    ``torch.onnx.export`` (the dynamo exporter) of :class:`~dckd_basicsr.archs.padding.PaddedNetwork`: the network
    with validation's padding rule inside the graph (reflect-pad bottom/right to ``val.pad_multiple`` / the SwinIR
    window, run, crop the output back), so batch, height and width are dynamic and height and width need not be
    multiples of the window; inputs must be at least ``multiple`` pixels high and wide (reflection needs it). Input
    ``input`` ``(N, C, H, W)`` float32 RGB in [0, 1], output ``output`` ``(N, C, s*H, s*W)`` RGB (not clamped).
    Checked with onnxruntime (CPU) against PyTorch at the export size, at a different size that is no multiple of the
    window, at a multiple of 16 (:func:`~.exporters.check_sizes`) and with a batch of 2; the largest absolute
    difference is printed and the file is refused (deleted) above ``--atol`` (1e-4). A network whose code fixes the
    batch size in the graph (``int(x.shape[0])``; BasicSR's SwinIR is exported with
    :func:`~.exporters.batch_free_code`, which avoids it) fails that check and is exported again with a batch of 1,
    which the printed convention then says.
``torchscript``
    ``torch.jit.trace`` of the same ``PaddedNetwork`` (shapes are traced, so batch and padding stay dynamic), checked
    the same way with ``torch.jit.load``.

Both write the input/output convention (:func:`~.exporters.convention`) next to the file, ``<file>.json``, print it,
and, for ONNX, store it in the model's metadata (``metadata_props``). Every stage prints a line when it starts and
when it ends, with its duration (exporting a transformer student takes minutes).
``spandrel``
    A state dict in the official key layout spandrel detects (``.pth``, or ``.safetensors`` by the file name), so
    chaiNNer, ComfyUI or ``spandrel.ModelLoader`` open the student directly; the hyperparameters spandrel cannot read
    from the weights are folded into them (:mod:`dckd_basicsr.checkpoints.spandrel_export`). Checked by loading the
    file with spandrel and comparing its output with the network's. spandrel 0.4 has no EDSR, MSRResNet or Restormer
    architecture: those export to ONNX or TorchScript. A student of a spandrel architecture (SPAN, RealPLKSR, SAFMN,
    ...) is written with its own keys (SPAN fused), after spandrel has read it back in memory as the same network; an
    option spandrel cannot read from the weights and would assume otherwise is refused before anything is written.

An arch that an exporter cannot handle stops with a message naming the operator the exporter reported.
"""
import argparse
import os
import os.path as osp
from typing import Dict, Optional, Sequence, Tuple

from dckd_basicsr.archs.arch_util import input_channels
from dckd_basicsr.archs.padding import PaddedNetwork
from dckd_basicsr.checkpoints.students import Student, load_student
from dckd_basicsr.commands.exporters import (ExportError, check_integer_scale, check_sizes, convention,
                                             describe_convention, export_onnx, export_spandrel, export_torchscript,
                                             write_convention)
from dckd_basicsr.commands.student_arguments import add_student_arguments
from dckd_basicsr.errors import OptionError, report_option_errors

FORMATS = ('onnx', 'torchscript', 'spandrel')


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
        scale, out_channels = check_integer_scale(student.net, channels, multiple)
        wrapper = PaddedNetwork(student.net, multiple).eval()
        exporter = export_onnx if to == 'onnx' else export_torchscript
        options = dict(opset=opset) if to == 'onnx' else {}
        dynamic_batch = True
        try:
            diffs = exporter(wrapper, path, channels, export_size, sizes, atol=atol, arch=arch, **options)
        except ExportError as error:  # most often the network's code fixes the batch size (int(x.shape[0]))
            print(f'dckd-export: with a dynamic batch: {error} Exporting again with a batch of 1 (height and width '
                  'stay dynamic).', flush=True)
            dynamic_batch = False
            diffs = exporter(wrapper, path, channels, export_size, sizes, atol=atol, arch=arch, dynamic_batch=False,
                             **options)
        conv = convention(arch, channels, out_channels, scale, multiple, dynamic_batch)
        sidecar = write_convention(path, conv, onnx_metadata=to == 'onnx')
        where = f'{sidecar} and the ONNX metadata' if to == 'onnx' else sidecar
        print(f'dckd-export: {describe_convention(conv)} (written to {where})', flush=True)
    print(f'dckd-export: wrote {path}', flush=True)
    return {'path': path, 'sizes': sizes, 'max_abs_diff': diffs}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='dckd-export',
        description='Export a trained student to ONNX (dynamic batch, height and width; padding inside the graph), '
        'TorchScript or a spandrel-loadable file, and check the result against PyTorch. Without -opt the network is '
        'detected from the checkpoint. ONNX and TorchScript: input (N, C, H, W) float32 RGB in [0, 1], output (N, C, '
        's*H, s*W); the convention is written to <file>.json (and the ONNX metadata).')
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
