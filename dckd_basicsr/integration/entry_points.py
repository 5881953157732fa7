"""Every way to start BasicSR's training and test pipelines with the plugin, and what makes each run the same code.

* ``dckd-train`` / ``python -m dckd_basicsr.train`` / ``python dckd_basicsr/train.py`` (and the ``test`` ones) call
  :func:`run_pipeline`.
* ``python -m basicsr.train`` / ``python -m basicsr.test``: runpy would execute a fresh copy of BasicSR's script as
  ``__main__``; :func:`patch_module_entry_points` (installed by :func:`dckd_basicsr.integration.patches.apply_all`) makes it run
  :func:`run_pipeline` instead.
* A BasicSR clone's ``python basicsr/train.py``: the script itself is ``__main__``; :func:`adopt_script_functions`
  (called by the patched ``parse_options``) swaps in the patched functions it defines itself.

All of them parse the command line with :func:`parse_command_line` (called by the patched ``parse_options``): the
entry point's own ``prog`` and description, BasicSR's flags (``--auto_resume`` for training only), ``--smoke`` /
``--stand-in`` (:mod:`dckd_basicsr.integration.smoke`), and ``--force_yml`` entries checked against the option file
(:func:`split_force_yml`, which also lets ``datasets:<phase>=~`` drop a dataset).
"""
import argparse
import contextlib
import importlib
import os
import sys
import warnings
from typing import Any, Dict, Iterator, List, Optional, Tuple

from dckd_basicsr.errors import OptionError, report_option_errors

TRAIN_DESCRIPTION = """Train with BasicSR's pipeline and the dckd-basicsr plugin (DCKDModel, KDModel, DUKDModel and
BasicSR's own models). Every file and folder the option file names is checked first, all at once; --smoke runs the
option file for a few iterations on CPU."""
TEST_DESCRIPTION = """Test with BasicSR's pipeline and the dckd-basicsr plugin. Benchmark sets whose folders do not
exist are skipped with a message; --force_yml datasets:test_3=~ drops a set explicitly."""
TRAIN_EPILOG = """examples:
  %(prog)s -opt options/train/SwinIR/train_SwinIR_SRx4_DCKD.yml
  %(prog)s -opt options/train/SwinIR/train_SwinIR_SRx4_DCKD.yml --smoke --stand-in
  %(prog)s -opt X.yml --force_yml datasets:val_3=~ train:total_iter=1000"""

# The ``prog`` of the running entry point (``dckd-train``, ``basicsr.train``, ...), set by :func:`run_pipeline`;
# None for a BasicSR clone's ``python basicsr/train.py``, whose prog is the script's name.
_PROG: List[Optional[str]] = [None]


def command_line_parser(is_train: bool, prog: Optional[str] = None) -> argparse.ArgumentParser:
    """BasicSR's ``parse_options`` flags with a description per entry point; ``--auto_resume``, ``--smoke`` and
    ``--stand-in`` only for training."""
    parser = argparse.ArgumentParser(prog=prog, description=TRAIN_DESCRIPTION if is_train else TEST_DESCRIPTION,
                                     epilog=TRAIN_EPILOG if is_train else None,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('-opt', type=str, required=True, help='path to the option YAML file')
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
                            'validation on one image per set, run name smoke_<name> (dckd_basicsr/integration/smoke.py)')
        parser.add_argument('--stand-in', dest='stand_in', action='store_true',
                            help='with --smoke only: randomly initialised stand-ins for a missing teacher or VQGAN '
                            "checkpoint, written inside the smoke run's own folder")
    return parser


def parse_command_line(is_train: bool) -> argparse.Namespace:
    """Parse ``sys.argv`` with :func:`command_line_parser` (``--help`` and flag errors exit here)."""
    args = command_line_parser(is_train, _PROG[0]).parse_args(sys.argv[1:])
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


NONE_VALUES = ('~', 'none', 'null')


def split_force_yml(args: argparse.Namespace) -> Tuple[List[str], List[str]]:
    """Check every ``--force_yml`` entry against the option file and split off those that drop a dataset.

    BasicSR applies ``key:sub=value`` with ``exec`` and cannot create a missing parent key, and its parser then
    fails with a raw ``TypeError`` on a dataset block set to None. Returns the entries for BasicSR's parser and the
    dataset phases to drop (``datasets:<phase>=~``), which the patched ``parse_options`` removes after parsing.
    """
    import yaml
    from basicsr.utils.options import ordered_yaml
    with open(args.opt) as f:
        user_opt = yaml.load(f, Loader=ordered_yaml()[0]) or {}
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


