"""Checks of a parsed option file that run before BasicSR builds anything; each problem names the option key.

:func:`check_options` runs them all and raises one :class:`~dckd_basicsr.errors.OptionError` listing every problem
(the patched ``parse_options`` calls it, :mod:`dckd_basicsr.integration.run_options`):

1. spandrel architectures (:mod:`dckd_basicsr.archs.spandrel_students_arch`): a refused type with its reason, a scale
   the arch cannot build, a ``train.fast`` precision it cannot train or run in;
2. the option schema (:mod:`.schema_blocks`): ``model_type`` and every ``type`` registered, no key the code does not
   read (close names suggested), values of the expected types; keys of third-party types that no schema can check
   are listed in one warning;
3. GPU-only settings on a machine without CUDA;
4. every file and folder the options name, and GT/LQ pairing (:mod:`dckd_basicsr.integration.preflight`);
5. training patch sizes against the scale and the VQGAN encoder's stride; ``train.max_nonfinite_steps``.
"""
from typing import Any, Callable, Dict, Iterable, List

from dckd_basicsr.errors import OptionError
from dckd_basicsr.integration.option_schema import Report, check
from dckd_basicsr.integration.preflight import check_files, dataset_problems, checkpoint_problems, pairing_problems
from dckd_basicsr.integration.registry_lookup import check_registered, unknown_type


def check_option_types(opt: Dict[str, Any]) -> None:
    """Check every ``type`` an option file names against BasicSR's registries, before anything is built.

    Raises :class:`UnknownTypeError` naming the option key, so a typo is reported in one line instead of after the
    datasets are loaded, deep inside ``build_model``.
    """
    from basicsr.utils.registry import ARCH_REGISTRY, DATASET_REGISTRY, LOSS_REGISTRY, METRIC_REGISTRY, MODEL_REGISTRY

    if 'model_type' in opt:
        check_registered(MODEL_REGISTRY, opt['model_type'], 'model_type')
    for key, value in opt.items():
        if key.startswith('network_') and isinstance(value, dict) and 'type' in value:
            check_registered(ARCH_REGISTRY, value['type'], f'{key}.type')
    for phase, dataset_opt in (opt.get('datasets') or {}).items():
        if isinstance(dataset_opt, dict) and 'type' in dataset_opt:
            check_registered(DATASET_REGISTRY, dataset_opt['type'], f'datasets.{phase}.type')
    for key, value in (opt.get('train') or {}).items():
        if key.endswith('_opt') and isinstance(value, dict) and 'type' in value:
            check_registered(LOSS_REGISTRY, value['type'], f'train.{key}.type')
    for name, metric_opt in ((opt.get('val') or {}).get('metrics') or {}).items():
        if isinstance(metric_opt, dict) and 'type' in metric_opt:
            check_registered(METRIC_REGISTRY, metric_opt['type'], f'val.metrics.{name}.type')


def schema_report(opt: Dict[str, Any]) -> Report:
    """The option schema's problems and unchecked keys of ``opt`` (an unknown ``model_type`` first)."""
    from basicsr.utils.registry import MODEL_REGISTRY

    from dckd_basicsr.integration.schema_blocks import option_root, registered
    model_type = opt.get('model_type')
    unknown_model = isinstance(model_type, str) and registered(MODEL_REGISTRY, model_type) is None
    report = check(opt, option_root(opt), training=bool(opt.get('is_train', True)))
    if unknown_model:
        report.errors.insert(0, str(unknown_type(MODEL_REGISTRY, model_type, 'model_type')))
    return report


def check_option_keys(opt: Dict[str, Any]) -> None:
    """The schema's first problem in a ``network_*`` or ``train.*_opt`` block, as an OptionError: a key its type does
    not accept (``weigths``, or ``reduction`` in ``cl_opt``) names the key and the accepted ones. Keys a model reads
    from its loss blocks (FAKD's layer names) are accepted for that model only."""
    for problem in schema_report(opt).errors:
        parts = problem.split(':', 1)[0].split('.')
        if (parts[0].startswith('network_') and len(parts) > 1) or \
                (parts[0] == 'train' and len(parts) > 2 and parts[1].endswith('_opt')):
            raise OptionError(problem)


