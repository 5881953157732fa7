"""Restore images with a trained student: ``dckd-infer -i IMAGE_OR_FOLDER -o OUT --model net_g_X.pth [-opt FILE]``.

The network comes from the option file's ``network_g`` block (``-opt``) or, without one, is detected from the
checkpoint's keys and shapes, so a bare BasicSR ``net_g_<iter>.pth`` of a SwinIR, RCAN, EDSR, MSRResNet, NAFNet or
Restormer student needs nothing else (:mod:`dckd_basicsr.checkpoints.students`). The EMA weights (``params_ema``) are
used when the file has them, else ``params``.

Images are restored as BasicSR's validation does: the input is padded (bottom/right, reflect) to a multiple of
``val.pad_multiple`` (the SwinIR window without ``-opt``) and the output cropped back
(:func:`dckd_basicsr.archs.padding.padded_forward`). With ``--tile N`` the image is cut into ``N x N`` tiles, each run
with ``--tile-pad`` pixels of context on every side and the same padding rule, so images larger than the device
memory fit (:mod:`dckd_basicsr.commands.tiling` says when the tiled result equals the whole-image one).
``--fp16`` / ``--bf16`` run the network under ``torch.autocast`` in that precision (the weights stay float32; meant
for GPUs, and bfloat16 works on CPUs too); a network with an operator that has no kernel in that precision on the
device stops with one message naming the flag and the error.

An image that cannot be read (damaged, truncated, empty, or a kind the network cannot take) is skipped with one
warning and the others are restored; the skipped files are listed at the end and the command exits with status 2
(``--stop-on-error`` stops at the first one instead).

Files follow Real-ESRGAN's ``inference_realesrgan.py``: ``OUT/<name>_<suffix>.<ext>`` (``--suffix out``; an empty
suffix keeps the name), ``--ext auto`` keeps the input's extension. 8-bit images are read and written as BasicSR's
``img2tensor`` / ``tensor2img`` do; 16-bit PNG/TIFF in, 16-bit PNG/TIFF out. Grayscale images go through a 3-channel
network as three equal channels and come back as one (a 1-channel network takes them as they are; it refuses colour
images). An alpha channel is resized (``--alpha resize``, the default) or restored by the network like a grayscale
image (``--alpha network``); RGBA results are written as PNG.
"""
import argparse
import os.path as osp
import sys
from typing import List, Optional, Sequence

import cv2
import numpy as np
import torch
from basicsr.utils import imwrite, tensor2img
from tqdm import tqdm

import dckd_basicsr  # noqa: F401  (BasicSR compatibility patches and the plugin's archs)
from dckd_basicsr.checkpoints.students import Student, load_student
from dckd_basicsr.commands.image_io import LoadedImage, input_files, output_path, read_image, to_image
from dckd_basicsr.commands.student_arguments import add_student_arguments
from dckd_basicsr.commands.tiling import restore
from dckd_basicsr.errors import OptionError, report_option_errors


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if name == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    if name.startswith('cuda') and not torch.cuda.is_available():
        raise OptionError(f'--device {name}: no CUDA device is available; use --device cpu.')
    return torch.device(name)


