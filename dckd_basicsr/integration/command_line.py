"""The command line of the train and test pipelines, whichever entry point started them.

* :func:`command_line_parser` / :func:`parse_command_line`: BasicSR's ``parse_options`` flags (``--auto_resume`` for
  training only), the entry point's own ``prog`` and description, ``--smoke`` / ``--stand-in``
  (:mod:`dckd_basicsr.integration.smoke`), and the option schema's ``--explain KEY`` and ``--json-schema [FILE]``
  (:mod:`dckd_basicsr.integration.schema_docs`), which print and exit;
* :func:`basicsr_argv`: ``sys.argv`` as BasicSR's own parser accepts it, while that parser runs;
* :func:`split_force_yml` / :func:`drop_datasets`: ``--force_yml`` entries checked against the option file, and
  ``datasets:<phase>=~`` dropping that dataset (BasicSR's parser would fail with a ``TypeError``).
"""
import argparse
import contextlib
import sys
from typing import Any, Dict, Iterator, List, Optional, Tuple

from dckd_basicsr.errors import OptionError
from dckd_basicsr.options import read_option_file

TRAIN_DESCRIPTION = """Train with BasicSR's pipeline and the dckd-basicsr plugin (DCKDModel, KDModel, DUKDModel and
BasicSR's own models). Every file and folder the option file names is checked first, all at once; --smoke runs the
option file for a few iterations on CPU."""
TEST_DESCRIPTION = """Test with BasicSR's pipeline and the dckd-basicsr plugin. Benchmark sets whose folders do not
exist are skipped with a message; --force_yml datasets:test_3=~ drops a set explicitly."""
TRAIN_EPILOG = """examples:
  %(prog)s -opt options/train/SwinIR/train_SwinIR_SRx4_DCKD.yml
  %(prog)s -opt options/train/SwinIR/train_SwinIR_SRx4_DCKD.yml --smoke --stand-in
  %(prog)s -opt X.yml --force_yml datasets:val_3=~ train:total_iter=1000
  %(prog)s --explain train.num_neg
  %(prog)s --explain network_g.embed_dim -opt options/train/SwinIR/train_SwinIR_SRx4_DCKD.yml
  %(prog)s --json-schema option_schema.json"""

# ``--force_yml`` values that set an option to None (BasicSR's spelling and YAML's).
NONE_VALUES = ('~', 'none', 'null')

# The ``prog`` of the running entry point (``dckd-train``, ``basicsr.train``, ...), set by :func:`set_prog`;
# None for a BasicSR clone's ``python basicsr/train.py``, whose prog is the script's name.
_prog: Optional[str] = None


def set_prog(prog: Optional[str]) -> None:
    """Name the running entry point in ``--help`` and in flag errors."""
    global _prog
    _prog = prog