def check_spandrel_networks(opt: Dict[str, Any]) -> None:
    """The spandrel architectures the option file names: their types, options and scales
    (:func:`~dckd_basicsr.archs.spandrel_students_arch.check_network_options`), and the precisions ``train.fast``
    runs them in: the student under ``amp``; the teacher, and with ``cl_opt`` DCKD's history copy of the student,
    under the frozen networks' ``autocast`` (``amp``'s unless given)."""
    from dckd_basicsr.archs.spandrel_students_arch import check_network_options, check_precision
    check_network_options(opt)
    train_opt = opt.get('train') if isinstance(opt.get('train'), dict) else {}
    fast = train_opt.get('fast') if isinstance(train_opt.get('fast'), dict) else {}
    student, teacher = opt.get('network_g'), opt.get('network_t')
    frozen_key = 'autocast' if 'autocast' in fast else 'amp'
    if isinstance(student, dict):
        check_precision(student, fast.get('amp'), 'train.fast.amp', 'network_g')
        if train_opt.get('cl_opt'):
            check_precision(student, fast.get(frozen_key), f'train.fast.{frozen_key}', 'network_g')
    if isinstance(teacher, dict):
        check_precision(teacher, fast.get(frozen_key), f'train.fast.{frozen_key}', 'network_t')


def check_device_options(opt: Dict[str, Any]) -> None:
    """Refuse GPU-only settings on a machine without CUDA, with the fix in the message."""
    import torch
    if torch.cuda.is_available():
        return
    if isinstance(opt.get('num_gpu'), int) and opt['num_gpu'] > 0:
        raise OptionError(f"num_gpu: {opt['num_gpu']} but this machine has no CUDA GPU; "
                          'set num_gpu: 0 (CPU) or num_gpu: auto.')
    for phase, dataset_opt in (opt.get('datasets') or {}).items():
        if isinstance(dataset_opt, dict) and dataset_opt.get('prefetch_mode') == 'cuda':
            raise OptionError(f'datasets.{phase}.prefetch_mode: cuda needs a CUDA GPU; remove it or use cpu.')


def encoder_size_multiple(opt: Dict[str, Any]) -> int:
    """Side multiple the VQGAN encoder needs (``2 ** (len(ch_mult) - 1)``), or 1 when no encoder loss is on."""
    train_opt = opt.get('train') or {}
    vqgan = opt.get('network_vqgan')
    if not isinstance(vqgan, dict) or not (train_opt.get('cl_opt') or train_opt.get('ce_opt')):
        return 1
    from dckd_basicsr.archs.vqgan_arch import input_size_multiple
    return input_size_multiple(vqgan.get('ddconfig'))


def check_patch_sizes(opt: Dict[str, Any]) -> None:
    """Training patches: ``gt_size`` (and progressive ``gt_sizes``) divisible by ``scale``, so the LQ patch is
    ``gt_size / scale`` exactly, and by the VQGAN encoder's stride when an encoder loss is on (student outputs are
    ``gt_size`` wide and are not padded before the encoder)."""
    scale = opt.get('scale') or 1
    multiple = encoder_size_multiple(opt)
    for phase, dataset_opt in (opt.get('datasets') or {}).items():
        if not isinstance(dataset_opt, dict):
            continue
        sizes = [('gt_size', dataset_opt.get('gt_size'))]
        sizes += [('gt_sizes', size) for size in (dataset_opt.get('gt_sizes') or [])]
        for key, size in sizes:
            if not isinstance(size, int):
                continue
            if size % scale:
                raise OptionError(f'datasets.{phase}.{key}: {size} is not divisible by scale ({scale}); the LQ '
                                  f'patch would be {size // scale} pixels, not {size / scale:g}. Use a multiple of '
                                  f'{scale}.')
            if size % multiple:
                raise OptionError(f'datasets.{phase}.{key}: {size} is not a multiple of {multiple}, which the VQGAN '
                                  'encoder of cl_opt / ce_opt needs (2 ** (len(network_vqgan.ddconfig.ch_mult) - 1)); '
                                  f'use e.g. {size // multiple * multiple or multiple}.')


