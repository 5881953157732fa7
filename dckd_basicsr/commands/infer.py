"""Restore images with a trained student: ``dckd-infer -i IMAGE_OR_FOLDER -o OUT --model net_g_X.pth [-opt FILE]``.

The network comes from the option file's ``network_g`` block (``-opt``) or, without one, is detected from the
checkpoint's keys and shapes (:mod:`dckd_basicsr.checkpoints.detect`), so a bare BasicSR ``net_g_<iter>.pth`` of a
SwinIR, RCAN, EDSR, MSRResNet, NAFNet or Restormer student needs nothing else. The EMA weights (``params_ema``) are
used when the file has them, else ``params``.

Images are restored as BasicSR's validation does: the input is padded (bottom/right, reflect) to a multiple of
``val.pad_multiple`` (the SwinIR window without ``-opt``) and the output cropped back
(:func:`dckd_basicsr.archs.padding.padded_forward`). With ``--tile N`` the image is cut into ``N x N`` tiles, each run with
``--tile-pad`` pixels of context on every side and the same padding rule, so images larger than the device memory
fit. For a convolutional network whose receptive field radius is at most ``--tile-pad`` the tiled result equals the
whole-image one (up to float rounding); networks with global operations (RCAN's and NAFNet's channel attention,
Restormer's channel attention, SwinIR's shifted windows) see a different context per tile, so the result differs
slightly near tile seams. ``--fp16`` / ``--bf16`` run the network under ``torch.autocast`` in that precision (the
weights stay float32; meant for GPUs, and bfloat16 works on CPUs too); a network with an operator that has no kernel
in that precision on the device stops with one message naming the flag and the error.

Files follow Real-ESRGAN's ``inference_realesrgan.py``: ``OUT/<name>_<suffix>.<ext>`` (``--suffix out``; an empty
suffix keeps the name), ``--ext auto`` keeps the input's extension. 8-bit images are read and written as BasicSR's
``img2tensor`` / ``tensor2img`` do; 16-bit PNG/TIFF in, 16-bit PNG/TIFF out. Grayscale images go through a 3-channel
network as three equal channels and come back as one (a 1-channel network takes them as they are; it refuses colour
images). An alpha channel is resized (``--alpha resize``, the default) or restored by the network like a grayscale
image (``--alpha network``); RGBA results are written as PNG.
"""
import argparse
import contextlib
import os.path as osp
import sys
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
import yaml
from torch import Tensor, nn
from tqdm import tqdm

import dckd_basicsr  # noqa: F401  (BasicSR compatibility patches and the plugin's archs)
from basicsr.archs import build_network
from basicsr.utils import img2tensor, imwrite, scandir, tensor2img
from dckd_basicsr.checkpoints import load_pretrained
from dckd_basicsr.checkpoints.detect import DetectedNetwork, detect_network
from dckd_basicsr.checkpoints.registry import ConversionError
from dckd_basicsr.checkpoints.safe_load import extract_state_dict, load_checkpoint_file
from dckd_basicsr.errors import OptionError, report_option_errors
from dckd_basicsr.archs.padding import padded_forward
from dckd_basicsr.options import read_option_file, validation_pad_multiple

IMG_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp', '.ppm', '.pgm')
# Extensions cv2 writes 16-bit images to; a 16-bit result asked for another one is written as PNG.
SIXTEEN_BIT_EXTENSIONS = ('png', 'tif', 'tiff')


@dataclass
class Student:
    """A network ready to run, and how it was obtained.

    Attributes:
        net: The network in eval mode, weights loaded strictly.
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
    def in_channels(self) -> int:
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


def input_channels(net: nn.Module) -> int:
    """Channels of the network's input: those of its first convolution."""
    for module in net.modules():
        if isinstance(module, nn.Conv2d):
            return module.in_channels
    raise OptionError(f'{type(net).__name__} has no convolution to tell its input channels from.')


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
            net.load_state_dict(state_dict, strict=True)
        except RuntimeError as error:
            problems = '; '.join(line.strip() for line in str(error).splitlines()[1:4])
            raise OptionError(f'--model {model_path}: detected {detected.describe()}, but the weights do not fit it '
                              f'({problems}); give the network with -opt FILE.') from error
        student = Student(net, detected.opt, detected.pad_multiple, used, 'the checkpoint\'s keys (detected)',
                          detected.assumed)
    student.net.eval().requires_grad_(False)
    return student


