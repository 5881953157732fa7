"""Every patch dckd-basicsr applies to PyPI basicsr 1.4.2, one function each; :func:`apply_all` installs them all.

Each ``patch_<name>`` replaces the BasicSR function ``<name>`` (its docstring names it and the failure it fixes).
The replacements that belong to a concept of their own live with it and are only installed here: resuming and
atomic checkpoint writes in :mod:`dckd_basicsr.training.resume`, the ``python -m basicsr.train`` / ``basicsr/train.py``
entry points in :mod:`dckd_basicsr.integration.entry_points`. ``import dckd_basicsr`` calls :func:`apply_all` first. BasicSR and
those two modules are imported inside the functions, because the torchvision alias must be in place before
``basicsr`` is imported at all.
"""
import os
import sys
from os import path as osp
from typing import Any, Dict, Optional

from dckd_basicsr.errors import OptionError, UnknownTypeError
from dckd_basicsr.integration.option_checks import check_options, registered_plugin_names


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
    name then exists) and then raises a bare ``KeyError`` that does not say what exists. Ours raises
    :class:`UnknownTypeError` (a ``KeyError`` and an :class:`OptionError`) listing the registered names, the plugin's
    first, with close matches for typos.

    Not redundant with :func:`dckd_basicsr.integration.option_checks.check_option_types`, which covers only option files that
    go through ``parse_options`` (the train and test entry points). Names reach ``Registry.get`` without it from
    ``dckd-convert --arch X`` and ``dckd-convert -opt X.yml --network KEY`` (an option file read directly), and from
    user code calling ``build_network`` / ``build_loss`` / ``build_model`` (or a model built in-process, as the
    tests do); there this patch gives the same message, which the entry points print without a traceback.
    """
    from basicsr.utils.registry import Registry

    def get(self, name, suffix='basicsr'):
        obj = self._obj_map.get(name)
        if obj is None:
            obj = self._obj_map.get(f'{name}_{suffix}')
        if obj is None:
            raise UnknownTypeError(self._name, name, self._obj_map.keys(), registered_plugin_names(self))
        return obj

    Registry.get = get


def _read_user_roots(args: Any) -> Dict[str, Optional[str]]:
    """``path.experiments_root`` / ``path.results_root`` as the user gave them, in the option file or with
    ``--force_yml path:experiments_root=...`` (BasicSR 1.4.2 overwrites both)."""
    import yaml
    from basicsr.utils.options import ordered_yaml
    with open(args.opt, mode='r') as f:
        user_opt = yaml.load(f, Loader=ordered_yaml()[0]) or {}
    user_path = user_opt.get('path') or {}
    roots = {key: user_path.get(key) for key in ('experiments_root', 'results_root')}
    for entry in args.force_yml or []:
        keys, _, value = entry.partition('=')
        if keys.strip() in ('path:experiments_root', 'path:results_root'):
            roots[keys.strip().split(':')[1]] = value.strip()
    return roots


def _set_run_folders(opt: Dict[str, Any], parent: str, is_train: bool) -> None:
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


def patch_parse_options() -> None:
    """Replace ``basicsr.utils.options.parse_options`` (and its copies bound in ``basicsr.train`` / ``basicsr.test``).

    PyPI basicsr puts ``experiments/<name>`` and ``results/<name>`` under ``root_path``, which ``python -m
    basicsr.train`` derives from basicsr's own install location, so runs land inside site-packages; it also ignores
    ``path.experiments_root`` / ``path.results_root``. Ours puts them under the current working directory, or under
    those two options when given (as parent folders, like BasicSR master), always as absolute paths. It also runs
    :func:`dckd_basicsr.integration.option_checks.check_options`, so mistakes fail before anything is built or any folder is
    created, with the option key in the message (every missing file at once: :mod:`dckd_basicsr.integration.preflight`), and,
    being the first call of ``train_pipeline``, points a BasicSR clone's ``python basicsr/train.py`` at the patched
    functions (:func:`dckd_basicsr.integration.entry_points.adopt_script_functions`).

    The command line is parsed by the entry point's own parser (:func:`dckd_basicsr.integration.entry_points.parse_command_line`:
    descriptions, ``--smoke`` / ``--stand-in``, no ``--auto_resume`` for tests), then BasicSR's parser reads its own
    flags. ``--force_yml datasets:<phase>=~`` drops that dataset (BasicSR's parser would fail with a ``TypeError``);
    test sets whose folders are missing are skipped with a message; ``num_worker_per_gpu`` is capped at the CPUs
    this process may use; ``--smoke`` shrinks the run (:mod:`dckd_basicsr.integration.smoke`).
    """
    import basicsr.test
    import basicsr.train
    from basicsr.utils import options
    from dckd_basicsr.integration import smoke
    from dckd_basicsr.integration.entry_points import (adopt_script_functions, basicsr_argv, drop_datasets, parse_command_line,
                                    split_force_yml)
    from dckd_basicsr.integration.option_checks import cap_workers
    from dckd_basicsr.integration.preflight import skip_missing_test_sets

    original = options.parse_options

    def parse_options(root_path, is_train=True):
        adopt_script_functions()
        args = parse_command_line(is_train)  # the entry point's own --help and flags (--smoke, --stand-in)
        if not osp.isfile(args.opt):
            raise OptionError(f'-opt {args.opt}: no such option file.')
        force_yml, dropped = split_force_yml(args)  # datasets:<phase>=~ would crash BasicSR's parser
        cwd = os.getcwd()
        with basicsr_argv(args, force_yml):
            opt, _ = original(cwd, is_train)
        drop_datasets(opt, dropped)
        if args.smoke:
            print('\n'.join(smoke.apply_smoke_options(opt)), flush=True)
        roots = _read_user_roots(args)
        key, default = ('experiments_root', 'experiments') if is_train else ('results_root', 'results')
        parent = roots[key] if roots[key] is not None else osp.join(cwd, default)
        _set_run_folders(opt, osp.abspath(osp.expanduser(parent)), is_train)
        if not is_train:
            skip_missing_test_sets(opt)
        cap_workers(opt)
        stand_ins = smoke.stand_in_keys(opt) if args.stand_in else []
        if args.smoke:
            opt['smoke'] = {'stand_ins': stand_ins}
        check_options(opt, stand_ins, smoke.preflight_note(args.stand_in) if args.smoke else '')
        if stand_ins:
            print(smoke.announce_stand_ins(opt, stand_ins), flush=True)
        return opt, args

    parse_options.__doc__ = original.__doc__
    options.parse_options = parse_options
    basicsr.train.parse_options = parse_options
    basicsr.test.parse_options = parse_options


def patch_load_resume_state() -> None:
    """Replace ``basicsr.train.load_resume_state`` (``train_pipeline`` looks it up as a module global).

    BasicSR's version calls ``torch.cuda.current_device()`` and maps every storage to CUDA, so resume fails on a
    machine without a GPU, and ``--auto_resume`` searches ``./experiments/<name>/training_states`` relative to the
    working directory instead of the run's own ``path.training_states``. :func:`dckd_basicsr.training.resume.load_resume_state`
    maps to the run's device, searches the run's folder for its latest complete state, loads with
    ``weights_only=True``, names a missing ``path.resume_state`` file and records the data position for
    :func:`patch_create_train_val_dataloader`.
    """
    import basicsr.train
    from dckd_basicsr.training.resume import load_resume_state

    basicsr.train.load_resume_state = load_resume_state


def patch_create_train_val_dataloader() -> None:
    """Wrap ``basicsr.train.create_train_val_dataloader`` (``train_pipeline`` looks it up as a module global).

    BasicSR 1.4.2 has two faults here. On resume it starts the saved epoch again from its first batch, so a
    checkpoint taken after ``b`` batches of epoch ``e`` makes the resumed run draw those ``b`` batches again (even
    when ``b`` is the whole epoch: the state records ``e``, not ``e + 1``); :func:`dckd_basicsr.training.resume.continue_epoch`
    makes the sampler skip them once. And it counts ``ceil(N / batch)`` iterations per epoch while its loader drops
    each epoch's incomplete batch, so with few images a run ends before ``total_iter`` without a word;
    :func:`dckd_basicsr.training.resume.number_of_epochs` counts with the loader's real length. It also lets a ``--smoke`` run
    write its inputs into its run folder, which exists by then (:func:`dckd_basicsr.integration.smoke.prepare_run`).
    """
    import basicsr.train
    from dckd_basicsr.training.resume import continue_epoch, number_of_epochs
    from dckd_basicsr.integration.smoke import prepare_run

    original = basicsr.train.create_train_val_dataloader

    def create_train_val_dataloader(opt, logger):
        prepare_run(opt)  # a --smoke run's one-image validation lists and stand-ins, inside its own folder
        train_loader, sampler, val_loaders, total_epochs, total_iters = original(opt, logger)
        total_epochs = number_of_epochs(train_loader, total_iters)
        continue_epoch(opt, train_loader, sampler)
        return train_loader, sampler, val_loaders, total_epochs, total_iters

    create_train_val_dataloader.__doc__ = original.__doc__
    basicsr.train.create_train_val_dataloader = create_train_val_dataloader


def patch_validation() -> None:
    """Wrap ``basicsr.models.base_model.BaseModel.validation`` so a training run never validates past ``total_iter``.

    BasicSR's ``train_pipeline`` iterates ``total_epochs + 1`` epochs, and each epoch after the last iteration still
    counts one more (``current_iter += 1`` before its ``> total_iters`` break), so its final validation is labelled
    ``total_iter + 1`` or ``+ 2`` (a 3-iteration run logged ``Best: ... @ 5 iter``) and the best-metric record and
    TensorBoard point carry that number. The wrapper passes ``min(current_iter, total_iter)`` during training.
    """
    from basicsr.models.base_model import BaseModel

    original = BaseModel.validation

    def validation(self, dataloader, current_iter, tb_logger, save_img=False):
        total = (self.opt.get('train') or {}).get('total_iter') if self.opt.get('is_train') else None
        if isinstance(current_iter, int) and total is not None:
            current_iter = min(current_iter, int(total))
        return original(self, dataloader, current_iter, tb_logger, save_img)

    validation.__doc__ = original.__doc__
    BaseModel.validation = validation


def patch_check_resume() -> None:
    """Replace ``basicsr.utils.misc.check_resume`` (also bound in ``basicsr.utils`` and ``basicsr.train``).

    BasicSR's version rewrites every ``path.pretrain_network_*`` to ``models/net_*_<iter>.pth`` and every
    ``param_key_*: params_ema`` to ``params``. For a teacher or an encoder, which are never saved, that points resume
    at files that do not exist (and switches the teacher to the wrong weights). :func:`dckd_basicsr.training.resume.check_resume`
    rewrites a path only when the run saved that network at the resume iteration, never for the frozen networks or
    ``path.ignore_resume_networks``, and changes ``param_key_*`` only for the rewritten networks.
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
    ``parse_options`` always asks for nccl, which has no CPU support. Ours uses nccl and the local rank's GPU when
    CUDA is available, and gloo with no device call otherwise, so ``torchrun ... --launcher pytorch`` runs on CPU.
    """
    import torch
    import torch.distributed as dist
    from basicsr.utils import dist_util

    def _init_dist_pytorch(backend, **kwargs):
        if torch.cuda.is_available():
            local_rank = int(os.environ.get('LOCAL_RANK', os.environ['RANK']))
            torch.cuda.set_device(local_rank % torch.cuda.device_count())
        else:
            backend = 'gloo'
        dist.init_process_group(backend=backend, **kwargs)

    dist_util._init_dist_pytorch = _init_dist_pytorch


def patch_model_to_device() -> None:
    """Replace ``basicsr.models.base_model.BaseModel.model_to_device``.

    BasicSR's version wraps with ``DistributedDataParallel(device_ids=[torch.cuda.current_device()])``, which fails
    without CUDA. Ours passes ``device_ids=None`` for CPU models (gloo DDP), and is otherwise the same.
    """
    import torch
    from basicsr.models.base_model import BaseModel
    from torch.nn.parallel import DataParallel, DistributedDataParallel

    def model_to_device(self, net):
        net = net.to(self.device)
        if self.opt['dist']:
            device_ids = [torch.cuda.current_device()] if self.device.type == 'cuda' else None
            net = DistributedDataParallel(
                net, device_ids=device_ids, find_unused_parameters=self.opt.get('find_unused_parameters', False))
        elif self.opt['num_gpu'] > 1:
            net = DataParallel(net)
        return net

    model_to_device.__doc__ = BaseModel.model_to_device.__doc__
    BaseModel.model_to_device = model_to_device


def patch_save_network() -> None:
    """Replace ``basicsr.models.base_model.BaseModel.save_network``.

    BasicSR's version writes ``models/net_*_<iter>.pth`` with ``torch.save`` straight under its final name; a kill
    (pre-emption, out-of-memory killer) during the write leaves a truncated file, from which a resume loads half a
    network.
    :func:`dckd_basicsr.training.resume.save_network` writes the same file with the same content through
    :func:`dckd_basicsr.training.resume.save_atomically` (temporary file, then rename; retried like BasicSR), on rank 0 only;
    with ``logger.save_format: safetensors`` the same tensors as ``models/net_*_<iter>.safetensors``.
    """
    from basicsr.models.base_model import BaseModel
    from dckd_basicsr.training.resume import save_network

    BaseModel.save_network = save_network


def patch_load_network() -> None:
    """Wrap ``basicsr.models.base_model.BaseModel.load_network``.

    BasicSR's version reads only torch files, yet model hubs publish ``.safetensors`` and ``logger.save_format:
    safetensors`` writes them. :func:`dckd_basicsr.training.resume.load_network` reads ``.safetensors`` files for
    ``path.pretrain_network_*`` and resume, with BasicSR's ``param_key`` rules, and leaves every other file to
    BasicSR's version.
    """
    from basicsr.models.base_model import BaseModel
    from dckd_basicsr.training.resume import load_network

    if not getattr(BaseModel.load_network, '_dckd_safetensors', False):
        BaseModel.load_network = load_network(BaseModel.load_network)
        BaseModel.load_network._dckd_safetensors = True


def patch_save_training_state() -> None:
    """Replace ``basicsr.models.base_model.BaseModel.save_training_state``.

    BasicSR's version writes ``training_states/<iter>.state`` with ``torch.save`` straight under its final name; a
    kill during the write leaves a truncated file, which ``--auto_resume`` then picks as the latest state and fails
    on.
    :func:`dckd_basicsr.training.resume.save_training_state` writes the same file through
    :func:`dckd_basicsr.training.resume.save_atomically`, on rank 0 only (the plugin's models add their random states and use
    the same writer).
    """
    from basicsr.models.base_model import BaseModel
    from dckd_basicsr.training.resume import save_training_state

    BaseModel.save_training_state = save_training_state


# The optimizers BasicSR master's get_optimizer accepts.
OPTIMIZERS = ('Adam', 'AdamW', 'Adamax', 'SGD', 'ASGD', 'RMSprop', 'Rprop')


def patch_get_optimizer() -> None:
    """Replace ``basicsr.models.base_model.BaseModel.get_optimizer``.

    BasicSR 1.4.2 builds only ``Adam`` and raises ``NotImplementedError`` for anything else, yet NAFNet and Restormer
    train with AdamW. Ours builds the optimizers BasicSR master accepts and names the option on a typo.
    """
    import torch
    from basicsr.models.base_model import BaseModel

    def get_optimizer(self, optim_type, params, lr, **kwargs):
        if optim_type not in OPTIMIZERS:
            raise OptionError(f"train.optim_g.type: {optim_type} is not supported; use one of {', '.join(OPTIMIZERS)}.")
        return getattr(torch.optim, optim_type)(params, lr, **kwargs)

    BaseModel.get_optimizer = get_optimizer


def patch_build_model() -> None:
    """Wrap ``basicsr.models.build_model`` (also bound in ``basicsr.train``) to attach progressive patch training.

    BasicSR 1.4.2 silently ignores Restormer's ``datasets.train.mini_batch_sizes`` / ``gt_sizes`` / ``iters``; the
    wrapper hands every built model to :func:`dckd_basicsr.training.progressive.attach_progressive_patches`, which does
    nothing unless those keys are set.
    """
    import basicsr.models
    import basicsr.train
    from dckd_basicsr.training.progressive import attach_progressive_patches

    original = basicsr.models.build_model

    def build_model(opt):
        model = original(opt)
        if opt.get('is_train'):
            attach_progressive_patches(model, opt)
        return model

    build_model.__doc__ = original.__doc__
    basicsr.models.build_model = build_model
    basicsr.train.build_model = build_model


def apply_all() -> None:
    """Apply every patch, the torchvision alias first. Safe to call more than once."""
    alias_torchvision_functional_tensor()
    import basicsr.utils.registry
    if getattr(basicsr.utils.registry, '_dckd_patched', False):
        return
    from dckd_basicsr.integration.entry_points import patch_module_entry_points
    patch_registry_get()
    patch_parse_options()
    patch_load_resume_state()
    patch_create_train_val_dataloader()
    patch_validation()
    patch_check_resume()
    patch_init_dist_pytorch()
    patch_model_to_device()
    patch_get_optimizer()
    patch_save_network()
    patch_load_network()
    patch_save_training_state()
    patch_build_model()
    patch_module_entry_points()
    basicsr.utils.registry._dckd_patched = True

