"""Preflight: every file and folder an option file names, checked before any network is built or folder created.

:func:`check_files` runs inside the patched ``parse_options`` (:mod:`dckd_basicsr.integration.run_options`), so
every entry point (``dckd-train``, ``python -m basicsr.train``, ``python -m dckd_basicsr.train``, a BasicSR clone's
``basicsr/train.py``, the test ones) gets it, on every rank under DDP. It collects *all* problems and raises one
:class:`~dckd_basicsr.errors.OptionError`, each line naming the option, the path, and where that file normally comes
from: the ``datasets_prep`` command that builds a dataset layout, the release a teacher checkpoint is published in,
taming-transformers' f16-1024 VQGAN, or the training run that writes a student checkpoint.

What is checked:

* ``datasets.<phase>``: ``dataroot_gt`` / ``dataroot_lq`` (an LMDB must hold ``meta_info.txt``) and
  ``meta_info_file`` of every phase;
* ``path.pretrain_network_*`` (teacher, VQGAN, student, history model, any other) and ``path.resume_state``; a
  checkpoint that is visibly damaged (empty, ending early, a saved web page) is named with what is wrong
  (:func:`dckd_basicsr.checkpoints.safe_load.damaged_file`);
* GT/LQ pairing of BasicSR's paired datasets (:func:`pairing_problems`): one LQ image per GT image, each found under
  ``filename_tmpl`` as BasicSR looks for it (with the fix when the LQ names carry a suffix such as ``x4`` and
  ``filename_tmpl`` does not say it), and, on a few sampled pairs, GT sizes that are ``scale`` times the LQ sizes.

On a resume (``path.resume_state``, or ``--auto_resume`` with a saved state in the run's ``training_states``) the
networks the run saves itself are re-read from the run's ``models`` folder (BasicSR's ``check_resume``, as
patched), so their ``pretrain_network_*`` paths are not checked. ``stand_ins`` names networks whose missing files a
smoke run replaces (:mod:`dckd_basicsr.integration.smoke`).
"""
import os
import re
from os import path as osp
from typing import Any, Dict, Iterable, List, Optional, Tuple

from dckd_basicsr.errors import OptionError

# Where each dataset layout of the shipped option files comes from (first match on the path wins).
DATA_SOURCES = (
    (r'/demo/|^datasets/demo', 'python datasets_prep/make_demo_data.py (scikit-image photos, no download)'),
    (r'DIV2K|DF2K|Flickr2K', 'python datasets_prep/prepare_div2k.py --hr DIV2K_train_HR --scales 2 3 4 '
                             '(DIV2K from https://data.vision.ee.ethz.ch/cvl/DIV2K/)'),
    (r'Benchmark_SR|Set5|Set14|B100|Urban100|Manga109',
     'python datasets_prep/prepare_benchmarks.py --src benchmark (Set5, Set14, B100, Urban100, Manga109)'),
    (r'GoPro', 'python datasets_prep/prepare_gopro.py --src GOPRO_Large --crops (the GoPro dataset, GOPRO_Large)'),
    (r'Rain13K|Derain|Rain100|Test100|Test1200|Test2800',
     'python datasets_prep/prepare_derain.py --train Datasets/train/Rain13K --test Datasets/test (Restormer\'s '
     'deraining data)'),
)

# Where the checkpoints the shipped option files name are published (matched on the file name).
CHECKPOINT_SOURCES = (
    (r'SwinIR', 'the official SwinIR release (github.com/JingyunLiang/SwinIR/releases: '
                '001_classicalSR_DIV2K_s48w8_SwinIR-M_x{2,3,4}.pth)'),
    (r'RCAN_BIX\d', 'the official RCAN models (github.com/yulunzhang/RCAN: RCAN_BIX2.pt, RCAN_BIX3.pt, RCAN_BIX4.pt)'),
    (r'NAFNet', 'the official NAFNet release (github.com/megvii-research/NAFNet: NAFNet-GoPro-width32.pth)'),
    (r'motion_deblurring|deraining', 'the official Restormer release (github.com/swz30/Restormer: '
                                     'Motion_Deblurring/pretrained_models/motion_deblurring.pth, '
                                     'Deraining/pretrained_models/deraining.pth)'),
    (r'vqgan|taming|last\.ckpt', "taming-transformers' ImageNet VQGAN f16 with 1024 codes "
                                 '(github.com/CompVis/taming-transformers: vqgan_imagenet_f16_1024, '
                                 'checkpoints/last.ckpt)'),
)
VQGAN_SOURCE = CHECKPOINT_SOURCES[-1][1]
RUN_CHECKPOINT_RE = re.compile(r'(?:^|/)experiments/([^/]+)/(?:models|training_states)/')


