"""Every patch dckd-basicsr applies to PyPI basicsr 1.4.2, one function each; :func:`apply_all` installs them all.

Each ``patch_<name>`` replaces the BasicSR function ``<name>`` (its docstring names it and the failure it fixes) with
one that lives with its concept:

* type lookups in the registries: :mod:`dckd_basicsr.integration.registry_lookup`;
* the pre-run option pipeline (``parse_options``): :mod:`dckd_basicsr.integration.run_options`;
* ``python -m basicsr.train`` / ``basicsr.test``: :mod:`dckd_basicsr.integration.entry_points`;
* distributed training on CPU, the collective timeout and the process group's teardown:
  :mod:`dckd_basicsr.integration.distributed`;
* optimizers: :mod:`dckd_basicsr.integration.optimizers`;
* the iteration validation is labelled with: :mod:`dckd_basicsr.integration.validation_iter`;
* checkpoint files, resume, the data position and progressive patches: :mod:`dckd_basicsr.training`;
* undecodable samples: :mod:`dckd_basicsr.data`.

``import dckd_basicsr`` calls :func:`apply_all` first. Those modules import basicsr, which cannot be imported before
:func:`alias_torchvision_functional_tensor` has run, so each patch function imports them itself.
"""
import importlib
import sys
import warnings


def alias_torchvision_functional_tensor() -> None:
    """Provide ``torchvision.transforms.functional_tensor``, which ``basicsr.data.degradations`` imports.

    Replaces no BasicSR function: ``basicsr/data/degradations.py`` imports ``rgb_to_grayscale`` from that module, which
    torchvision removed in 0.17, so ``import basicsr`` fails. ``torchvision.transforms.functional`` has the same
    function. DataLoader workers are spawned processes that import basicsr again, so this must run at import of the
    plugin (and of basicsr through the import hook), never only in ``__main__``.
    """
    if 'torchvision.transforms.functional_tensor' in sys.modules:
        return
    try:
        import torchvision.transforms.functional_tensor  # noqa: F401  (old torchvision: nothing to do)
    except ImportError:
        import torchvision.transforms.functional as functional
        sys.modules['torchvision.transforms.functional_tensor'] = functional


def patch_registry_get() -> None:
    """Replace ``basicsr.utils.registry.Registry.get``.

    BasicSR's version prints "Name X is not found, use name: X_basicsr!" on every miss (even when the ``_basicsr``
    name then exists) and then raises a bare ``KeyError`` that does not say what exists.
    :func:`dckd_basicsr.integration.registry_lookup.registry_get` raises
    :class:`~dckd_basicsr.errors.UnknownTypeError` (a ``KeyError`` and an ``OptionError``) listing the registered
    names, the plugin's first, with close matches for typos, wherever a name is built: option files read without
    ``parse_options`` (``dckd-convert``), ``build_network`` / ``build_loss`` / ``build_model`` in user code.
    """
    from basicsr.utils.registry import Registry
    from dckd_basicsr.integration.registry_lookup import registry_get

    Registry.get = registry_get


def patch_parse_options() -> None:
    """Replace ``basicsr.utils.options.parse_options`` (and its copies bound in ``basicsr.train`` / ``basicsr.test``).

    PyPI basicsr puts ``experiments/<name>`` and ``results/<name>`` under ``root_path``, which ``python -m
    basicsr.train`` derives from basicsr's own install location, so runs land inside site-packages; it also ignores
    ``path.experiments_root`` / ``path.results_root``, fails with a ``TypeError`` on ``--force_yml
    datasets:<phase>=~`` and checks nothing before the networks are built.
    :func:`dckd_basicsr.integration.run_options.parse_options` runs BasicSR's parser inside the plugin's pre-run
    pipeline: the entry point's command line, run folders under the working directory or those two options, smoke
    runs, missing test sets skipped, worker caps, and every option check before anything is built.
    """
    import basicsr.test
    import basicsr.train
    from basicsr.utils import options
    from dckd_basicsr.integration.run_options import parse_options

    options.parse_options = parse_options
    basicsr.train.parse_options = parse_options
    basicsr.test.parse_options = parse_options