# ----------------------------------------------------------------------------------------------------- restoring
def tile_boxes(height: int, width: int, tile: int, tile_pad: int) -> List[Tuple[Tuple[int, int, int, int], ...]]:
    """Tiles covering the image: ``(y0, y1, x0, x1)`` of the part a tile writes and ``(py0, py1, px0, px1)`` of the
    input it reads (that part plus ``tile_pad`` pixels of context, clipped at the image border)."""
    boxes = []
    for y0 in range(0, height, tile):
        for x0 in range(0, width, tile):
            y1, x1 = min(y0 + tile, height), min(x0 + tile, width)
            padded = (max(y0 - tile_pad, 0), min(y1 + tile_pad, height), max(x0 - tile_pad, 0),
                      min(x1 + tile_pad, width))
            boxes.append(((y0, y1, x0, x1), padded))
    return boxes


def restore(net: Callable[[Tensor], Tensor],
            img: Tensor,
            pad_multiple: int = 1,
            tile: int = 0,
            tile_pad: int = 10,
            device: Optional[torch.device] = None,
            dtype: Optional[torch.dtype] = None,
            progress: bool = False) -> Tensor:
    """Run ``net`` on ``img`` (``(1, C, H, W)`` in [0, 1]) with validation's padding rule, whole or in tiles.

    The input and the assembled output stay on ``img``'s device (the CPU for a tiled run, so only one tile at a time
    occupies the accelerator); every network call runs on ``device`` in ``dtype``. The scale is read from the output.

    Args:
        net: The network (or any callable image -> image).
        img: Input batch.
        pad_multiple: Each call's input is padded to a multiple of this (:func:`padded_forward`).
        tile: Tile size in input pixels; 0 runs the whole image at once.
        tile_pad: Context on every side of a tile, in input pixels.
        device: Where the network runs; ``img``'s device when None.
        dtype: ``torch.float16`` / ``torch.bfloat16`` run the network under ``torch.autocast`` in that precision
            (weights stay float32); None or float32 runs it in float32.
        progress: Show a tqdm bar over the tiles.

    Returns:
        The output, float32, on ``img``'s device.
    """
    device = device or img.device
    reduced = dtype is not None and dtype != torch.float32

    def run(x: Tensor) -> Tensor:
        precision = torch.autocast(device.type, dtype=dtype) if reduced else contextlib.nullcontext()
        with torch.no_grad(), precision:
            return padded_forward(net, x.to(device), pad_multiple).float().to(img.device)

    height, width = img.shape[-2:]
    if tile <= 0 or (tile >= height and tile >= width):
        return run(img)
    boxes = tile_boxes(height, width, tile, tile_pad)
    output = None
    scale = None
    for (y0, y1, x0, x1), (py0, py1, px0, px1) in tqdm(boxes, desc='tiles', unit='tile', leave=False,
                                                      disable=not progress):
        out = run(img[..., py0:py1, px0:px1])
        if output is None:
            scale = out.shape[-2] // (py1 - py0)
            if out.shape[-2] != scale * (py1 - py0) or out.shape[-1] != scale * (px1 - px0):
                raise OptionError(f'the network maps a {py1 - py0}x{px1 - px0} tile to {out.shape[-2]}x'
                                  f'{out.shape[-1]}: not an integer scale, so it cannot be tiled.')
            output = img.new_zeros(img.shape[0], out.shape[1], height * scale, width * scale, dtype=torch.float32)
        output[..., y0 * scale:y1 * scale, x0 * scale:x1 * scale] = \
            out[..., (y0 - py0) * scale:(y1 - py0) * scale, (x0 - px0) * scale:(x1 - px0) * scale]
    return output


@dataclass
class LoadedImage:
    """An image as the network sees it: ``tensor`` (1, C, H, W) RGB in [0, 1], plus what is needed to write the
    result as the input was (``max_value`` 255 or 65535, ``gray``, ``alpha`` in [0, 1] or None)."""
    tensor: Tensor
    max_value: int
    gray: bool
    alpha: Optional[np.ndarray]


