"""``dckd-convert``: convert a published checkpoint once into a clean BasicSR file ``{'params': state_dict}``.

The target network is inferred from the checkpoint where its keys and shapes determine it (official RCAN, EDSR and
SwinIR releases: features, groups, blocks, scale, window size, embed dim, depths, heads, ...; RCAN and SwinIR read by
spandrel's loaders), or given by an option file (``-opt train.yml --network network_t``) or on the command line
(``--arch RCAN --arch-opt num_group=10 --arch-opt num_block=20``). Examples::

    dckd-convert --format rcan_official RCAN_BIX4.pt rcan_x4.pth        # prints the inferred RCAN options
    dckd-convert RCAN_BIX4.pt rcan_x4.pth --arch RCAN --arch-opt num_group=10 --arch-opt num_block=20 \
        --arch-opt upscale=4
    dckd-convert vqgan_imagenet_f16_1024.ckpt vqgan_encoder.pth -opt options/train/x.yml --network network_vqgan

``--arch-opt`` takes one ``key=value`` item (the value read as YAML) and is repeated for each option. The written
file loads with ``torch.load(weights_only=True)`` and BasicSR's own ``load_network``.
"""
import argparse
import inspect
import sys
from copy import deepcopy
from typing import Any, Dict, List, Optional

import torch
import yaml

import dckd_basicsr  # noqa: F401  (BasicSR compatibility patches and plugin archs)
from dckd_basicsr.checkpoints import (CHECKPOINT_REGISTRY, ConversionError, detect_format, detection_order,
                                      format_report, infer_network, load_pretrained, read_state_dict)
from dckd_basicsr.errors import OptionError, report_option_errors
from dckd_basicsr.options import read_option_file

PROG = 'dckd-convert'


def parse_arch_options(items: List[str]) -> Dict[str, Any]:
    """``['num_group=10', 'rgb_mean=[0.5, 0.5, 0.5]']`` -> ``{'num_group': 10, 'rgb_mean': [0.5, 0.5, 0.5]}``.

    Values are read as YAML, as in an option file.
    """
    options = {}
    for item in items:
        key, sep, value = item.partition('=')
        if not sep or not key:
            raise OptionError(f'--arch-opt {item}: expected key=value, e.g. num_block=20.')
        options[key.strip()] = yaml.safe_load(value)
    return options


def network_options(args: argparse.Namespace) -> Dict[str, Any]:
    """The ``network_*`` block (with ``type``) that builds the target network: from ``-opt``/``--network``, from
    ``--arch``/``--arch-opt``, or inferred from the checkpoint (:func:`inferred_network_options`)."""
    if args.opt:
        opt = read_option_file(args.opt)
        if not isinstance(opt.get(args.network), dict) or 'type' not in opt[args.network]:
            networks = [k for k, v in opt.items() if k.startswith('network_') and isinstance(v, dict)]
            raise OptionError(f'-opt {args.opt} has no {args.network} block with a type; it has: '
                              f'{", ".join(networks) or "no network_* block"}. Choose one with --network.')
        return dict(deepcopy(opt[args.network]))
    if not args.arch:
        if args.arch_opt:
            raise OptionError('--arch-opt without --arch: give the network type too (--arch RCAN), or leave both '
                              'out to infer the network from the checkpoint.')
        return inferred_network_options(args)
    net_opt = {'type': args.arch}
    net_opt.update(parse_arch_options(args.arch_opt))
    return net_opt


def inferred_network_options(args: argparse.Namespace) -> Dict[str, Any]:
    """The BasicSR network block the checkpoint's keys and shapes determine, for ``--format`` (detected when
    ``auto``) through the format's inference (:func:`dckd_basicsr.checkpoints.infer_network`)."""
    tensors, wrapper, _ = read_state_dict(args.input, param_key=_param_key(args), trusted=args.trusted,
                                          option='input')
    fmt = detect_format(tensors, None, wrapper) if args.format in (None, 'auto') else args.format
    if fmt not in CHECKPOINT_REGISTRY:
        raise OptionError(f'--format {fmt}: unknown; known formats: {", ".join(CHECKPOINT_REGISTRY.keys())}.')
    try:
        net_opt = infer_network(fmt, tensors)
    except ConversionError as error:
        raise OptionError(f'input: {args.input} (format {fmt}): {error}') from error
    args.format = fmt
    block = yaml.safe_dump(net_opt, default_flow_style=True, sort_keys=False, width=10**6).strip()
    print(f'Inferred from {args.input} (format {fmt}), as a network block for an option file: {block}', flush=True)
    return net_opt