def patch_load_resume_state() -> None:
    """Replace ``basicsr.train.load_resume_state`` (``train_pipeline`` looks it up as a module global).

    BasicSR's version calls ``torch.cuda.current_device()`` and maps every storage to CUDA, so resume fails on a
    machine without a GPU, and ``--auto_resume`` searches ``./experiments/<name>/training_states`` relative to the
    working directory instead of the run's own ``path.training_states``.
    :func:`dckd_basicsr.training.resume.load_resume_state` maps to the run's device, searches the run's folder for its
    latest complete state, loads with ``weights_only=True``, names a missing ``path.resume_state`` file and records
    the data position for :func:`patch_create_train_val_dataloader`.
    """
    import basicsr.train
    from dckd_basicsr.training.resume import load_resume_state

    basicsr.train.load_resume_state = load_resume_state


def patch_create_train_val_dataloader() -> None:
    """Wrap ``basicsr.train.create_train_val_dataloader`` (``train_pipeline`` looks it up as a module global).

    BasicSR 1.4.2 has two faults here. On resume it starts the saved epoch again from its first batch, so a
    checkpoint taken after ``b`` batches of epoch ``e`` makes the resumed run draw those ``b`` batches again (even
    when ``b`` is the whole epoch: the state records ``e``, not ``e + 1``);
    :func:`dckd_basicsr.training.data_position.continue_epoch` gives the loader a sampler that skips them once. And it
    counts ``ceil(N / batch)`` iterations per epoch while its loader drops each epoch's incomplete batch, so with few
    images a run ends before ``total_iter`` without a word; :func:`dckd_basicsr.training.data_position.number_of_epochs`
    counts with the loader's real length. It also lets a ``--smoke`` run write its inputs into its run folder, which
    exists by then (:func:`dckd_basicsr.integration.smoke.prepare_run`). And an undecodable sample ends the run with
    one error naming it, or is skipped up to ``datasets.<phase>.max_bad_samples`` (:mod:`dckd_basicsr.data`).
    """
    import basicsr.train
    from dckd_basicsr.data.bad_samples import CountedLoader, guarded
    from dckd_basicsr.integration.smoke import prepare_run
    from dckd_basicsr.training.data_position import continue_epoch, number_of_epochs

    original = basicsr.train.create_train_val_dataloader

    def create_train_val_dataloader(opt, logger):
        prepare_run(opt)  # a --smoke run's one-image validation lists and stand-ins, inside its own folder
        build_dataset = basicsr.train.build_dataset
        basicsr.train.build_dataset = guarded(build_dataset, opt)
        try:
            train_loader, sampler, val_loaders, total_epochs, total_iters = original(opt, logger)
        finally:
            basicsr.train.build_dataset = build_dataset
        train_loader, val_loaders = CountedLoader(train_loader), [CountedLoader(loader) for loader in val_loaders]
        total_epochs = number_of_epochs(train_loader, total_iters)
        sampler = continue_epoch(opt, train_loader, sampler)
        return train_loader, sampler, val_loaders, total_epochs, total_iters

    create_train_val_dataloader.__doc__ = original.__doc__
    basicsr.train.create_train_val_dataloader = create_train_val_dataloader


def patch_imfrombytes() -> None:
    """Replace ``basicsr.utils.imfrombytes`` (and the copies the dataset modules imported).

    BasicSR's version returns None for bytes that are not an image (a truncated PNG, a corrupt LMDB record), and the
    dataset fails with ``AttributeError: 'NoneType' object has no attribute 'astype'``, naming nothing.
    :func:`dckd_basicsr.data.decoding.imfrombytes` raises ``UndecodableImageError`` instead (the same arrays
    otherwise), which the training run reports naming the file or record (:mod:`dckd_basicsr.data.bad_samples`).
    """
    from basicsr.utils import img_util
    from dckd_basicsr.data.decoding import imfrombytes

    original = img_util.imfrombytes
    if hasattr(original, '__wrapped__'):
        return
    replacement = imfrombytes(original)
    for module in list(sys.modules.values()):
        if getattr(module, '__dict__', {}).get('imfrombytes') is original:
            module.imfrombytes = replacement


