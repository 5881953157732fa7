"""Size and cost of the teacher and the student of option files: ``dckd-profile -opt FILE [-opt FILE ...]`` or
``dckd-profile --all options/train``; or of trained students: ``dckd-profile --model net_g_X.pth`` (the network
detected from the checkpoint as ``dckd-infer`` detects it, e.g. a SPAN or any spandrel architecture).

For the ``network_t`` and ``network_g`` block of each option file (built with random weights: no checkpoint is
needed) it measures, at one LQ input size (``--size 64``: a ``1 x C x 64 x 64`` input):

parameters
    ``sum(p.numel() for p in net.parameters())`` (buffers excluded), as Table 1 of the paper counts them; the paper's
    figure is shown next to it for the Table 1 configurations. A network that is re-parameterised for inference
    (SPAN: each three-branch ``Conv3XC`` fused into one 3x3 convolution) shows its deployed count next to the trained
    one, and FLOPs, latency and memory are those of the deployed form.
FLOPs
    ``torch.utils.flop_counter.FlopCounterMode`` over one forward pass: two FLOPs per multiply-accumulate of the
    convolutions and matrix products (a 3x3 conv ``cin -> cout`` on ``H x W`` counts ``2 * H * W * cout * cin * 9``;
    biases, activations, normalisations and softmax are not counted).
CPU latency
    The median wall time of ``--runs`` forward passes (``torch.inference_mode``) after ``--warmup`` passes, with
    ``--threads`` intra-op threads (``torch.set_num_threads`` and ``OMP_NUM_THREADS``).
peak memory
    How far one forward pass raises the resident memory of a fresh process above what it held just before (the
    weights built, nothing else run): the peak resident set size (``VmHWM``, reset through ``/proc/self/clear_refs``
    right before the pass) minus the resident size at that moment. It covers activations, workspaces and allocator
    overhead of inference (no autograd), not the weights. Where ``/proc`` does not allow the reset (not Linux) the
    column says n/a.

Every network is measured in its own fresh Python process, one after the other, so that one network's memory and
caches do not affect the next. Inputs are padded to the network's ``window_size`` as in validation. The result is a
markdown table (stdout, and ``-o table.md``) with a teacher/student ratio row per option file. Teachers of type
``SpandrelTeacher`` are known only once their checkpoint is read, so they are skipped with a note. With ``--all``,
option files that share the same teacher and student (the methods of one backbone and scale) are measured once and
listed together.
"""
import argparse
import json
import os
import os.path as osp
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from tqdm import tqdm

from dckd_basicsr.commands.measurement import Measurement, measure_in_subprocess
from dckd_basicsr.errors import OptionError, report_option_errors

# Table 1 of the paper: (type, role) -> parameters in millions, for the full-size configurations.
TABLE1_MILLIONS = {
    ('SwinIR', 'teacher'): 11.9,
    ('SwinIR', 'student'): 1.2,
    ('RCAN', 'teacher'): 15.6,
    ('RCAN', 'student'): 5.2,
    ('NAFNet', 'teacher'): 17.1,
    ('NAFNet', 'student'): 2.7,
    ('Restormer', 'teacher'): 26.1,
    ('Restormer', 'student'): 3.8,
}
SKIPPED_TEACHERS = ('SpandrelTeacher', )


# ------------------------------------------------------------------------------------------------------- the table
@dataclass
class Row:
    """One option file (or several sharing the same networks) and its measurements."""
    files: List[str]
    teacher: Optional[Dict[str, Any]]
    student: Optional[Dict[str, Any]]
    note: str = ''


def read_rows(files: Sequence[str]) -> List[Row]:
    """The teacher/student blocks of each option file; files with the same pair become one row."""
    from dckd_basicsr.options import read_option_file
    rows: 'OrderedDict[str, Row]' = OrderedDict()
    for path in files:
        opt = read_option_file(path)
        student = opt.get('network_g')
        teacher = opt.get('network_t')
        if not isinstance(student, dict) or 'type' not in student:
            raise OptionError(f'-opt {path}: no network_g block with a type.')
        note = ''
        if isinstance(teacher, dict) and teacher.get('type') in SKIPPED_TEACHERS:
            note = (f'teacher skipped: {teacher["type"]} is known only once its checkpoint '
                    f'({(opt.get("path") or {}).get("pretrain_network_t")}) is read.')
            teacher = None
        elif teacher is not None and (not isinstance(teacher, dict) or 'type' not in teacher):
            raise OptionError(f'-opt {path}: network_t has no type.')
        key = json.dumps([teacher, student, note], sort_keys=True, default=str)
        if key in rows:
            rows[key].files.append(path)
        else:
            rows[key] = Row([path], dict(teacher) if teacher else None, dict(student), note)
    return list(rows.values())


