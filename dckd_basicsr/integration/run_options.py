"""The options a training or test run starts with: BasicSR's option parsing and the plugin's steps around it.

:func:`parse_options` replaces ``basicsr.utils.options.parse_options``
(:func:`dckd_basicsr.integration.patches.patch_parse_options`), so every entry point runs the same steps, in this
order:

1. a BasicSR clone's ``basicsr/train.py`` is pointed at the patched functions
   (:func:`~dckd_basicsr.integration.entry_points.adopt_script_functions`; ``parse_options`` is the first call of
   ``train_pipeline``);
2. the command line (:mod:`dckd_basicsr.integration.command_line`): the entry point's own ``--help`` and flags,
   ``--force_yml`` entries checked against the option file;
3. BasicSR's own parser, which creates the process group under ``--launcher`` (with the collective timeout
   ``dist_params.timeout_s``, :func:`requested_timeout_s`), then the datasets ``--force_yml datasets:<phase>=~``
   dropped (:func:`basicsr_options`);
4. ``--smoke`` shrinks the run (:mod:`dckd_basicsr.integration.smoke`);
5. the run's folders under the working directory, or under ``path.experiments_root`` / ``path.results_root`` when
   given, as parent folders like BasicSR master (:func:`run_parent`, :func:`set_run_folders`); PyPI basicsr puts
   them under basicsr's own install location for ``python -m basicsr.train``; a worker group that torchrun restarted
   resumes from the run's latest complete checkpoint (:func:`resume_after_restart`);
6. a test run leaves out the test sets whose folders are missing
   (:func:`~dckd_basicsr.integration.preflight.skip_missing_test_sets`);
7. ``num_worker_per_gpu`` capped at the CPUs this process may use (:func:`cap_workers`);
8. the option checks, every problem at once (:func:`~dckd_basicsr.integration.option_checks.check_options`),
   before anything is built or any folder is created; a ``--smoke`` run says the preflight passed, leaves BasicSR's
   dumps to its log file (:func:`~dckd_basicsr.integration.smoke.quiet_console`) and announces its stand-ins.
"""
import argparse
import os
from os import path as osp
from typing import Any, Dict, List, Optional, Tuple

# BasicSR's own parser, bound before patch_parse_options replaces the module attribute with parse_options below.
from basicsr.utils.options import _postprocess_yml_value
from basicsr.utils.options import parse_options as basicsr_parse_options

from dckd_basicsr.errors import OptionError
from dckd_basicsr.integration import smoke
from dckd_basicsr.integration.command_line import basicsr_argv, drop_datasets, parse_command_line, split_force_yml
from dckd_basicsr.integration.distributed import DEFAULT_TIMEOUT_S, checked_timeout, gathered, process_group_timeout
from dckd_basicsr.integration.entry_points import adopt_script_functions
from dckd_basicsr.integration.option_checks import check_options
from dckd_basicsr.integration.preflight import skip_missing_test_sets
from dckd_basicsr.options import read_option_file
from dckd_basicsr.training.resume import latest_training_state

# The option naming a run's parent folder and its default under the working directory, for training and testing.
RUN_ROOTS = {True: ('experiments_root', 'experiments'), False: ('results_root', 'results')}


def parse_options(root_path: str, is_train: bool = True) -> Tuple[Dict[str, Any], argparse.Namespace]:
    """The run's options and command-line arguments, checked (see the module docstring for the steps).

    ``root_path`` is ignored: run folders go under the working directory or the ``path`` options.
    """
    adopt_script_functions()
    args = parse_command_line(is_train)
    opt = basicsr_options(args, is_train)
    if args.smoke:
        print('\n'.join(smoke.apply_smoke_options(opt)), flush=True)
    set_run_folders(opt, run_parent(args, is_train), is_train)
    if is_train:
        resume_after_restart(opt)
    else:
        skip_missing_test_sets(opt)
    cap_workers(opt)
    stand_ins = smoke.stand_in_keys(opt) if args.stand_in else []
    if args.smoke:
        opt['smoke'] = {'stand_ins': stand_ins}  # read by smoke.prepare_run once the run folder exists
    check_options(opt, stand_ins, smoke.preflight_note(args.stand_in) if args.smoke else '')
    if args.smoke:
        print('Preflight: the option schema found no problem and every file and folder the options name is there.',
              flush=True)
        smoke.quiet_console()
    if stand_ins:
        print(smoke.announce_stand_ins(opt, stand_ins), flush=True)
    return opt, args


def basicsr_options(args: argparse.Namespace, is_train: bool) -> Dict[str, Any]:
    """BasicSR's ``parse_options`` on ``args.opt`` with the ``--force_yml`` entries it can apply, rooted at the
    working directory; the datasets ``--force_yml datasets:<phase>=~`` names are removed afterwards."""
    if not osp.isfile(args.opt):
        raise OptionError(f'-opt {args.opt}: no such option file.')
    force_yml, dropped = split_force_yml(args)
    with basicsr_argv(args, force_yml), process_group_timeout(requested_timeout_s(args.opt, force_yml)):
        opt, _ = basicsr_parse_options(os.getcwd(), is_train)
    drop_datasets(opt, dropped)
    return opt