def check_dtype(student: Student, device: torch.device, dtype: torch.dtype, flag: str) -> None:
    """Run the network once on a small input under ``torch.autocast(dtype)``: a clear message when an op has no
    kernel for it on ``device``."""
    if dtype == torch.float32:
        return
    size = max(16, student.pad_multiple)
    try:
        with torch.no_grad(), torch.autocast(device.type, dtype=dtype):
            student.net(torch.zeros(1, student.input_channels, size, size, device=device))
    except (RuntimeError, NotImplementedError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        alternative = '--bf16 or float32 (no flag)' if dtype == torch.float16 else 'float32 (no flag)'
        raise OptionError(f'{flag}: {student.opt["type"]} does not run in {str(dtype)[6:]} on {device.type} '
                          f'({first}); use {alternative}.') from error


def enhance(student: Student, loaded: LoadedImage, tile: int, tile_pad: int, device: torch.device,
            dtype: torch.dtype, alpha_mode: str = 'resize', outscale: Optional[float] = None,
            progress: bool = False) -> np.ndarray:
    """Restore one image; returns the array to write (with alpha, at ``outscale`` when given)."""
    kwargs = dict(pad_multiple=student.pad_multiple, tile=tile, tile_pad=tile_pad, device=device, dtype=dtype,
                  progress=progress)
    output = restore(student.net, loaded.tensor, **kwargs)
    height, width = loaded.tensor.shape[-2:]
    scale = output.shape[-2] // height
    img = to_image(output, loaded.max_value, loaded.gray)
    if loaded.alpha is not None:
        if alpha_mode == 'network':
            channels = student.input_channels
            alpha = torch.from_numpy(loaded.alpha)[None, None].expand(1, channels, height, width).contiguous()
            alpha = restore(student.net, alpha, **kwargs).mean(dim=1, keepdim=True)
            alpha = tensor2img(alpha, rgb2bgr=False, out_type=np.float32)
        else:
            alpha = cv2.resize(loaded.alpha, (width * scale, height * scale), interpolation=cv2.INTER_LINEAR)
        alpha = (np.clip(alpha, 0, 1) * loaded.max_value).round().astype(img.dtype)
        if img.ndim == 2:
            img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
        img = np.dstack([img, alpha])
    if outscale is not None and outscale != scale:
        img = cv2.resize(img, (round(width * outscale), round(height * outscale)), interpolation=cv2.INTER_LANCZOS4)
    return img


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='dckd-infer',
        description='Restore images with a trained student (a BasicSR net_g_*.pth; EMA weights when present). '
        'Without -opt the network is detected from the checkpoint. Inputs are padded as in validation; --tile '
        'splits large images.')
    parser.add_argument('-i', '--input', required=True, help='an image or a folder of images')
    parser.add_argument('-o', '--output', required=True, help='output folder')
    add_student_arguments(parser)
    parser.add_argument('-t', '--tile', type=int, default=0, help='tile size in input pixels; 0: no tiling')
    parser.add_argument('--tile-pad', type=int, default=10, help='context pixels around each tile (default: 10)')
    parser.add_argument('-s', '--outscale', type=float, help='final upsampling scale (Lanczos resize of the output '
                        'when it differs from the network scale); default: the network scale')
    parser.add_argument('--suffix', default='out', help='output name <name>_<suffix>.<ext>; "" keeps the name')
    parser.add_argument('--ext', default='auto', help='output extension: auto (the input\'s), png, jpg, ...')
    parser.add_argument('--alpha', choices=('resize', 'network'), default='resize',
                        help='alpha channel: bilinear resize (default) or restored by the network')
    parser.add_argument('--device', default='auto', help='auto (CUDA when available), cpu, cuda, cuda:1, ...')
    precision = parser.add_mutually_exclusive_group()
    precision.add_argument('--fp16', action='store_true', help='float16 autocast (GPU)')
    precision.add_argument('--bf16', action='store_true', help='bfloat16 autocast (GPU; also CPU, slowly)')
    parser.add_argument('--quiet', action='store_true', help='no progress bar')
    parser.add_argument('--stop-on-error', action='store_true',
                        help='stop at the first image that cannot be read (default: skip it with a warning, restore '
                        'the others, list the skipped ones at the end and exit with status 2)')
    return parser


class SkippedImages(OptionError):
    """Images ``dckd-infer`` could not read and skipped; raised after the others were written."""


def main(argv: Optional[Sequence[str]] = None) -> List[str]:
    """Parse ``argv`` and restore every input; returns the written files."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.tile < 0 or args.tile_pad < 0:
        parser.error('--tile and --tile-pad must be >= 0.')
    if args.outscale is not None and args.outscale <= 0:
        parser.error('--outscale must be > 0.')
    files = input_files(args.input)
    device = resolve_device(args.device)
    dtype = torch.float16 if args.fp16 else torch.bfloat16 if args.bf16 else torch.float32
    student = load_student(args.model, args.opt, args.network)
    print(f'dckd-infer: {student.describe()}', flush=True)
    student.net.to(device)
    check_dtype(student, device, dtype, '--fp16' if args.fp16 else '--bf16')
    written, skipped = [], []
    bar = tqdm(files, desc='dckd-infer', unit='img', disable=args.quiet or len(files) == 1)
    for path in bar:
        try:
            loaded = read_image(path, student.input_channels)
        except OptionError as error:
            if args.stop_on_error:
                raise
            skipped.append(str(error))
            bar.write(f'dckd-infer: warning: skipped {error}', file=sys.stderr)
            continue
        img = enhance(student, loaded, args.tile, args.tile_pad, device, dtype, args.alpha, args.outscale,
                      progress=not args.quiet and sys.stderr.isatty())  # nested bars only on a terminal
        save_path = output_path(path, args.output, args.suffix, args.ext, loaded.alpha is not None,
                                loaded.max_value == 65535)
        if osp.abspath(save_path) == osp.abspath(path):
            raise OptionError(f'{save_path} would overwrite its input; choose another -o or a --suffix.')
        imwrite(img, save_path)
        written.append(save_path)
    print(f'dckd-infer: wrote {len(written)} image{"s" * (len(written) != 1)} to {args.output}', flush=True)
    if skipped:
        raise SkippedImages(f'skipped {len(skipped)} of {len(files)} image{"s" * (len(files) != 1)} that could not '
                            'be read (--stop-on-error stops at the first):\n' +
                            '\n'.join(f'  {line}' for line in skipped))
    return written


def cli() -> None:
    """Console script ``dckd-infer``."""
    with report_option_errors(prog='dckd-infer'):
        main()


if __name__ == '__main__':
    cli()