def model_rows(models: Sequence[str]) -> List[Row]:
    """One student row per checkpoint, its network detected from the weights (or rebuilt as ``dckd-infer`` does)."""
    from dckd_basicsr.checkpoints.students import load_student
    return [Row([path], None, dict(load_student(path).opt)) for path in models]


def _params(m: Measurement) -> str:
    deployed = m.deployed_params
    return f'{m.params:,}' + (f' (deployed {deployed:,})' if deployed is not None and deployed != m.params else '')


def _count(n: float) -> str:
    for unit, factor in (('G', 1e9), ('M', 1e6), ('k', 1e3)):
        if n >= factor:
            return f'{n / factor:.2f} {unit}'
    return f'{n:g}'


def _ratio(a: Optional[float], b: Optional[float]) -> str:
    return f'{a / b:.2f}x' if a is not None and b else '-'


def _describe(net_opt: Dict[str, Any]) -> str:
    from dckd_basicsr.archs.spandrel_students_arch import network_scale, spandrel_arch
    arch = spandrel_arch(net_opt['type'])
    scale = network_scale(arch, net_opt) if arch else net_opt.get('upscale', net_opt.get('scale', 1))
    return f"{net_opt['type']} x{scale}"


def _table1(net_opt: Dict[str, Any], role: str, params: int) -> str:
    millions = TABLE1_MILLIONS.get((net_opt['type'], role))
    if millions is None or abs(params / 1e6 - millions) > 0.05 * millions:
        return '-'
    return f'{millions}M'


def format_table(rows: Sequence[Row], results: Dict[str, Measurement], size: int, threads: int, runs: int,
                 warmup: int) -> str:
    """The markdown table of :func:`profile` (``results`` keyed by :func:`network_key`)."""
    latency = (f'CPU, median of {runs} run{"s" * (runs != 1)} after {warmup} warm-up, {threads} '
               f'thread{"s" * (threads != 1)}' if runs else 'not measured (--runs 0)')
    lines = [
        f'Input: one {size}x{size} LQ image. Params: parameters (Table 1: the paper\'s figure). FLOPs: '
        f'torch.utils.flop_counter, 2 per multiply-add. Latency: {latency}. Peak memory: rise of the peak resident set '
        'size during one forward pass, weights excluded.', '',
        '| option file | role | network | params | Table 1 | FLOPs | CPU latency (ms) | peak memory (MiB) |',
        '|---|---|---|---:|---:|---:|---:|---:|'
    ]
    notes = []
    for row in rows:
        name = osp.basename(row.files[0])
        if len(row.files) > 1:
            name += f' (+{len(row.files) - 1} with the same networks)'
        measured = {}
        for role, net_opt in (('teacher', row.teacher), ('student', row.student)):
            if not net_opt:
                continue
            m = results[network_key(net_opt)]
            measured[role] = m
            latency = f'{m.latency_ms:.1f}' if m.latency_ms is not None else '-'
            memory = f'{m.peak_mib:.1f}' if m.peak_mib is not None else 'n/a'
            lines.append(f'| {name} | {role} | {_describe(net_opt)} | {_params(m)} | '
                         f'{_table1(net_opt, role, m.params)} | {_count(m.flops)} | {latency} | {memory} |')
            name = ''
        if len(measured) == 2:
            t, s = measured['teacher'], measured['student']
            lines.append(f'|  | teacher/student |  | {_ratio(t.params, s.params)} |  | {_ratio(t.flops, s.flops)} | '
                         f'{_ratio(t.latency_ms, s.latency_ms)} | {_ratio(t.peak_mib, s.peak_mib)} |')
        if row.note:
            notes.append(f'- {osp.basename(row.files[0])}: {row.note}')
    return '\n'.join(lines + ([''] + notes if notes else [])) + '\n'