def check_save_format(opt: Dict[str, Any]) -> None:
    from dckd_basicsr.training.checkpoint_files import save_format
    save_format(opt)


def check_nonfinite_limit(opt: Dict[str, Any]) -> None:
    if isinstance(opt.get('train'), dict):
        from dckd_basicsr.training.nonfinite import nonfinite_limit
        nonfinite_limit(opt['train'])


# The checks of values, after the schema, in the order a user would fix them.
VALUE_CHECKS = (check_device_options, check_save_format, check_patch_sizes, check_nonfinite_limit)


def run_checks(opt: Dict[str, Any], checks: Iterable[Callable[[Dict[str, Any]], None]], report: Report) -> List[str]:
    """The messages of the ``checks`` that fail on ``opt``. A check that trips over a value the schema already
    refused (``report`` has errors) adds nothing; otherwise its exception is a bug and surfaces."""
    problems = []
    for value_check in checks:
        try:
            value_check(opt)
        except OptionError as error:
            problems.append(str(error))
        except (TypeError, ValueError, KeyError, AttributeError):
            if not report.errors:
                raise
    return problems


def problem_key(problem: str) -> str:
    return problem.split(':', 1)[0].split(' ', 1)[0]


def one_message(problems: List[str], files_only: bool, note: str = '') -> str:
    """One problem as it is; several under one heading, one per line (continuation lines indented)."""
    if len(problems) == 1:
        message = problems[0]
    else:
        heading = (f'{len(problems)} files or folders named by the option file are missing or unusable' if files_only
                   else f'{len(problems)} problems in the option file')
        lines = ['\n'.join(f'  {line}' if i == 0 else f'    {line}' for i, line in enumerate(problem.splitlines()))
                 for problem in problems]
        message = f'{heading} (nothing was built or written):\n' + '\n'.join(lines)
    return message + (f'\n{note}' if note else '')


def check_options(opt: Dict[str, Any], stand_ins: Iterable[str] = (), note: str = '') -> None:
    """All checks (see the module docstring); raises one OptionError listing every problem, and prints one warning
    naming the keys no schema could check. A check of values whose key the schema already refused is not repeated.

    ``stand_ins``: ``path`` keys a smoke run replaces (not checked); ``note``: a last line for the message
    (:func:`dckd_basicsr.integration.preflight.check_files`).
    """
    report = schema_report(opt)
    # a refused spandrel type's reason comes before the schema's "no arch named ..." for the same key
    problems = run_checks(opt, (check_spandrel_networks, ), report) + report.errors
    problems += run_checks(opt, VALUE_CHECKS, report)
    files = dataset_problems(opt) + checkpoint_problems(opt, stand_ins)
    problems += files + pairing_problems(opt)
    seen, unique = set(), []
    for problem in problems:
        if problem_key(problem) not in seen:
            seen.add(problem_key(problem))
            unique.append(problem)
    if report.unchecked and int(opt.get('rank') or 0) == 0:
        print(f'Warning: {report.warning()}', flush=True)
    if unique:
        raise OptionError(one_message(unique, files_only=len(unique) == len(files), note=note))


__all__ = ['check_options', 'check_option_types', 'check_option_keys', 'check_spandrel_networks', 'check_device_options',
           'check_patch_sizes', 'encoder_size_multiple', 'check_files', 'schema_report']