def requested_timeout_s(option_file: str, force_yml: Optional[List[str]]) -> int:
    """``dist_params.timeout_s`` as the run will have it (the option file, then ``--force_yml
    dist_params:timeout_s=N``), checked: BasicSR creates the process group before it applies ``--force_yml``."""
    value = (read_option_file(option_file).get('dist_params') or {}).get('timeout_s', DEFAULT_TIMEOUT_S)
    for entry in force_yml or []:
        keys, _, raw = entry.partition('=')
        if keys.strip() == 'dist_params:timeout_s':
            value = _postprocess_yml_value(raw.strip())
    return checked_timeout(value)


def requested_run_roots(args: argparse.Namespace) -> Dict[str, Optional[str]]:
    """``path.experiments_root`` / ``path.results_root`` as the user gave them, in the option file or with
    ``--force_yml path:experiments_root=...`` (BasicSR 1.4.2 overwrites both while parsing)."""
    user_path = read_option_file(args.opt).get('path') or {}
    roots = {key: user_path.get(key) for key, _ in RUN_ROOTS.values()}
    for entry in args.force_yml or []:
        keys, _, value = entry.partition('=')
        if keys.strip() in ('path:experiments_root', 'path:results_root'):
            roots[keys.strip().split(':')[1]] = value.strip()
    return roots


def run_parent(args: argparse.Namespace, is_train: bool) -> str:
    """The absolute folder the run's own folder goes in: the requested root, else ``experiments`` / ``results``
    under the working directory."""
    key, default = RUN_ROOTS[is_train]
    parent = requested_run_roots(args)[key]
    return osp.abspath(osp.expanduser(parent if parent is not None else osp.join(os.getcwd(), default)))


def set_run_folders(opt: Dict[str, Any], parent: str, is_train: bool) -> None:
    """Point the run's folders at ``<parent>/<name>``, as BasicSR 1.4.2 does under ``<root>/experiments``."""
    run_root = osp.join(parent, opt['name'])
    if is_train:
        opt['path']['experiments_root'] = run_root
        opt['path']['models'] = osp.join(run_root, 'models')
        opt['path']['training_states'] = osp.join(run_root, 'training_states')
    else:
        opt['path']['results_root'] = run_root
    opt['path']['log'] = run_root
    opt['path']['visualization'] = osp.join(run_root, 'visualization')


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the platform has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def cap_workers(opt: Dict[str, Any]) -> None:
    """Cap every ``num_worker_per_gpu`` at the CPUs this process may use, with one line each: more workers than CPUs
    only compete for them (PyTorch's DataLoader warns), and the shipped files ask for 8 (a GPU server's value)."""
    cpus = available_cpus()
    for phase, dataset_opt in (opt.get('datasets') or {}).items():
        workers = dataset_opt.get('num_worker_per_gpu') if isinstance(dataset_opt, dict) else None
        if isinstance(workers, int) and workers > cpus:
            dataset_opt['num_worker_per_gpu'] = cpus
            print(f'datasets.{phase}.num_worker_per_gpu: {workers} capped at {cpus}, the CPUs this process may use.',
                  flush=True)


def restart_count() -> int:
    """How often torchrun has restarted this worker's group (``TORCHELASTIC_RESTART_COUNT``; 0 for a first start and
    outside torchrun)."""
    value = os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')
    return int(value) if value.isdigit() else 0


def resume_after_restart(opt: Dict[str, Any]) -> None:
    """A worker group that torchrun restarted (``--max-restarts N``, after a worker died or timed out) resumes from
    the run's latest complete checkpoint, as with ``--auto_resume``; without a checkpoint yet it starts again from
    iteration 0.

    The ranks decide together: torchrun counts a restart only on the node whose worker failed (the other nodes'
    agents restart theirs as a membership change, with the count unchanged), so the group restarts when any rank's
    count is above 0, and every rank resumes from the state rank 0 sees (``path.resume_state``). Without this, the
    restarted group would start the run anew and BasicSR would archive its folder as ``<name>_archived_<time>``.
    """
    states = opt['path']['training_states']
    views = gathered((restart_count(), latest_training_state(states)))
    restart, latest = max(count for count, _ in views), views[0][1]
    if not restart:
        return
    if latest is None:
        print(f'torchrun restart {restart}: no complete checkpoint yet in {states}; the run starts again from '
              'iteration 0.', flush=True)
        return
    opt['path']['resume_state'] = latest
    iteration = osp.basename(latest)[:-len('.state')]
    print(f"torchrun restart {restart}: resuming from {latest} (iteration {iteration}), the run's latest complete "
          'checkpoint, as with --auto_resume.', flush=True)