def read_image(path: str, net_channels: int) -> LoadedImage:
    """Read an 8- or 16-bit image (gray, BGR or BGRA) as BasicSR does (``cv2.imread`` + :func:`img2tensor`)."""
    img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise OptionError(f'{path}: cannot be read as an image.')
    if img.dtype == np.uint8:
        max_value = 255
    elif img.dtype == np.uint16:
        max_value = 65535
    else:
        raise OptionError(f'{path}: {img.dtype} pixels; only 8- and 16-bit images are supported.')
    img = img.astype(np.float32) / max_value
    alpha = None
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    if img.ndim == 3 and img.shape[2] == 4:
        img, alpha = img[..., :3], img[..., 3]
    elif img.ndim == 3 and img.shape[2] != 3:
        raise OptionError(f'{path}: {img.shape[2]} channels; expected gray, BGR or BGRA.')
    gray = img.ndim == 2
    if net_channels == 1:
        if not gray:
            raise OptionError(f'{path} is a colour image, but the network takes 1-channel (grayscale) images; convert '
                              'it to grayscale first.')
        tensor = img2tensor(img[..., None], bgr2rgb=False, float32=True)
    elif net_channels == 3:
        if gray:
            img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
        tensor = img2tensor(img, bgr2rgb=True, float32=True)
    else:
        raise OptionError(f'the network takes {net_channels}-channel inputs; dckd-infer reads 1- and 3-channel '
                          'images only.')
    return LoadedImage(tensor.unsqueeze(0), max_value, gray, alpha)


def to_image(output: Tensor, max_value: int, gray: bool) -> np.ndarray:
    """The network output as an image array: BasicSR's :func:`tensor2img` (uint8), or uint16 for 16-bit inputs."""
    if max_value == 255:
        img = tensor2img(output, rgb2bgr=True, out_type=np.uint8)
    else:
        img = (tensor2img(output, rgb2bgr=True, out_type=np.float32) * 65535.0).round().astype(np.uint16)
    if gray and img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    return img


def output_path(input_path: str, out_dir: str, suffix: str, ext: str, rgba: bool, sixteen_bit: bool) -> str:
    """Real-ESRGAN's naming: ``<out_dir>/<name>_<suffix>.<ext>`` (``<name>.<ext>`` for an empty suffix); ``auto``
    keeps the input's extension; RGBA results are PNG, 16-bit ones PNG unless the extension is PNG/TIFF."""
    name, extension = osp.splitext(osp.basename(input_path))
    extension = extension[1:] if ext == 'auto' else ext
    if rgba or (sixteen_bit and extension.lower() not in SIXTEEN_BIT_EXTENSIONS):
        extension = 'png'
    return osp.join(out_dir, f'{name}_{suffix}.{extension}' if suffix else f'{name}.{extension}')


def input_files(path: str) -> List[str]:
    """The image (a file) or the images of a folder (sorted, not recursive)."""
    if osp.isfile(path):
        return [path]
    if osp.isdir(path):
        files = sorted(scandir(path, suffix=IMG_EXTENSIONS + tuple(e.upper() for e in IMG_EXTENSIONS),
                               full_path=True))
        if not files:
            raise OptionError(f'-i {path}: no images ({", ".join(IMG_EXTENSIONS)}) in this folder.')
        return files
    raise OptionError(f'-i {path}: no such file or folder.')


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
            student.net(torch.zeros(1, student.in_channels, size, size, device=device))
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
            channels = student.in_channels
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


def add_student_arguments(parser: argparse.ArgumentParser) -> None:
    """``--model``, ``-opt`` and ``--network``: what :func:`load_student` needs (dckd-infer, dckd-export)."""
    parser.add_argument('--model', required=True, help='checkpoint, e.g. experiments/<name>/models/net_g_latest.pth')
    parser.add_argument('-opt', help='option file whose network block builds the network (default: detected)')
    parser.add_argument('--network', default='network_g', help='network block of -opt (default: network_g)')


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
    return parser


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
    written = []
    for path in tqdm(files, desc='dckd-infer', unit='img', disable=args.quiet or len(files) == 1):
        loaded = read_image(path, student.in_channels)
        img = enhance(student, loaded, args.tile, args.tile_pad, device, dtype, args.alpha, args.outscale,
                      progress=not args.quiet and sys.stderr.isatty())  # nested bars only on a terminal
        save_path = output_path(path, args.output, args.suffix, args.ext, loaded.alpha is not None,
                                loaded.max_value == 65535)
        if osp.abspath(save_path) == osp.abspath(path):
            raise OptionError(f'{save_path} would overwrite its input; choose another -o or a --suffix.')
        imwrite(img, save_path)
        written.append(save_path)
    print(f'dckd-infer: wrote {len(written)} image{"s" * (len(written) != 1)} to {args.output}', flush=True)
    return written


def cli() -> None:
    """Console script ``dckd-infer``."""
    with report_option_errors(prog='dckd-infer'):
        main()


if __name__ == '__main__':
    cli()