def _repo_option_file(run: str) -> str:
    """``options/train/<Backbone>/train_<run>.yml`` of this source tree when it exists, else ''."""
    root = osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'options', 'train')
    if osp.isdir(root):
        for folder in sorted(os.listdir(root)):
            candidate = osp.join(root, folder, f'train_{run}.yml')
            if osp.isfile(candidate):
                return osp.relpath(candidate, osp.dirname(osp.dirname(root)))
    return ''


def data_source(path: str) -> str:
    """Where a dataset folder normally comes from."""
    unix = path.replace(os.sep, '/')
    for pattern, source in DATA_SOURCES:
        if re.search(pattern, unix):
            return f'build it with {source}'
    return 'point the option at your own data (e.g. --force_yml datasets:<phase>:<key>=PATH)'


def checkpoint_source(key: str, path: str) -> str:
    """Where the checkpoint of option ``path.<key>`` normally comes from."""
    unix = path.replace(os.sep, '/')
    run = RUN_CHECKPOINT_RE.search(unix)
    if run:
        option_file = _repo_option_file(run.group(1))
        how = f'dckd-train -opt {option_file}' if option_file else f'a training run named {run.group(1)}'
        return f'written by {how}' + (' (or use --auto_resume)' if key == 'resume_state' else '')
    if key == 'pretrain_network_vqgan':
        return f'download {VQGAN_SOURCE}'
    for pattern, source in CHECKPOINT_SOURCES:
        if re.search(pattern, osp.basename(unix), re.IGNORECASE):
            return f'download {source}'
    if key == 'resume_state':
        return 'a training state written by a run (experiments/<name>/training_states/<iter>.state)'
    if key == 'pretrain_network_t':
        return ('give the teacher checkpoint (the shipped option files use the official SwinIR, RCAN, NAFNet and '
                'Restormer releases)')
    return 'give the checkpoint file, or remove the option to start from random weights'


def dataset_problems(opt: Dict[str, Any]) -> List[str]:
    """Missing ``dataroot_*`` folders, LMDBs without ``meta_info.txt`` and missing ``meta_info_file`` of every phase."""
    problems = []
    for phase, dataset_opt in (opt.get('datasets') or {}).items():
        if not isinstance(dataset_opt, dict):
            continue
        backend = (dataset_opt.get('io_backend') or {}).get('type', 'disk')
        for key in ('dataroot_gt', 'dataroot_lq', 'meta_info_file'):
            root = dataset_opt.get(key)
            if not isinstance(root, str):
                continue
            if not osp.exists(root):
                problems.append(f'datasets.{phase}.{key}: {root} does not exist (relative paths are relative to the '
                                f'working directory); {data_source(root)}.')
            elif key != 'meta_info_file' and backend == 'lmdb' and not osp.isfile(osp.join(root, 'meta_info.txt')):
                problems.append(f'datasets.{phase}.{key}: {root} has no meta_info.txt, so it is not a BasicSR LMDB '
                                '(build it with datasets_prep/, or use io_backend: disk for an image folder).')
    return problems


def skip_missing_test_sets(opt: Dict[str, Any]) -> List[str]:
    """Test runs: leave out the sets whose ``dataroot_*`` folders do not exist, one line each on the console, so a
    test option file runs on the benchmark sets that are there. When none is there, nothing is left out and
    :func:`check_files` reports them all. Returns the phases left out."""
    datasets = opt.get('datasets') or {}
    missing = {phase: next(((key, dataset_opt[key]) for key in ('dataroot_gt', 'dataroot_lq')
                            if isinstance(dataset_opt.get(key), str) and not osp.exists(dataset_opt[key])), None)
               for phase, dataset_opt in datasets.items() if isinstance(dataset_opt, dict)}
    missing = {phase: key_and_root for phase, key_and_root in missing.items() if key_and_root}
    if not missing or len(missing) == len(datasets):
        return []
    for phase, (key, root) in missing.items():
        name = datasets[phase].get('name', phase)
        print(f'Skipped datasets.{phase} ({name}): {key} {root} does not exist; {data_source(root)}.', flush=True)
        del datasets[phase]
    print(f"Testing on {', '.join(d.get('name', p) for p, d in datasets.items())}.", flush=True)
    return list(missing)


def resuming(opt: Dict[str, Any]) -> bool:
    """Whether this run will resume: ``path.resume_state`` set, or ``--auto_resume`` with a saved state."""
    from dckd_basicsr.training.resume import latest_training_state
    path_opt = opt.get('path') or {}
    if opt.get('auto_resume'):
        return bool(path_opt.get('training_states')) and latest_training_state(path_opt['training_states']) is not None
    return bool(path_opt.get('resume_state'))