def command_line_parser(is_train: bool, prog: Optional[str] = None) -> argparse.ArgumentParser:
    """BasicSR's ``parse_options`` flags with a description per entry point; ``--auto_resume``, ``--smoke`` and
    ``--stand-in`` only for training."""
    parser = argparse.ArgumentParser(prog=prog, description=TRAIN_DESCRIPTION if is_train else TEST_DESCRIPTION,
                                     epilog=TRAIN_EPILOG if is_train else None,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('-opt', type=str, help='path to the option YAML file (required, except with --explain or '
                        '--json-schema)')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm'], default='none', help='job launcher')
    if is_train:
        parser.add_argument('--auto_resume', action='store_true',
                            help="resume from the run's latest complete training state, if there is one")
    parser.add_argument('--debug', action='store_true', help="BasicSR's debug mode (run name prefixed debug_)")
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument('--force_yml', nargs='+', default=None, metavar='KEY:SUB=VALUE',
                        help='override option values, e.g. train:ema_decay=0.999; KEY=~ sets None, and '
                        'datasets:<phase>=~ drops that dataset')
    if is_train:
        parser.add_argument('--smoke', action='store_true',
                            help='a smoke run: 3 iterations on CPU with small batch and patches, no workers, '
                            'validation on one image per set, run name smoke_<name> '
                            '(dckd_basicsr/integration/smoke.py)')
        parser.add_argument('--stand-in', dest='stand_in', action='store_true',
                            help='with --smoke only: randomly initialised stand-ins for a missing teacher or VQGAN '
                            "checkpoint, written inside the smoke run's own folder")
    parser.add_argument('--explain', metavar='KEY',
                        help='print what an option key means (type, default, one line; a block lists its keys), e.g. '
                        'train.num_neg, datasets.train.use_hflip, SwinIR.embed_dim; with -opt, for that file\'s '
                        'model_type and types')
    parser.add_argument('--json-schema', dest='json_schema', nargs='?', const='-', metavar='FILE',
                        help='write the JSON Schema of option files (for an editor\'s YAML extension) to FILE, or to '
                        'stdout; it covers the archs, losses and models registered now')
    return parser


def run_schema_commands(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """``--explain KEY`` / ``--json-schema [FILE]``: print and exit; otherwise ``-opt`` is required."""
    from dckd_basicsr.integration import schema_blocks, schema_docs
    if args.explain:
        opt = read_option_file(args.opt) if args.opt else None
        print(schema_docs.explain(args.explain, opt), flush=True)
        sys.exit(0)
    if args.json_schema:
        if args.json_schema == '-':
            sys.stdout.write(schema_blocks.schema_text(own_only=False))
        else:
            print(f'Wrote {schema_blocks.write_schema(args.json_schema, own_only=False)}', flush=True)
        sys.exit(0)
    if not args.opt:
        parser.error('the following arguments are required: -opt')


def parse_command_line(is_train: bool) -> argparse.Namespace:
    """Parse ``sys.argv`` with :func:`command_line_parser` (``--help`` and flag errors exit here)."""
    parser = command_line_parser(is_train, _prog)
    args = parser.parse_args(sys.argv[1:])
    run_schema_commands(parser, args)
    if not is_train:
        args.auto_resume, args.smoke, args.stand_in = False, False, False
    if args.stand_in and not args.smoke:
        raise OptionError('--stand-in: only with --smoke (a real run never trains against a random teacher).')
    if args.smoke and args.launcher != 'none':
        raise OptionError(f'--smoke: runs one process on CPU; leave out --launcher {args.launcher}.')
    return args


@contextlib.contextmanager
def basicsr_argv(args: argparse.Namespace, force_yml: Optional[List[str]]) -> Iterator[None]:
    """``sys.argv`` as BasicSR's own parser accepts it (its flags only, ``force_yml`` as given) while BasicSR's
    ``parse_options`` runs; the user's command line is back afterwards (BasicSR copies it into the run folder)."""
    argv = [sys.argv[0], '-opt', args.opt, '--launcher', args.launcher, '--local_rank', str(args.local_rank)]
    argv += ['--auto_resume'] * bool(args.auto_resume) + ['--debug'] * bool(args.debug)
    argv += ['--force_yml', *force_yml] if force_yml else []
    saved = sys.argv
    sys.argv = argv
    try:
        yield
    finally:
        sys.argv = saved


def split_force_yml(args: argparse.Namespace) -> Tuple[List[str], List[str]]:
    """Check every ``--force_yml`` entry against the option file and split off those that drop a dataset.

    BasicSR applies ``key:sub=value`` with ``exec`` and cannot create a missing parent key, and its parser then
    fails with a raw ``TypeError`` on a dataset block set to None. Returns the entries for BasicSR's parser and the
    dataset phases to drop (``datasets:<phase>=~``), which :func:`drop_datasets` removes after parsing.
    """
    user_opt = read_option_file(args.opt)
    kept, dropped = [], []
    for entry in args.force_yml or []:
        if entry.count('=') != 1:
            raise OptionError(f"--force_yml {entry}: write KEY:SUBKEY=VALUE with one '=' (e.g. train:total_iter=1000).")
        keys, value = (part.strip() for part in entry.split('='))
        keys = keys.split(':')
        node = user_opt
        for depth, key in enumerate(keys[:-1]):
            if not isinstance(node, dict) or key not in node or not isinstance(node[key], dict):
                raise OptionError(f"--force_yml {entry}: {args.opt} has no block {':'.join(keys[:depth + 1])} to set "
                                  f'{keys[-1]} in (BasicSR cannot create a missing block).')
            node = node[key]
        if len(keys) == 2 and keys[0] == 'datasets':
            if value.lower() not in NONE_VALUES:
                raise OptionError(f'--force_yml {entry}: a whole dataset block cannot be set to a value; write '
                                  f'datasets:{keys[1]}=~ to drop it, or set one of its keys '
                                  f'(datasets:{keys[1]}:dataroot_gt=PATH).')
            if keys[1] not in node:
                raise OptionError(f'--force_yml {entry}: {args.opt} has no dataset {keys[1]}; it has '
                                  f"{', '.join(node)}.")
            dropped.append(keys[1])
        else:
            kept.append(entry)
    return kept, dropped


def drop_datasets(opt: Dict[str, Any], phases: List[str]) -> None:
    """Remove the dataset blocks ``--force_yml datasets:<phase>=~`` dropped, saying so; at least one must remain."""
    for phase in phases:
        dataset = opt['datasets'].pop(phase, None)
        name = f" ({dataset['name']})" if isinstance(dataset, dict) and dataset.get('name') else ''
        print(f'Dropped datasets.{phase}{name} (--force_yml datasets:{phase}=~).', flush=True)
    if phases and not opt['datasets']:
        raise OptionError(f"--force_yml: datasets:{'/'.join(phases)}=~ dropped every dataset of the option file.")
