"""Collect the validation PSNR/SSIM of BasicSR runs into the paper's tables, next to the paper's own numbers.

``dckd-results experiments/ [more folders or .log files] --out results.md [--pick best|last]``

Every run folder (a folder holding ``train_*.log`` or ``test_*.log`` files, as BasicSR writes them under
``experiments/<name>/`` and ``results/<name>/``) gives one row: its log files are read in time order and every
``Validation <dataset>`` message of BasicSR's ``SRModel`` (``# psnr: 30.1234  Best: ... @ N iter`` lines) is one
validation. ``--pick best`` takes, per dataset, the validation with the highest PSNR (its SSIM comes from the same
validation, not BasicSR's separately tracked best SSIM); ``--pick last`` the last one. Folders whose name contains
``_archived_`` (BasicSR's renamed older runs of the same name) are skipped.

Rows are grouped in blocks (backbone, task, scale, teacher) with methods as rows and datasets as columns, as in the
paper's Tables 2-4. Backbone (the student's network), task, scale and method come from the run name, by this
convention (tokens split on ``_``, case-insensitive, other tokens ignored, e.g. a leading ``001``)::

    <Backbone>_SRx<scale>_<Method>      e.g. RCAN_SRx4_DCKD, 001_SwinIR_SRx2_Logits_seed1, SPAN_SRx4_DCKD
    <Backbone>_Deblur_<Method>          GoPro, scale 1 (``GoPro`` is accepted for ``Deblur``)
    <Backbone>_Derain_<Method>          Rain13K, scale 1 (``Rain13K`` is accepted for ``Derain``)

Backbones: the paper's (SwinIR, RCAN, NAFNet, Restormer, EDSR) and every spandrel architecture registered as a
student (SPAN, SAFMN, RealPLKSR, ...); a ``SpandrelTeacher`` token names the teacher.

Methods: Teacher, Scratch, Logits, FAKD, MiPKD, DUKD, DCR (DCR only), DMM (DMM only), DCKD, DCKDstar (DCKD*; also
``DCKD+``), DCKDEq9 (DCKD with the paper's Eq. 9, not a Table 2 row). Whatever the name does not say is read from the
option file BasicSR copies into the run folder: ``network_g.type`` (backbone), ``scale``, the validation set names
(task), and the model and loss blocks (method: ``DUKDModel`` is DUKD; ``cl_opt`` + ``ce_opt`` is DCKD, with
``lcr_opt`` DCKD*, with a ``DistributionMappingLoss`` ``ce_opt`` and no ``lcr_opt`` DCKD (Eq. 9); a KD model with
neither is Logits; ``model_type: SRModel`` or ``SwinIRModel`` is Scratch); the option file's ``network_g.type`` is
the backbone even where the name states another, and its ``network_t`` is the teacher (a ``SpandrelTeacher`` by its
``architecture``).

The teacher makes its own block where it is not the student's own architecture (the paper distils each backbone from
a larger one of the same kind): a SPAN student distilled from SwinIR has a block "SPAN x4, teacher SwinIR", the same
student distilled from a HAT file through ``SpandrelTeacher`` another; runs without a teacher (Scratch, Teacher) are
listed in each block of their student.
"""
import argparse
import glob
import math
import os
import re
import sys
from os import path as osp
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from dckd_basicsr.commands.paper_results import (BACKBONES, DEBLUR_DATASETS, DERAIN_DATASETS, METHODS, PAPER_RESULTS,
                                                 SR_DATASETS, Metrics)
from dckd_basicsr.errors import OptionError, report_option_errors
from dckd_basicsr.integration.training_log import parse_validations, run_logs
from dckd_basicsr.options import read_option_file

_METHOD_TOKENS = {
    'teacher': 'Teacher', 'scratch': 'Scratch', 'baseline': 'Scratch', 'logits': 'Logits', 'logitskd': 'Logits',
    'kd': 'Logits', 'fakd': 'FAKD', 'mipkd': 'MiPKD', 'dukd': 'DUKD', 'dcr': 'DCR only', 'dcronly': 'DCR only',
    'dmm': 'DMM only', 'dmmonly': 'DMM only', 'dckd': 'DCKD', 'dckd*': 'DCKD*', 'dckdstar': 'DCKD*', 'dckd+': 'DCKD*',
    'dckdeq9': 'DCKD (Eq. 9)'
}
_DATASET_ALIASES = {'bsd100': 'B100', 'bsds100': 'B100', 'b100': 'B100', 'set5': 'Set5', 'set14': 'Set14',
                    'urban100': 'Urban100', 'manga109': 'Manga109'}
_BACKBONE_TYPES = {'nafnetlocal': 'NAFNet'}
_TEACHERLESS = ('Scratch', 'Teacher')
SPANDREL_TEACHER = 'SpandrelTeacher'


