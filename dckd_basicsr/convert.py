"""Convert a published checkpoint once into a clean BasicSR file ``{'params': state_dict}``.

The target network is given either by an option file (``-opt train.yml --network network_t``) or on the command line
(``--arch RCAN --arch-opt num_group=10 num_block=20 upscale=4``). Examples::

    python -m dckd_basicsr.convert --format rcan_official RCAN_BIX4.pt rcan_x4.pth \\
        --arch RCAN --arch-opt num_group=10 num_block=20 upscale=4
    python -m dckd_basicsr.convert vqgan_imagenet_f16_1024.ckpt vqgan_encoder.pth -opt options/train/x.yml \\
        --network network_vqgan

The written file loads with ``torch.load(weights_only=True)`` and BasicSR's own ``load_network``.
"""
import argparse
import inspect
import sys
from copy import deepcopy
from typing import Any, Dict, List, Optional

import torch
import yaml

import dckd_basicsr  # noqa: F401  (BasicSR compatibility patches and plugin archs)
from dckd_basicsr.checkpoints import CHECKPOINT_REGISTRY, detection_order, format_report, load_pretrained
from dckd_basicsr.errors import OptionError, report_option_errors


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
    """The ``network_*`` block (with ``type``) that builds the target network."""
    if args.opt:
        from basicsr.utils.options import ordered_yaml
        try:
            with open(args.opt, mode='r') as f:
                opt = yaml.load(f, Loader=ordered_yaml()[0]) or {}
        except OSError as error:
            raise OptionError(f'-opt {args.opt}: {error.strerror}.') from error
        if not isinstance(opt.get(args.network), dict) or 'type' not in opt[args.network]:
            networks = [k for k, v in opt.items() if k.startswith('network_') and isinstance(v, dict)]
            raise OptionError(f'-opt {args.opt} has no {args.network} block with a type; it has: '
                              f'{", ".join(networks) or "no network_* block"}. Choose one with --network.')
        return dict(deepcopy(opt[args.network]))
    if not args.arch:
        raise OptionError('give the target network: --arch TYPE [--arch-opt key=value ...] or -opt FILE --network KEY.')
    net_opt = {'type': args.arch}
    net_opt.update(parse_arch_options(args.arch_opt))
    return net_opt


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


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    parser = argparse.ArgumentParser(
        prog='python -m dckd_basicsr.convert',
        description='Convert a published checkpoint (official RCAN/EDSR/SwinIR release, taming-transformers VQGAN, '
        'BasicSR file, raw state dict) into a clean BasicSR file {"params": state_dict} for a given network.',
        epilog='The target network is built from --arch/--arch-opt or from the network block of an option file '
        '(-opt/--network). Example: python -m dckd_basicsr.convert --format rcan_official RCAN_BIX4.pt rcan_x4.pth '
        '--arch RCAN --arch-opt num_group=10 num_block=20 upscale=4',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('input', help='checkpoint to convert')
    parser.add_argument('output', help='BasicSR file to write ({"params": ...})')
    parser.add_argument(
        '--format',
        default='auto',
        help=f'checkpoint format: one of {", ".join(CHECKPOINT_REGISTRY.keys())}, or auto, which asks the detectors of '
        f'{", ".join(name for name, _ in detection_order())} in this order and otherwise takes the names as they are '
        '(basicsr for params/params_ema files, state_dict otherwise)')
    parser.add_argument('--arch', help='network type in ARCH_REGISTRY, e.g. RCAN, EDSR, SwinIR, VQGAN')
    parser.add_argument(
        '--arch-opt',
        nargs='*',
        default=[],
        metavar='KEY=VALUE',
        help='network options (values read as YAML), e.g. num_group=10 num_block=20 upscale=4')
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
    args = parser.parse_args(argv)

    net_opt = network_options(args)
    print(
        f'Building {net_opt["type"]} ({", ".join(f"{k}={v}" for k, v in net_opt.items() if k != "type")})', flush=True)
    net = build_target(net_opt)
    print(f'Loading {args.input} (format {args.format}) ...', flush=True)
    param_key = None if str(args.param_key).lower() == 'none' else args.param_key
    report = load_pretrained(
        net,
        args.input,
        fmt=args.format,
        param_key=param_key,
        strict=not args.non_strict,
        trusted=args.trusted,
        option='input')
    print(format_report(report), flush=True)
    torch.save({'params': {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}}, args.output)
    print(f'Wrote {args.output} ({len(net.state_dict())} tensors, key "params").', flush=True)
    return report


def cli() -> None:
    """Command-line entry: option mistakes print one message and exit with status 2."""
    with report_option_errors('python -m dckd_basicsr.convert'):
        main(sys.argv[1:])


if __name__ == '__main__':
    cli()