def checkpoint_problems(opt: Dict[str, Any], stand_ins: Iterable[str] = ()) -> List[str]:
    """Missing ``path.pretrain_network_*`` files, a teacher or (with ``cl_opt`` / ``ce_opt``) VQGAN checkpoint not
    given at all, and a missing ``path.resume_state``."""
    from dckd_basicsr.training.resume import networks_saved_by_run
    path_opt = opt.get('path') or {}
    saved_by_run = set()
    if resuming(opt):  # check_resume re-reads the networks the run saves from its own models folder
        saved_by_run = {f'pretrain_{key}' for key in networks_saved_by_run(opt)}
    problems = []
    train_opt = opt.get('train') or {}
    required = {'pretrain_network_t': isinstance(opt.get('network_t'), dict),
                'pretrain_network_vqgan': isinstance(opt.get('network_vqgan'), dict) and
                bool(train_opt.get('cl_opt') or train_opt.get('ce_opt'))}
    for key, needed in required.items():
        if needed and opt.get('is_train', True) and not path_opt.get(key) and key not in stand_ins:
            problems.append(f'path.{key}: not set, but network_{key[len("pretrain_network_"):]} needs its checkpoint '
                            f'(never random weights); {checkpoint_source(key, "")}.')
    for key, value in path_opt.items():
        if not isinstance(value, str) or not value or key in saved_by_run or key in stand_ins:
            continue
        if key.startswith('pretrain_network_') or (key == 'resume_state' and not opt.get('auto_resume')):
            if not osp.isfile(value):
                reason = 'no such file' if not osp.isdir(value) else 'a folder, not a checkpoint file'
                problems.append(f'path.{key}: {value}: {reason}; {checkpoint_source(key, value)}.')
            elif key != 'resume_state':
                from dckd_basicsr.checkpoints.safe_load import damaged_file
                damage = damaged_file(value)
                if damage:
                    problems.append(f'path.{key}: {value}: {damage}')
    return problems


def check_files(opt: Dict[str, Any], stand_ins: Iterable[str] = (), note: str = '') -> None:
    """Raise one :class:`OptionError` listing every missing file and folder of ``opt`` (nothing when all exist).

    ``stand_ins``: ``path`` keys not to check (a smoke run's stand-ins); ``note``: a last line for the message.
    """
    problems = dataset_problems(opt) + checkpoint_problems(opt, stand_ins)
    if not problems:
        return
    if len(problems) == 1:
        message = problems[0]
    else:
        message = (f'{len(problems)} files or folders named by the option file are missing or unusable (nothing was '
                   'built or written):\n' + '\n'.join(f'  {problem}' for problem in problems))
    raise OptionError(message + (f'\n{note}' if note else ''))


# Paired dataset types whose GT/LQ pairing is checked (BasicSR's paired_paths_from_folder / _meta_info_file rule).
PAIRED_TYPES = ('PairedImageDataset', 'RealESRGANPairedDataset')
# Pairs whose image sizes are read (decoding every image of a set would take long).
SIZE_SAMPLES = 3


def _image_count(root: str, backend: str) -> int:
    """Images BasicSR's paired dataset would list in ``root``: the files of a folder (not recursive, as
    ``paired_paths_from_folder``), or the keys in an LMDB's ``meta_info.txt``."""
    if backend == 'lmdb':
        with open(osp.join(root, 'meta_info.txt')) as f:
            return sum(1 for line in f if line.strip())
    return sum(1 for entry in os.scandir(root) if entry.is_file())


def _lq_suffix(stems: List[Tuple[str, str]], lq_names: List[str]) -> Optional[str]:
    """The suffix every sampled GT stem's LQ file carries (``x4`` for ``woman.png`` -> ``womanx4.png``), or None."""
    suffixes = set()
    for stem, ext in stems:
        matches = [name[len(stem):-len(ext) or None] for name in lq_names
                   if name.startswith(stem) and name.endswith(ext) and len(name) > len(stem) + len(ext)]
        if len(matches) != 1:
            return None
        suffixes.add(matches[0])
    return suffixes.pop() if len(suffixes) == 1 else None


def _image_size(path: str) -> Optional[Tuple[int, int]]:
    import cv2
    img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    return None if img is None else img.shape[:2]


