"""The command-line arguments every ``datasets_prep`` script shares, and the one-screen summary each prints."""
import argparse
import os
import time
from typing import Sequence

from datasets_prep.outputs import Output


def default_workers() -> int:
    """The CPU cores this process may use, at most 8."""
    return max(1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count() or 1))


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """``--workers``, ``--overwrite`` and ``--verify-samples``."""
    parser.add_argument('--workers', type=int, default=default_workers(),
                        help='processes that decode, resize and encode images (default: %(default)s; 1 = no pool)')
    parser.add_argument('--overwrite', action='store_true',
                        help='rebuild outputs that already exist (by default finished outputs are kept and skipped; '
                        'an existing output that does not match the input is an error)')
    parser.add_argument('--verify-samples', type=int, default=8,
                        help='pairs per output decoded through PairedImageDataset at the end (default: %(default)s)')


def print_summary(title: str, outputs: Sequence[Output], checks: Sequence[str], started: float, workers: int) -> None:
    """One screen: every output with its status, count and sizes, the verification lines and the time taken."""
    width = max(len(output.path) for output in outputs) if outputs else 0
    lines = ['', f'== {title} ==']
    for output in outputs:
        lines.append(f'  {output.path:<{width}}  {output.status:<7}  {len(output.entries):>7} images  '
                     f'{output.size_text()}')
    lines += ['  verified: ' + check for check in checks]
    built = sum(output.status == 'built' for output in outputs)
    lines.append(f'  {built} built, {len(outputs) - built} already complete; '
                 f'{time.time() - started:.1f} s with {workers} worker(s)')
    print('\n'.join(lines), flush=True)