def run_pipeline(module_name: str, pipeline: str, prog: Optional[str] = None) -> None:
    """Run ``<module_name>.<pipeline>`` (e.g. ``basicsr.train.train_pipeline``) with the plugin registered.

    Run folders go under the working directory (or ``path.experiments_root`` / ``path.results_root``); mistakes in
    the option file are printed as one message, ``<prog>: error: ...`` (``prog`` defaults to ``module_name``), and
    exit with status 2.
    """
    import dckd_basicsr  # noqa: F401  (registers the plugin and applies the BasicSR patches)
    _PROG[0] = prog or module_name
    function = getattr(importlib.import_module(module_name), pipeline)
    with report_option_errors(prog=_PROG[0]):
        function(os.getcwd())


class PipelineMainLoader:
    """Stands in for the loader of ``basicsr.train`` / ``basicsr.test`` when runpy asks it for ``__main__`` code."""

    def __init__(self, loader, module_name: str, pipeline: str):
        self._loader = loader
        self._module_name = module_name
        self._pipeline = pipeline

    def __getattr__(self, name):
        return getattr(self._loader, name)

    def get_code(self, fullname):
        if fullname != self._module_name:
            return self._loader.get_code(fullname)
        source = (f'from dckd_basicsr.integration.entry_points import run_pipeline\n'
                  f'if __name__ == "__main__":\n'
                  f'    run_pipeline({self._module_name!r}, {self._pipeline!r})\n')
        return compile(source, f'<dckd_basicsr: python -m {self._module_name}>', 'exec')


def patch_module_entry_points() -> None:
    """Replace the loader of ``basicsr.train`` / ``basicsr.test``, so ``python -m`` runs the patched pipelines.

    runpy executes ``basicsr/train.py`` as a fresh ``__main__`` module whose ``load_resume_state`` and
    ``create_train_val_dataloader`` are new copies of BasicSR's, untouched by the patches of ``basicsr.train``. runpy
    fetches that code from the loader of the already-imported ``basicsr.train``; ours returns code that calls
    :func:`run_pipeline` (the imported module's pipeline, so the patched globals apply, rooted at the working
    directory, option errors reported without a traceback).
    """
    if sys.argv[:1] == ['-m']:
        # ``python -m basicsr.train``: runpy imports the package ``basicsr`` (and with it this plugin, which imports
        # ``basicsr.train`` to patch it) before it runs ``basicsr.train`` as ``__main__``, and then warns that the
        # module was already imported, because a fresh copy of it would run beside the imported one. That is exactly
        # what the loader below prevents (``__main__`` runs the imported module's pipeline), so the warning does not
        # apply; it is silenced for these two modules only, and only while runpy is locating a ``-m`` module
        # (sys.argv[0] is then ``-m``).
        warnings.filterwarnings('ignore', message=r"'basicsr\.(train|test)' found in sys\.modules after import of "
                                r"package 'basicsr'", category=RuntimeWarning)
    for module_name, pipeline in (('basicsr.train', 'train_pipeline'), ('basicsr.test', 'test_pipeline')):
        module = importlib.import_module(module_name)
        spec = module.__spec__
        if spec is not None and not isinstance(spec.loader, PipelineMainLoader):
            spec.loader = PipelineMainLoader(spec.loader, module_name, pipeline)


# Functions BasicSR's train.py defines itself (the rest it imports, so it gets the patched ones) and that
# train_pipeline looks up as module globals at call time.
SCRIPT_FUNCTIONS = ('load_resume_state', 'create_train_val_dataloader')


def adopt_script_functions() -> None:
    """Point a BasicSR clone's ``python basicsr/train.py`` at the patched functions.

    That file then runs as ``__main__`` with its own copies of :data:`SCRIPT_FUNCTIONS` (BasicSR's CUDA-only resume,
    the data position lost on resume), which no patch of ``basicsr.train`` reaches, and they are defined only after
    its imports (when the plugin is applied). ``parse_options`` is the first call of ``train_pipeline``, by which time
    they exist: the patched ``parse_options`` calls this, which replaces them in ``__main__`` with those of the patched
    ``basicsr.train``. Anything else (a ``__main__`` without BasicSR's ``train_pipeline`` / ``load_resume_state``) is
    left alone.
    """
    import basicsr.train
    main = sys.modules.get('__main__')
    if main is None or main is basicsr.train:
        return
    names = vars(main)
    if not callable(names.get('train_pipeline')) or not callable(names.get('load_resume_state')):
        return
    for name in SCRIPT_FUNCTIONS:
        own = names.get(name)
        if callable(own) and getattr(own, '__module__', None) == '__main__':
            setattr(main, name, getattr(basicsr.train, name))