def _backbone_tokens() -> Dict[str, str]:
    """Lower-cased name token -> backbone: the paper's backbones and the spandrel archs registered as students."""
    from dckd_basicsr.archs.spandrel_students_arch import REGISTERED
    tokens = {name.lower(): name for name in REGISTERED}
    tokens.update((name.lower(), name) for name in BACKBONES)
    return tokens


def canonical_dataset(name: str) -> str:
    """``BSD100`` -> ``B100``, ``gopro_test`` -> ``GoPro``; other names unchanged."""
    key = name.strip().lower()
    if key in _DATASET_ALIASES:
        return _DATASET_ALIASES[key]
    if key.startswith('gopro'):
        return 'GoPro'
    return name.strip()


def parse_log(lines: Iterable[str]) -> List[Dict[str, Any]]:
    """Validation records of one BasicSR log (:func:`~dckd_basicsr.integration.training_log.parse_validations`), with
    the datasets under the paper's names (:func:`canonical_dataset`)."""
    return [dict(record, dataset=canonical_dataset(record['dataset'])) for record in parse_validations(lines)]


def load_run_options(folder: str) -> Dict[str, Any]:
    """The option file BasicSR copied into the run folder (the first readable ``*.yml``), or ``{}``."""
    for path in sorted(glob.glob(osp.join(folder, '*.yml'))):
        try:
            return read_option_file(path)
        except OptionError:
            continue
    return {}


def labels_from_name(name: str) -> Dict[str, Any]:
    """Backbone, task, scale and method that the run name states (see the module docstring); missing keys absent."""
    labels: Dict[str, Any] = {}
    backbones = _backbone_tokens()
    for token in name.split('_'):
        key = token.lower().replace('-', '')
        backbone = backbones.get(key)
        if backbone and 'backbone' not in labels:
            labels['backbone'] = backbone
            continue
        if key == SPANDREL_TEACHER.lower():
            labels['teacher'] = SPANDREL_TEACHER
            continue
        match = re.fullmatch(r'(?:sr)?x(\d)', key)
        if match:
            labels.update(task='SR', scale=int(match.group(1)))
        elif key in ('deblur', 'deblurring', 'gopro'):
            labels.update(task='Deblur', scale=1)
        elif key in ('derain', 'deraining', 'rain13k'):
            labels.update(task='Derain', scale=1)
        elif key in _METHOD_TOKENS:
            labels['method'] = _METHOD_TOKENS[key]
    return labels


def labels_from_options(opt: Dict[str, Any]) -> Dict[str, Any]:
    """Backbone, task, scale, method and teacher read from a run's option file; missing keys absent."""
    labels: Dict[str, Any] = {}
    arch = (opt.get('network_g') or {}).get('type')
    if arch:
        labels['backbone'] = _BACKBONE_TYPES.get(arch.lower(), arch)
    teacher = opt.get('network_t')
    if isinstance(teacher, dict) and teacher.get('type'):
        name = str(teacher['type'])
        if name == SPANDREL_TEACHER and teacher.get('architecture'):
            name = f"{teacher['architecture']} ({SPANDREL_TEACHER})"
        labels['teacher'] = _BACKBONE_TYPES.get(name.lower(), name)
    scale = opt.get('scale')
    if isinstance(scale, int):
        labels['scale'] = scale
        if scale > 1:
            labels['task'] = 'SR'
    names = [str(d.get('name', '')).lower() for d in (opt.get('datasets') or {}).values() if isinstance(d, dict)]
    if labels.get('scale') == 1:
        if any('gopro' in n for n in names):
            labels['task'] = 'Deblur'
        elif any('rain' in n or n in ('test100', 'test2800', 'test1200') for n in names):
            labels['task'] = 'Derain'
    train = opt.get('train') or {}
    model_type = opt.get('model_type')
    if model_type in ('SRModel', 'SwinIRModel'):  # plain BasicSR models: no teacher
        labels['method'] = 'Scratch'
    elif model_type in ('DUKDModel', 'DUKD'):
        labels['method'] = 'DUKD'
    elif model_type:
        cl, ce, lcr = (train.get(k) is not None for k in ('cl_opt', 'ce_opt', 'lcr_opt'))
        if cl and ce and not lcr and train['ce_opt'].get('type') == 'DistributionMappingLoss':
            labels['method'] = 'DCKD (Eq. 9)'
        elif cl and ce:
            labels['method'] = 'DCKD*' if lcr else 'DCKD'
        elif cl:
            labels['method'] = 'DCR only'
        elif ce:
            labels['method'] = 'DMM only'
        elif lcr:
            labels['method'] = 'DUKD'
        elif train.get('fakd_opt') is not None:
            labels['method'] = 'FAKD'
        elif train.get('logits_opt') is not None or train.get('kd_opt') is not None:
            labels['method'] = 'Logits'
    return labels