def network_key(net_opt: Dict[str, Any]) -> str:
    """Networks with equal blocks are measured once."""
    return json.dumps(net_opt, sort_keys=True, default=str)


def profile(files: Sequence[str], size: int = 64, threads: int = 1, runs: int = 5, warmup: int = 1,
            memory: bool = True, progress: bool = True,
            models: Sequence[str] = ()) -> Tuple[str, List[Row], Dict[str, Measurement]]:
    """Measure the networks of ``files`` and of the checkpoints ``models`` (each distinct block once, in a fresh
    process); returns the markdown table, the rows and the measurements."""
    rows = read_rows(files) + model_rows(models)
    todo: 'OrderedDict[str, Tuple[Dict[str, Any], str]]' = OrderedDict()
    for row in rows:
        for net_opt in (row.teacher, row.student):
            if net_opt:
                todo.setdefault(network_key(net_opt), (net_opt, row.files[0]))
    results = {}
    for key, (net_opt, where) in tqdm(todo.items(), desc='dckd-profile', unit='net', disable=not progress):
        results[key] = measure_in_subprocess(net_opt, size, threads, runs, warmup, memory, where)
    return format_table(rows, results, size, threads, runs, warmup), rows, results


def option_files(opts: Sequence[str], all_dir: Optional[str]) -> List[str]:
    """The ``-opt`` files, or every ``*.yml`` / ``*.yaml`` under ``--all`` (sorted)."""
    files = list(opts or [])
    if all_dir:
        if not osp.isdir(all_dir):
            raise OptionError(f'--all {all_dir}: no such folder.')
        from basicsr.utils import scandir
        files += sorted(osp.join(all_dir, p) for p in scandir(all_dir, suffix=('.yml', '.yaml'), recursive=True))
    for path in files:
        if not osp.isfile(path):
            raise OptionError(f'-opt {path}: no such file.')
    if not files:
        raise OptionError(f'--all {all_dir}: no option files (*.yml) in this folder.')
    return files


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='dckd-profile',
        description='Parameters, FLOPs, CPU latency and peak memory of the teacher (network_t) and the student '
        '(network_g) of option files, with random weights, as a markdown table with teacher/student ratios.')
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument('-opt', action='append', help='option file (repeat for several)')
    source.add_argument('--all', metavar='DIR', help='every option file under DIR, e.g. options/train')
    source.add_argument('--model', action='append',
                        help='trained student checkpoint, its network detected from the weights (repeat for several)')
    parser.add_argument('--size', type=int, default=64, help='LQ input height and width (default: 64)')
    parser.add_argument('--threads', type=int, default=1, help='CPU threads for the latency runs (default: 1)')
    parser.add_argument('--runs', type=int, default=5, help='timed runs, median reported; 0 skips (default: 5)')
    parser.add_argument('--warmup', type=int, default=1, help='untimed runs before them (default: 1)')
    parser.add_argument('--no-memory', action='store_true', help='skip the peak memory measurement')
    parser.add_argument('-o', '--output', help='also write the table to this markdown file')
    return parser


def main(argv: Optional[Sequence[str]] = None) -> str:
    """Parse ``argv``, measure, print and write the table; returns it."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.size < 1 or args.threads < 1 or args.runs < 0 or args.warmup < 0:
        parser.error('--size and --threads must be >= 1, --runs and --warmup >= 0.')
    files = option_files(args.opt, args.all) if not args.model else []
    for path in args.model or ():
        if not osp.isfile(path):
            raise OptionError(f'--model {path}: no such file.')
    table, _, _ = profile(files, args.size, args.threads, args.runs, args.warmup, not args.no_memory,
                          models=args.model or ())
    print(table, end='', flush=True)
    if args.output:
        os.makedirs(osp.dirname(osp.abspath(args.output)), exist_ok=True)
        with open(args.output, 'w') as f:
            f.write(table)
    return table


def cli() -> None:
    """Console script ``dckd-profile``."""
    with report_option_errors(prog='dckd-profile'):
        main()


if __name__ == '__main__':
    cli()