def pairing_problems(opt: Dict[str, Any]) -> List[str]:
    """GT/LQ pairing of every paired dataset on folders, as BasicSR would pair them, before anything is built:

    * one LQ image per GT image (folders and LMDBs);
    * every GT image's LQ file, ``filename_tmpl.format(<GT name>) + <GT extension>``, exists; when the LQ files carry
      one suffix (``x4``), the message gives ``filename_tmpl: '{}x4'``;
    * on :data:`SIZE_SAMPLES` pairs, the GT is ``scale`` times the LQ (BasicSR crops the GT to ``scale`` times the
      LQ, so a GT up to ``scale - 1`` pixels larger is fine).
    """
    problems = []
    scale = opt.get('scale') if isinstance(opt.get('scale'), int) else 1
    for phase, dataset_opt in (opt.get('datasets') or {}).items():
        if not isinstance(dataset_opt, dict) or dataset_opt.get('type') not in PAIRED_TYPES:
            continue
        gt, lq = dataset_opt.get('dataroot_gt'), dataset_opt.get('dataroot_lq')
        if not (isinstance(gt, str) and isinstance(lq, str) and osp.isdir(gt) and osp.isdir(lq)):
            continue
        backend = (dataset_opt.get('io_backend') or {}).get('type', 'disk')
        if backend == 'lmdb' and not (osp.isfile(osp.join(gt, 'meta_info.txt')) and
                                      osp.isfile(osp.join(lq, 'meta_info.txt'))):
            continue
        if not dataset_opt.get('meta_info_file'):
            gt_count, lq_count = _image_count(gt, backend), _image_count(lq, backend)
            if gt_count != lq_count:
                problems.append(f'datasets.{phase}.dataroot_lq: {lq} has {lq_count} images but datasets.{phase}.'
                                f'dataroot_gt ({gt}) has {gt_count}; PairedImageDataset needs one LQ image per GT '
                                'image.')
                continue
        if backend != 'disk':
            continue
        problem = _names_and_sizes(phase, dataset_opt, gt, lq, scale)
        if problem:
            problems.append(problem)
    return problems


def _names_and_sizes(phase: str, dataset_opt: Dict[str, Any], gt: str, lq: str, scale: int) -> str:
    """The pairing problem of one paired dataset on folders (see :func:`pairing_problems`), or ''."""
    template = dataset_opt.get('filename_tmpl') or '{}'
    meta = dataset_opt.get('meta_info_file')
    if isinstance(meta, str) and osp.isfile(meta):
        with open(meta) as f:
            gt_names = [line.strip().split(' ')[0] for line in f if line.strip()]
    else:
        gt_names = sorted(entry.name for entry in os.scandir(gt) if entry.is_file())
    lq_names = sorted(entry.name for entry in os.scandir(lq) if entry.is_file())
    lq_set = set(lq_names)
    pairs, missing = [], []
    for name in gt_names:
        stem, ext = osp.splitext(osp.basename(name))
        lq_name = f'{template.format(stem)}{ext}'
        (pairs if lq_name in lq_set else missing).append((name, lq_name))
    if missing:
        first, expected = missing[0]
        stems = [osp.splitext(osp.basename(name)) for name, _ in missing[:5]]
        suffix = _lq_suffix(stems, lq_names)
        fix = (f"the LQ names end in {suffix!r} ({stems[0][0]}{suffix}{stems[0][1]}): set datasets.{phase}."
               f"filename_tmpl: '{{}}{suffix}'" if suffix is not None else
               f'name the LQ images as their GT images, or set datasets.{phase}.filename_tmpl (the LQ name of '
               "a GT image <name>.png is filename_tmpl.format(<name>) + '.png', e.g. '{}x4')")
        return (f'datasets.{phase}.filename_tmpl: {len(missing)} of {len(gt_names)} GT images have no LQ image in '
                f'{lq} under filename_tmpl {template!r} ({first} -> {expected} is missing); {fix}.')
    for gt_name, lq_name in pairs[:SIZE_SAMPLES]:
        gt_size, lq_size = _image_size(osp.join(gt, gt_name)), _image_size(osp.join(lq, lq_name))
        if gt_size is None or lq_size is None:
            continue  # an unreadable image is the data loader's to report (max_bad_samples)
        if any(g // scale != q for g, q in zip(gt_size, lq_size)):
            ratio = gt_size[0] / lq_size[0]
            return (f'datasets.{phase}: {gt_name} is {gt_size[1]}x{gt_size[0]} but its LQ {lq_name} is '
                    f'{lq_size[1]}x{lq_size[0]}, a x{ratio:.3g} pair, while scale is {scale}; set scale to the '
                    f'data\'s factor or point datasets.{phase}.dataroot_lq at the x{scale} images.')
    return ''