def patch_file_client_get() -> None:
    """Wrap ``basicsr.utils.file_client.FileClient.get`` to remember its last read.

    An undecodable image is only bytes to ``imfrombytes``; :func:`dckd_basicsr.data.decoding.remember_reads` keeps
    the path (or LMDB key) they came from, so the error names it.
    """
    from basicsr.utils.file_client import FileClient
    from dckd_basicsr.data.decoding import remember_reads

    if not hasattr(FileClient.get, '__wrapped__'):
        FileClient.get = remember_reads(FileClient.get)


def patch_validation() -> None:
    """Wrap ``basicsr.models.base_model.BaseModel.validation`` so a training run never validates past ``total_iter``.

    BasicSR's ``train_pipeline`` labels its final validation ``total_iter + 1`` or ``+ 2`` (a 3-iteration run logged
    ``Best: ... @ 5 iter``), and so the best-metric record and the TensorBoard point;
    :func:`dckd_basicsr.integration.validation_iter.validation_within_total_iter` passes
    ``min(current_iter, total_iter)`` during training.
    """
    from basicsr.models.base_model import BaseModel
    from dckd_basicsr.integration.validation_iter import validation_within_total_iter

    BaseModel.validation = validation_within_total_iter(BaseModel.validation)


def patch_check_resume() -> None:
    """Replace ``basicsr.utils.misc.check_resume`` (also bound in ``basicsr.utils`` and ``basicsr.train``).

    BasicSR's version rewrites every ``path.pretrain_network_*`` to ``models/net_*_<iter>.pth`` and every
    ``param_key_*: params_ema`` to ``params``. For a teacher or an encoder, which are never saved, that points resume
    at files that do not exist (and switches the teacher to the wrong weights).
    :func:`dckd_basicsr.training.resume.check_resume` rewrites a path only when the run saved that network at the
    resume iteration, never for the frozen networks or ``path.ignore_resume_networks``, and changes ``param_key_*``
    only for the rewritten networks.
    """
    import basicsr.train
    import basicsr.utils
    from basicsr.utils import misc
    from dckd_basicsr.training.resume import check_resume

    misc.check_resume = check_resume
    basicsr.utils.check_resume = check_resume
    basicsr.train.check_resume = check_resume


def patch_init_dist_pytorch() -> None:
    """Replace ``basicsr.utils.dist_util._init_dist_pytorch`` (``init_dist`` looks it up as a module global).

    BasicSR's version always calls ``torch.cuda.set_device`` (a ZeroDivisionError without a GPU) and
    ``parse_options`` always asks for nccl, which has no CPU support; it sets no collective timeout, so a rank that
    stops responding hangs the others for torch's default (30 minutes for gloo).
    :func:`dckd_basicsr.integration.distributed.init_dist_pytorch` uses nccl and the local rank's GPU when CUDA is
    available, and gloo with no device call otherwise, so ``torchrun ... --launcher pytorch`` runs on CPU; the group
    waits ``dist_params.timeout_s`` in a collective.
    """
    from basicsr.utils import dist_util
    from dckd_basicsr.integration.distributed import init_dist_pytorch

    dist_util._init_dist_pytorch = init_dist_pytorch


def patch_init_dist_slurm() -> None:
    """Wrap ``basicsr.utils.dist_util._init_dist_slurm`` (``init_dist`` looks it up as a module global).

    ``parse_options`` passes it every ``dist_params`` key under ``--launcher slurm``, and it accepts only ``port``
    (``dist_params.timeout_s``: a ``TypeError``); :func:`dckd_basicsr.integration.distributed.init_dist_slurm` gives
    the timeout to the group instead.
    """
    from basicsr.utils import dist_util
    from dckd_basicsr.integration.distributed import init_dist_slurm

    if not hasattr(dist_util._init_dist_slurm, '__wrapped__'):
        dist_util._init_dist_slurm = init_dist_slurm(dist_util._init_dist_slurm)


