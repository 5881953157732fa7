"""The markdown report of ``scripts/gpu_check.sh``: one table of the CUDA tests (outcome and seconds each, from
pytest's JUnit XML), then the tables ``benchmarks/bench_step.py`` printed, with a line for each stage that did not
finish.

Usage (the script calls it)::

    python scripts/gpu_check_report.py OUT_DIR --device "NVIDIA H100" --seconds 412 > OUT_DIR/gpu_check.md
"""
import argparse
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import List, Optional

import torch

# bench_step.py stages of gpu_check.sh: output file stem -> what it holds
BENCH_STAGES = {'bench_step': 'rows without compilation', 'bench_step_compile': 'compile rows'}


def test_rows(xml_file: Path) -> List[str]:
    """``| test | outcome | s |`` per test case, then a one-line count."""
    if not xml_file.is_file():
        return ['No test results (pytest wrote no cuda_tests.xml: see cuda_tests.log).']
    lines = ['| CUDA test | outcome | s |', '|---|---|---|']
    counts = {'passed': 0, 'failed': 0, 'skipped': 0}
    for case in ElementTree.parse(xml_file).iter('testcase'):
        name = f"{case.get('classname')}::{case.get('name')}"
        outcome = 'passed'
        for tag, label in (('failure', 'FAILED'), ('error', 'FAILED'), ('skipped', 'skipped')):
            found = case.find(tag)
            if found is not None:
                reason = (found.get('message') or '').splitlines()[0] if found.get('message') else ''
                outcome = f'{label}: {reason}'.rstrip(': ')
                break
        counts['passed' if outcome == 'passed' else 'skipped' if outcome.startswith('skipped') else 'failed'] += 1
        lines.append(f"| {name} | {outcome.replace('|', '/')} | {float(case.get('time') or 0):.1f} |")
    lines += ['', f"CUDA tests: {counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped."]
    return lines


def status_line(out: Path, stem: str, label: str) -> Optional[str]:
    """A line for a stage (``<stem>.status``) that did not end with status 0 (124: ``timeout`` stopped it)."""
    status_file = out / f'{stem}.status'
    status = status_file.read_text().strip() if status_file.is_file() else '0'
    if status == '0':
        return None
    if status == '124':
        return f'{label}: stopped by the time limit; what follows is what it wrote by then.'
    return f'{label}: exit status {status} (see {stem}.log).'


def report(out: Path, device: str, torch_version: str, minutes: float) -> str:
    lines = [f'## GPU check: {device}, torch {torch_version}, {minutes:.1f} min', '']
    tests_stopped = status_line(out, 'cuda_tests', 'pytest -m cuda')
    if tests_stopped and not tests_stopped.endswith('(see cuda_tests.log).'):  # 1: a test failed, shown below
        lines += [tests_stopped, '']
    lines += test_rows(out / 'cuda_tests.xml') + ['']
    for stem, what in BENCH_STAGES.items():
        if not (out / f'{stem}.md').is_file() and not (out / f'{stem}.status').is_file():
            continue
        lines += [f'### benchmarks/bench_step.py: {what}', '']
        problem = status_line(out, stem, f'bench_step.py, {what}')
        if problem:
            lines += [problem, '']
        if (out / f'{stem}.md').is_file():
            lines += (out / f'{stem}.md').read_text().rstrip().splitlines() + ['']
    return '\n'.join(lines).rstrip() + '\n'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('out', type=Path, help='the folder gpu_check.sh wrote to')
    parser.add_argument('--device', default='')
    parser.add_argument('--seconds', type=float, default=0.0)
    args = parser.parse_args()
    print(report(args.out, args.device or torch.cuda.get_device_name(), torch.__version__, args.seconds / 60),
          end='')


if __name__ == '__main__':
    main()