def _param_key(args: argparse.Namespace) -> Optional[str]:
    return None if str(args.param_key).lower() == 'none' else args.param_key


def build_target(net_opt: Dict[str, Any]) -> torch.nn.Module:
    """Build the network as BasicSR would; ``num_in_ch`` / ``num_out_ch`` default to 3 when the arch needs them."""
    from basicsr.utils.registry import ARCH_REGISTRY
    net_opt = dict(net_opt)
    arch = ARCH_REGISTRY.get(net_opt.pop('type'))
    parameters = inspect.signature(arch).parameters
    for name in ('num_in_ch', 'num_out_ch'):
        if name in parameters and parameters[name].default is inspect.Parameter.empty:
            net_opt.setdefault(name, 3)
    try:
        return arch(**net_opt)
    except TypeError as error:
        raise OptionError(f'{arch.__name__}: {error}; check --arch-opt / the network block.') from error


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description='Convert a published checkpoint (official RCAN/EDSR/SwinIR release, taming-transformers VQGAN, '
        'BasicSR file, raw state dict; .pth/.pt/.ckpt/.safetensors) into a clean BasicSR file {"params": state_dict} '
        'for a BasicSR network. For official RCAN, EDSR and SwinIR releases the network is inferred from the '
        'checkpoint and printed; otherwise give it with --arch/--arch-opt or -opt/--network.',
        epilog=f'Examples: {PROG} --format rcan_official RCAN_BIX4.pt rcan_x4.pth | {PROG} RCAN_BIX4.pt rcan_x4.pth '
        '--arch RCAN --arch-opt num_group=10 --arch-opt num_block=20 --arch-opt upscale=4 | '
        f'{PROG} last.ckpt vqgan_encoder.pth -opt options/train/x.yml --network network_vqgan',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('input', help='checkpoint to convert')
    parser.add_argument('output', help='BasicSR file to write ({"params": ...})')
    parser.add_argument(
        '--format',
        default='auto',
        help=f'checkpoint format: one of {", ".join(CHECKPOINT_REGISTRY.keys())}, or auto, which asks the detectors of '
        f'{", ".join(name for name, _ in detection_order())} in this order and otherwise takes the names as they are '
        '(basicsr for params/params_ema files, state_dict otherwise)')
    parser.add_argument('--arch', help='network type in ARCH_REGISTRY, e.g. RCAN, EDSR, SwinIR, VQGAN (default: '
                        'inferred from the checkpoint where the format allows)')
    parser.add_argument(
        '--arch-opt',
        action='append',
        default=[],
        metavar='KEY=VALUE',
        help='one network option (the value read as YAML); repeat the flag for each: --arch-opt num_group=10 '
        '--arch-opt num_block=20')
    parser.add_argument('-opt', help='option file whose network block builds the target (instead of --arch)')
    parser.add_argument('--network', default='network_t', help='network block of the option file')
    parser.add_argument(
        '--param-key',
        default='params',
        help="wrapper key to read first (params_ema falls back to params); 'none' tries the usual ones")
    parser.add_argument(
        '--non-strict',
        action='store_true',
        help='write what fits instead of failing on missing/unexpected keys or shape mismatches')
    parser.add_argument(
        '--trusted',
        action='store_true',
        help='the input file is trusted: allow full unpickling (runs code stored in the file)')
    return parser


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse the command line."""
    return build_parser().parse_args(argv)


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    """Run ``dckd-convert`` on ``argv``; returns :func:`~dckd_basicsr.checkpoints.load_pretrained`'s report with the
    network block used under ``network``."""
    args = parse_args(argv)
    net_opt = network_options(args)
    print(
        f'Building {net_opt["type"]} ({", ".join(f"{k}={v}" for k, v in net_opt.items() if k != "type")})', flush=True)
    net = build_target(net_opt)
    print(f'Loading {args.input} (format {args.format}) ...', flush=True)
    report = load_pretrained(
        net,
        args.input,
        fmt=args.format,
        param_key=_param_key(args),
        strict=not args.non_strict,
        trusted=args.trusted,
        option='input')
    print(format_report(report), flush=True)
    torch.save({'params': {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}}, args.output)
    print(f'Wrote {args.output} ({len(net.state_dict())} tensors, key "params").', flush=True)
    report['network'] = net_opt
    return report


def cli() -> None:
    """Command-line entry: option mistakes print one message and exit with status 2."""
    with report_option_errors(PROG):
        main(sys.argv[1:])


if __name__ == '__main__':
    cli()