def patch_train_pipeline() -> None:
    """Wrap ``basicsr.train.train_pipeline``.

    BasicSR never destroys its process group (a rank can die at exit with ``terminate called without an active
    exception`` after training finished), and a collective timeout is a gloo ``RuntimeError`` naming no option.
    :func:`dckd_basicsr.integration.distributed.with_collective_errors_and_teardown` destroys the group when the
    pipeline ends and reports a timeout as one message naming ``dist_params.timeout_s``.
    """
    import basicsr.train
    from dckd_basicsr.integration.distributed import with_collective_errors_and_teardown

    if not hasattr(basicsr.train.train_pipeline, '__wrapped__'):
        basicsr.train.train_pipeline = with_collective_errors_and_teardown(basicsr.train.train_pipeline)


def patch_model_to_device() -> None:
    """Replace ``basicsr.models.base_model.BaseModel.model_to_device``.

    BasicSR's version wraps with ``DistributedDataParallel(device_ids=[torch.cuda.current_device()])``, which fails
    without CUDA. :func:`dckd_basicsr.integration.distributed.model_to_device` passes ``device_ids=None`` for CPU
    models (gloo DDP), and is otherwise the same.
    """
    from basicsr.models.base_model import BaseModel
    from dckd_basicsr.integration.distributed import model_to_device

    BaseModel.model_to_device = model_to_device


def patch_save_network() -> None:
    """Replace ``basicsr.models.base_model.BaseModel.save_network``.

    BasicSR's version writes ``models/net_*_<iter>.pth`` with ``torch.save`` straight under its final name; a kill
    (pre-emption, out-of-memory killer) during the write leaves a truncated file, from which a resume loads half a
    network.
    :func:`dckd_basicsr.training.checkpoint_files.save_network` writes the same file with the same content through
    :func:`dckd_basicsr.training.checkpoint_files.save_atomically` (temporary file, then rename; retried like BasicSR),
    on rank 0 only; with ``logger.save_format: safetensors`` the same tensors as ``models/net_*_<iter>.safetensors``.
    """
    from basicsr.models.base_model import BaseModel
    from dckd_basicsr.training.checkpoint_files import save_network

    BaseModel.save_network = save_network


def patch_load_network() -> None:
    """Wrap ``basicsr.models.base_model.BaseModel.load_network``.

    BasicSR's version reads only torch files, yet model hubs publish ``.safetensors`` and ``logger.save_format:
    safetensors`` writes them. :func:`dckd_basicsr.training.checkpoint_files.load_network` reads ``.safetensors``
    files for ``path.pretrain_network_*`` and resume, with BasicSR's ``param_key`` rules, and leaves every other file
    to BasicSR's version.
    """
    from basicsr.models.base_model import BaseModel
    from dckd_basicsr.training.checkpoint_files import load_network

    if not getattr(BaseModel.load_network, '_dckd_safetensors', False):
        BaseModel.load_network = load_network(BaseModel.load_network)
        BaseModel.load_network._dckd_safetensors = True


def patch_save_training_state() -> None:
    """Replace ``basicsr.models.base_model.BaseModel.save_training_state``.

    BasicSR's version writes ``training_states/<iter>.state`` with ``torch.save`` straight under its final name; a
    kill during the write leaves a truncated file, which ``--auto_resume`` then picks as the latest state and fails
    on.
    :func:`dckd_basicsr.training.checkpoint_files.save_training_state` writes the same file through
    :func:`dckd_basicsr.training.checkpoint_files.save_atomically`, on rank 0 only (the plugin's models add their
    random states and use the same writer: :mod:`dckd_basicsr.training.model_state`).
    """
    from basicsr.models.base_model import BaseModel
    from dckd_basicsr.training.checkpoint_files import save_training_state

    BaseModel.save_training_state = save_training_state


def patch_get_optimizer() -> None:
    """Replace ``basicsr.models.base_model.BaseModel.get_optimizer``.

    BasicSR 1.4.2 builds only ``Adam`` and raises ``NotImplementedError`` for anything else, yet NAFNet and Restormer
    train with AdamW. :func:`dckd_basicsr.integration.optimizers.get_optimizer` builds the optimizers BasicSR master
    accepts and names the option on a typo.
    """
    from basicsr.models.base_model import BaseModel
    from dckd_basicsr.integration.optimizers import get_optimizer

    BaseModel.get_optimizer = get_optimizer