def pick(records: Sequence[Dict[str, Any]], mode: str = 'best') -> Dict[str, Dict[str, Any]]:
    """Per dataset, the validation with the highest PSNR (``best``; the earliest on ties) or the last one."""
    chosen: Dict[str, Dict[str, Any]] = {}
    for record in records:
        dataset = record['dataset']
        if mode == 'last' or dataset not in chosen:
            chosen[dataset] = record
            continue
        psnr, best = record['metrics'].get('psnr'), chosen[dataset]['metrics'].get('psnr')
        if psnr is not None and not math.isnan(psnr) and (best is None or math.isnan(best) or psnr > best):
            chosen[dataset] = record
    return chosen


def collect_runs(paths: Sequence[str], mode: str = 'best', include_archived: bool = False) -> List[Dict[str, Any]]:
    """One dict per run found under ``paths``: name, folder, labels, number of validations and picked records."""
    folders: List[str] = []
    for path in paths:
        if osp.isfile(path):
            folders.append(path)
        elif osp.isdir(path):
            if run_logs(path):
                folders.append(path)
            folders += [osp.join(path, d) for d in sorted(os.listdir(path)) if run_logs(osp.join(path, d))]
        else:
            raise OptionError(f'{path}: no such folder or log file.')
    runs = []
    for folder in folders:
        is_file = osp.isfile(folder)
        name = osp.basename(osp.dirname(osp.abspath(folder)) if is_file else osp.abspath(folder))
        if '_archived_' in name and not include_archived:
            continue
        records: List[Dict[str, Any]] = []
        for log in ([folder] if is_file else run_logs(folder)):
            with open(log, 'r', errors='replace') as f:
                records += parse_log(f)
        if not records:
            continue
        options = load_run_options(osp.dirname(folder) if is_file else folder)
        labels = {'backbone': '?', 'task': '?', 'scale': 1, 'method': name}
        from_options, from_name = labels_from_options(options), labels_from_name(name)
        for key in ('backbone', 'teacher'):  # the option file's networks are the truth; its teacher is the fuller
            if key in from_options:
                from_name.pop(key, None)
        labels.update(from_options)
        labels.update(from_name)
        runs.append(dict(name=name, folder=folder, labels=labels, n_val=len(records), picked=pick(records, mode)))
    return runs


def _fmt(metrics: Metrics) -> str:
    psnr, ssim = metrics
    if psnr is None:
        return '-'
    return f'{psnr:.2f}/{ssim:.4f}' if ssim is not None else f'{psnr:.2f}/-'


def _fmt_diff(ours: Metrics, paper: Metrics) -> str:
    if ours[0] is None or paper[0] is None:
        return '-'
    text = f'{ours[0] - paper[0]:+.2f}'
    if ours[1] is not None and paper[1] is not None:
        text += f'/{ours[1] - paper[1]:+.4f}'
    return text


def _ordered(items: Iterable[str], order: Sequence[str]) -> List[str]:
    items = list(dict.fromkeys(items))
    return [x for x in order if x in items] + [x for x in items if x not in order]


def _block_title(backbone: str, task: str, scale: int, teacher: Optional[str] = None) -> str:
    by = f', teacher {teacher}' if teacher else ''
    if task == 'SR':
        return f'{backbone} x{scale}{by} (super-resolution, PSNR/SSIM on Y)'
    if task == 'Deblur':
        return f'{backbone}{by}, motion deblurring (GoPro, PSNR/SSIM on RGB)'
    if task == 'Derain':
        return f'{backbone}{by}, deraining (PSNR/SSIM on Y)'
    return f'{backbone}{by}, {task}, scale {scale}'


def block_teacher(labels: Dict[str, Any]) -> Optional[str]:
    """The teacher that gives a run its own block: a known teacher that is not the student's own architecture."""
    teacher = labels.get('teacher')
    return teacher if teacher and teacher != labels['backbone'] else None


def group_blocks(runs: Sequence[Dict[str, Any]]) -> Dict[Tuple[str, str, int, Optional[str]], List[Dict[str, Any]]]:
    """Runs by (backbone, task, scale, teacher); teacher-less runs (Scratch, Teacher) in every block of their
    student, and in a block of their own only when their student has no teacher block or other runs without one."""
    students: Dict[Tuple[str, str, int], Dict[Optional[str], List[Dict[str, Any]]]] = {}
    for run in runs:
        labels = run['labels']
        by_teacher = students.setdefault((labels['backbone'], labels['task'], labels['scale']), {})
        by_teacher.setdefault(block_teacher(labels), []).append(run)
    blocks = {}
    for student, by_teacher in students.items():
        alone = by_teacher.get(None, [])
        shared = [run for run in alone if run['labels']['method'] in _TEACHERLESS]
        teachers = [teacher for teacher in by_teacher if teacher is not None]
        for teacher in teachers:
            blocks[student + (teacher, )] = shared + by_teacher[teacher]
        if alone and (not teachers or len(shared) < len(alone)):
            blocks[student + (None, )] = alone
    return blocks


