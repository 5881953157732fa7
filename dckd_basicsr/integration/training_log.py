r"""Reading BasicSR's text logs (``experiments/<name>/train_<name>_<time>.log``, ``results/<name>/test_*.log``).

BasicSR's ``MessageLogger`` writes one training message per ``print_freq`` iterations::

    2026-11-26 15:13:14,828 INFO: [demo_..][epoch:  1, iter:   1,234, lr:(1.000e-04,)] [eta: ...] l_pix: ...

and ``SRModel`` writes each validation as a ``Validation <dataset>`` message followed by one line per metric::

    2026-11-26 15:13:15,000 INFO: Validation Set5
    \t # psnr: 32.5000\tBest: 32.5000 @ 5000 iter

``dckd-results`` reads the validations into the paper's tables; ``dckd-demo`` follows the training messages for its
progress display and reads the validations for its PSNR-vs-iteration panel.
"""
import glob
import re
from os import path as osp
from typing import Any, Dict, Iterable, List, Optional, Tuple

# The iteration of a training message (digits with thousands separators).
ITER_RE = re.compile(r'\[[^\]]*epoch:\s*-?\d+, iter:\s*([\d,]+)')
_VALIDATION_RE = re.compile(r'INFO: Validation (.+?)\s*$')
_METRIC_RE = re.compile(r'^\s*# ([\w.-]+): (-?(?:\d+(?:\.\d*)?|nan|inf))(?:\s+Best: (-?[\d.]+|nan|inf) @ (\d+) iter)?')
_LOG_TIME_RE = re.compile(r'_(\d{8}_\d{6})\.log$')


def training_iteration(line: str) -> Optional[int]:
    """The iteration of a training message, None for any other line."""
    match = ITER_RE.search(line)
    return int(match.group(1).replace(',', '')) if match else None


def parse_validations(lines: Iterable[str]) -> List[Dict[str, Any]]:
    """Validation records of one BasicSR log, in order: ``{'dataset', 'iter', 'metrics': {name: value}}``.

    ``dataset`` is the name as logged. ``iter`` is the iteration of the last training message before the validation
    (BasicSR validates right after logging when ``val_freq`` is a multiple of ``print_freq``), or the largest
    ``Best: ... @ N iter`` of the validation when no training message came first (test logs, or ``print_freq`` larger
    than ``val_freq``). Validations without a metric line are left out.
    """
    records: List[Dict[str, Any]] = []
    current_iter: Optional[int] = None
    record: Optional[Dict[str, Any]] = None
    for line in lines:
        match = _VALIDATION_RE.search(line)
        if match:
            record = {'dataset': match.group(1).strip(), 'iter': current_iter, 'metrics': {}}
            records.append(record)
            continue
        match = _METRIC_RE.match(line)
        if match and record is not None:
            record['metrics'][match.group(1)] = float(match.group(2))
            if match.group(4) is not None and current_iter is None:
                best_iter = int(match.group(4))
                record['iter'] = best_iter if record['iter'] is None else max(record['iter'], best_iter)
            continue
        record = None
        iteration = training_iteration(line)
        if iteration is not None:
            current_iter = iteration
    return [r for r in records if r['metrics']]


def _log_sort_key(path: str) -> Tuple[str, str]:
    match = _LOG_TIME_RE.search(osp.basename(path))
    return (match.group(1) if match else '', osp.basename(path))


def run_logs(folder: str) -> List[str]:
    """BasicSR train/test logs of a run folder, oldest first (by the time stamp BasicSR puts in the name)."""
    logs = [p for p in glob.glob(osp.join(folder, '*.log')) if osp.basename(p).startswith(('train_', 'test_'))]
    return sorted(logs, key=_log_sort_key)