def patch_build_model() -> None:
    """Wrap ``basicsr.models.build_model`` (also bound in ``basicsr.train``) for progressive patch training.

    BasicSR 1.4.2 silently ignores Restormer's ``datasets.train.mini_batch_sizes`` / ``gt_sizes`` / ``iters``. When a
    training run sets them, the wrapper builds the model, as BasicSR's ``build_model`` does, from its class with the
    :class:`~dckd_basicsr.training.progressive.ProgressivePatches` mixin
    (:func:`~dckd_basicsr.training.progressive.with_progressive_patches`); otherwise it is BasicSR's.
    """
    from copy import deepcopy

    import basicsr.models
    import basicsr.train
    from basicsr.utils import get_root_logger
    from basicsr.utils.registry import MODEL_REGISTRY
    from dckd_basicsr.training.progressive import asks_for_progressive_patches, with_progressive_patches

    original = basicsr.models.build_model

    def build_model(opt):
        if not asks_for_progressive_patches(opt):
            return original(opt)
        opt = deepcopy(opt)
        model = with_progressive_patches(MODEL_REGISTRY.get(opt['model_type']))(opt)
        get_root_logger().info(f'Model [{model.__class__.__name__}] is created.')
        return model

    build_model.__doc__ = original.__doc__
    basicsr.models.build_model = build_model
    basicsr.train.build_model = build_model


def patch_module_entry_points() -> None:
    """Replace the loader of ``basicsr.train`` / ``basicsr.test``, so ``python -m`` runs the patched pipelines.

    runpy executes ``basicsr/train.py`` as a fresh ``__main__`` module whose ``load_resume_state`` and
    ``create_train_val_dataloader`` are new copies of BasicSR's, untouched by the patches of ``basicsr.train``. runpy
    fetches that code from the loader of the already-imported ``basicsr.train``;
    :class:`dckd_basicsr.integration.entry_points.PipelineMainLoader` returns code that calls
    :func:`~dckd_basicsr.integration.entry_points.run_pipeline` (the imported module's pipeline, so the patched
    globals apply, rooted at the working directory, option errors reported without a traceback).
    """
    from dckd_basicsr.integration.entry_points import PipelineMainLoader

    if sys.argv[:1] == ['-m']:
        # While runpy locates a ``-m`` module (sys.argv[0] is then ``-m``), it has already imported the package
        # ``basicsr`` and, through this plugin, ``basicsr.train``; it warns that a fresh copy of the module will run
        # beside the imported one. The loader below runs the imported module's pipeline instead, so the warning is
        # silenced for these two modules only.
        warnings.filterwarnings('ignore', message=r"'basicsr\.(train|test)' found in sys\.modules after import of "
                                r"package 'basicsr'", category=RuntimeWarning)
    for module_name, pipeline in (('basicsr.train', 'train_pipeline'), ('basicsr.test', 'test_pipeline')):
        module = importlib.import_module(module_name)
        spec = module.__spec__
        if spec is not None and not isinstance(spec.loader, PipelineMainLoader):
            spec.loader = PipelineMainLoader(spec.loader, module_name, pipeline)


def apply_all() -> None:
    """Apply every patch, the torchvision alias first. Safe to call more than once."""
    alias_torchvision_functional_tensor()
    import basicsr.utils.registry
    if getattr(basicsr.utils.registry, '_dckd_patched', False):
        return
    patch_registry_get()
    patch_parse_options()
    patch_load_resume_state()
    patch_create_train_val_dataloader()
    patch_imfrombytes()
    patch_file_client_get()
    patch_validation()
    patch_check_resume()
    patch_init_dist_pytorch()
    patch_init_dist_slurm()
    patch_train_pipeline()
    patch_model_to_device()
    patch_get_optimizer()
    patch_save_network()
    patch_load_network()
    patch_save_training_state()
    patch_build_model()
    patch_module_entry_points()
    basicsr.utils.registry._dckd_patched = True