def format_tables(runs: Sequence[Dict[str, Any]], mode: str = 'best', paper: bool = True) -> str:
    """Markdown: one table per (backbone, task, scale); per method an ``ours`` row, then ``paper`` and ``diff``."""
    picked = 'the validation with the best PSNR' if mode == 'best' else 'the last validation'
    note = f'{len(runs)} run(s); per dataset {picked}. Cells are PSNR/SSIM.'
    if paper:
        note += ' `paper` rows are the numbers of Zhou et al., AAAI 2025 (DCKD); `diff` is ours minus paper.'
    lines = ['# Results', '', note, '']
    blocks = group_blocks(runs)
    task_order = {'SR': 0, 'Deblur': 1, 'Derain': 2}
    for key in sorted(blocks, key=lambda k: (task_order.get(k[1], 3), k[0], k[2], k[3] or '')):
        backbone, task, scale, teacher = key
        block_runs = sorted(blocks[key], key=lambda r: (METHODS.index(r['labels']['method'])
                                                         if r['labels']['method'] in METHODS else len(METHODS),
                                                         r['labels']['method'], r['name']))
        order = {'SR': SR_DATASETS, 'Deblur': DEBLUR_DATASETS, 'Derain': DERAIN_DATASETS}.get(task, ())
        datasets = _ordered((d for r in block_runs for d in r['picked']), order)
        reference = PAPER_RESULTS.get((backbone, task, scale), {}) if paper and teacher is None else {}
        methods = [r['labels']['method'] for r in block_runs]
        lines += [f'## {_block_title(backbone, task, scale, teacher)}', '',
                  '| Method | | ' + ' | '.join(datasets) + ' |', '|---|---|' + '---|' * len(datasets)]
        for run in block_runs:
            method = run['labels']['method']
            label = method if methods.count(method) == 1 else f'{method} ({run["name"]})'
            ours = {d: (rec['metrics'].get('psnr'), rec['metrics'].get('ssim')) for d, rec in run['picked'].items()}
            lines.append(f'| {label} | ours | ' + ' | '.join(_fmt(ours.get(d, (None, None))) for d in datasets) + ' |')
            if method in reference:
                ref = reference[method]
                lines.append('| | paper | ' + ' | '.join(_fmt(ref.get(d, (None, None))) for d in datasets) + ' |')
                lines.append('| | diff | ' + ' | '.join(
                    _fmt_diff(ours.get(d, (None, None)), ref.get(d, (None, None))) for d in datasets) + ' |')
        lines.append('')
    lines += ['## Runs', '', '| run | block | method | validations | iteration picked per dataset |',
              '|---|---|---|---|---|']
    for run in runs:
        labels = run['labels']
        iters = ', '.join(f'{d} {rec["iter"] if rec["iter"] is not None else "?"}' for d, rec in run['picked'].items())
        by = f', teacher {block_teacher(labels)}' if block_teacher(labels) else ''
        lines.append(f'| {run["name"]} | {labels["backbone"]} {labels["task"]} x{labels["scale"]}{by} | '
                     f'{labels["method"]} | {run["n_val"]} | {iters} |')
    return '\n'.join(lines) + '\n'


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Parse ``argv``, collect the runs and print or write the tables."""
    parser = argparse.ArgumentParser(prog='dckd-results', description=__doc__.split('\n')[0])
    parser.add_argument('paths', nargs='+', help='experiments/ or results/ folders, run folders or .log files')
    parser.add_argument('--out', help='markdown file to write (default: print)')
    parser.add_argument('--pick', choices=('best', 'last'), default='best',
                        help='per dataset, the validation with the best PSNR (default) or the last one')
    parser.add_argument('--no-paper', action='store_true', help="leave out the paper's numbers")
    parser.add_argument('--include-archived', action='store_true', help='also read *_archived_* run folders')
    args = parser.parse_args(argv)
    with report_option_errors(prog=parser.prog):
        runs = collect_runs(args.paths, args.pick, args.include_archived)
        if not runs:
            raise OptionError('no BasicSR validation results (train_*.log / test_*.log) under '
                              f'{", ".join(args.paths)}.')
        text = format_tables(runs, args.pick, paper=not args.no_paper)
    if args.out:
        os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
        with open(args.out, 'w') as f:
            f.write(text)
        print(f'{len(runs)} run(s) -> {args.out}')
    else:
        sys.stdout.write(text)


def cli() -> None:
    """Console script ``dckd-results``."""
    main()


if __name__ == '__main__':
    cli()
