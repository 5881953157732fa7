"""Training one demo run: BasicSR's pipeline in a subprocess, with a progress display read from its log."""
import argparse
import os
import subprocess
import sys
import time
from os import path as osp
from typing import Optional

import yaml
from tqdm import tqdm

from dckd_basicsr.commands.demo.templates import concrete_options
from dckd_basicsr.integration.training_log import run_logs, training_iteration


def say(message: str) -> None:
    """One console line, also between progress bars."""
    tqdm.write(message, file=sys.stdout)
    sys.stdout.flush()


class Progress:
    """Iterations of one run: a tqdm bar on a terminal, else plain lines (start, every quarter, end), so output
    redirected to a file reads line by line instead of as one line of carriage returns."""

    def __init__(self, label: str, total: int, interactive: Optional[bool] = None):
        self.label, self.total, self.n = label, total, 0
        self.interactive = sys.stderr.isatty() if interactive is None else interactive
        self.started = time.time()
        self._reported = 0
        if self.interactive:
            self._bar = tqdm(total=total, desc=f'{label:>8}', unit='it', dynamic_ncols=True)
        else:
            say(f'[demo] {label}: training, {total} iterations')

    def update_to(self, n: int) -> None:
        n = min(n, self.total)
        if self.interactive:
            self._bar.update(n - self._bar.n)
        else:
            quarter = 4 * n // self.total if self.total else 4
            if quarter > self._reported and n < self.total:
                self._reported = quarter
                say(f'[demo] {self.label}: {n}/{self.total} iterations ({100 * n // self.total}%), '
                    f'{time.time() - self.started:.0f} s')
        self.n = n

    def close(self, finished: bool) -> None:
        if self.interactive:
            if finished:
                self._bar.update(self.total - self._bar.n)
            self._bar.close()
        elif finished:
            seconds = time.time() - self.started
            say(f'[demo] {self.label}: {self.total}/{self.total} iterations, done in {seconds:.0f} s')


def train_run(opt: dict, root: str, report_dir: str, label: str) -> str:
    """Train one run through ``python -m dckd_basicsr.train`` (BasicSR's pipeline) in ``root``, with a progress
    display (:class:`Progress`), and say where its logs are.

    The option file is written to ``<report_dir>/options/<name>.yml``. A run whose final checkpoint exists is reused;
    an interrupted one is continued with ``--auto_resume``. Returns the experiment folder.
    """
    name, iters = opt['name'], opt['train']['total_iter']
    experiment = osp.join(root, 'experiments', name)
    final = osp.join(experiment, 'models', 'net_g_latest.pth')
    if osp.isfile(final):
        say(f'[demo] {name}: finished earlier, reused ({experiment})')
        return experiment
    opt_file = osp.join(report_dir, 'options', f'{name}.yml')
    os.makedirs(osp.dirname(opt_file), exist_ok=True)
    with open(opt_file, 'w') as f:
        yaml.safe_dump(opt, f, sort_keys=False)
    extra = ['--auto_resume'] if osp.isdir(experiment) else []
    command = [sys.executable, '-m', 'dckd_basicsr.train', '-opt', osp.abspath(opt_file)] + extra
    log_path = osp.join(report_dir, f'{name}.stdout.log')
    say(f'[demo] {label}: BasicSR log in {osp.join(experiment, f"train_{name}_<time>.log")}, console output in '
        f'{log_path}')
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    progress = Progress(label, iters)
    code = None
    try:
        with open(log_path, 'w') as log:
            process = subprocess.Popen(command, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                       text=True, env=env)
            for line in process.stdout:
                log.write(line)
                iteration = training_iteration(line)
                if iteration is not None:
                    progress.update_to(iteration)
            code = process.wait()
    finally:
        progress.close(finished=code == 0)
    if code != 0:
        with open(log_path) as f:
            tail = ''.join(f.readlines()[-25:])
        raise RuntimeError(f'training {name} failed (exit {code}); its output is in {log_path}:\n{tail}')
    logs = run_logs(experiment)
    if logs:
        say(f'[demo] {label}: BasicSR log {logs[-1]}')
    return experiment


def train(method: str, args: argparse.Namespace, iters: int, report_dir: str) -> str:
    """Train one demo run of ``method`` (or the teacher) for ``iters`` iterations (:func:`train_run`)."""
    return train_run(concrete_options(method, args, iters), args.out, report_dir, label=method)
