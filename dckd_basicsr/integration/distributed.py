"""Distributed training: BasicSR 1.4.2's process-group set-up and DDP wrapping made to run on CPU, a collective timeout
the user sets, and a process group that is torn down when the pipeline ends.

Installed by :func:`dckd_basicsr.integration.patches.patch_init_dist_pytorch`,
:func:`~dckd_basicsr.integration.patches.patch_init_dist_slurm`,
:func:`~dckd_basicsr.integration.patches.patch_model_to_device` and
:func:`~dckd_basicsr.integration.patches.patch_train_pipeline`; with them ``torchrun ... --launcher pytorch`` runs on
CPU with the gloo backend, and on GPUs as before. A group that torchrun restarted on one node gets store keys of its
own (:func:`attempt_store`).

``dist_params.timeout_s`` (default :data:`DEFAULT_TIMEOUT_S`) is how long a collective waits for every rank. The
other ranks wait in a collective while rank 0 validates and writes a checkpoint, so it must be longer than the
longest validation plus checkpoint write. A rank that stops responding (a hung file system, a stopped process) makes
the others fail after that time with :class:`~dckd_basicsr.errors.CollectiveTimeoutError` naming the option, instead
of hanging for torch's default (30 minutes for gloo); under ``torchrun --max-restarts N`` the group then restarts and
resumes (:mod:`dckd_basicsr.integration.run_options`).
"""
import atexit
import contextlib
import datetime
import os
import re
from typing import Any, Callable, Iterator, List

import torch
import torch.distributed as dist
from torch import nn
from torch.nn import parallel

from dckd_basicsr.errors import CollectiveTimeoutError, OptionError

DEFAULT_TIMEOUT_S = 600

# The timeout the next process group is created with (process_group_timeout), and the one the current group has.
_requested_timeout_s = DEFAULT_TIMEOUT_S
_group_timeout_s = None


def checked_timeout(value: Any) -> int:
    """``dist_params.timeout_s`` checked: a whole number of seconds > 0."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise OptionError(f'dist_params.timeout_s: {value!r}; use a whole number of seconds > 0 (default '
                          f'{DEFAULT_TIMEOUT_S}), longer than rank 0 takes to validate and write a checkpoint.')
    return value


@contextlib.contextmanager
def process_group_timeout(seconds: int) -> Iterator[None]:
    """Inside the block, a process group that BasicSR's ``init_dist`` creates waits ``seconds`` in a collective."""
    global _requested_timeout_s
    previous, _requested_timeout_s = _requested_timeout_s, seconds
    try:
        yield
    finally:
        _requested_timeout_s = previous


def init_process_group(backend: str, **kwargs: Any) -> None:
    """``dist.init_process_group`` with the requested collective timeout (:func:`process_group_timeout`), in
    :func:`attempt_store` under torchrun on one node."""
    global _group_timeout_s
    kwargs.setdefault('timeout', datetime.timedelta(seconds=_requested_timeout_s))
    store = attempt_store(kwargs['timeout'])
    if store is not None:
        kwargs.update(store=store, rank=int(os.environ['RANK']), world_size=int(os.environ['WORLD_SIZE']))
    dist.init_process_group(backend=backend, **kwargs)
    _group_timeout_s = int(kwargs['timeout'].total_seconds())
    atexit.register(tear_down, True)  # pipelines other than train_pipeline's wrapper (a BasicSR clone's own script)
    if os.environ.get('TORCHELASTIC_USE_AGENT_STORE') == 'True' and int(os.environ.get('GROUP_WORLD_SIZE', '1')) > 1 \
            and int(os.environ.get('TORCHELASTIC_MAX_RESTARTS', '0')) > 0 and dist.get_rank() == 0:
        print('torchrun --max-restarts on several nodes: export TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 before torchrun '
              'on every node. With the rendezvous store shared (torch\'s default), a restarted group can read the '
              'previous group\'s addresses and fail to connect (pytorch/pytorch#135712).', flush=True)


def attempt_store(timeout: datetime.timedelta) -> Any:
    """The store of torchrun's single agent with this attempt's own key prefix (``TORCHELASTIC_RESTART_COUNT``), or
    None (``env://`` as usual).

    The agent keeps its store across restarts, so a restarted group would find the keys of the group before it,
    among them its ranks' old addresses; a rank that reads one fails with ``Gloo connectFullMesh failed ... Connection
    refused`` (or waits forever). One agent gives all its workers the same restart count, so the prefix is the
    group's own. Several agents do not (a node whose workers did not fail restarts them with its count unchanged):
    there the store must not be shared (``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1``, a fresh store per rendezvous round).
    """
    if os.environ.get('TORCHELASTIC_USE_AGENT_STORE') != 'True' or os.environ.get('GROUP_WORLD_SIZE', '1') != '1':
        return None
    store = dist.TCPStore(os.environ['MASTER_ADDR'], int(os.environ['MASTER_PORT']), int(os.environ['WORLD_SIZE']),
                          is_master=False, timeout=timeout)
    return dist.PrefixStore(f"dckd_attempt_{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)


def init_dist_pytorch(backend: str, **kwargs: Any) -> None:
    """``basicsr.utils.dist_util._init_dist_pytorch``: nccl and the local rank's GPU when CUDA is available, gloo
    and no device call otherwise; the collective timeout of :func:`process_group_timeout`."""
    if torch.cuda.is_available():
        local_rank = int(os.environ.get('LOCAL_RANK', os.environ['RANK']))
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
    else:
        backend = 'gloo'
    init_process_group(backend, **kwargs)


def init_dist_slurm(original: Callable) -> Callable:
    """``basicsr.utils.dist_util._init_dist_slurm``, which BasicSR calls with every ``dist_params`` key but which
    accepts only ``port``: ``timeout_s`` is taken out and the group gets that timeout once created."""

    def init(backend: str, port: Any = None, timeout_s: int = DEFAULT_TIMEOUT_S) -> None:
        global _group_timeout_s
        original(backend, port=port)
        dist.set_timeout(datetime.timedelta(seconds=checked_timeout(timeout_s)))
        _group_timeout_s = timeout_s

    init.__doc__ = original.__doc__
    init.__wrapped__ = original
    return init


def model_to_device(self: Any, net: nn.Module) -> nn.Module:
    """``BaseModel.model_to_device``: the network on the model's device, wrapped in ``DistributedDataParallel``
    (``device_ids=None`` for a CPU model) under ``opt['dist']``, in ``DataParallel`` for several GPUs."""
    net = net.to(self.device)
    if self.opt['dist']:
        device_ids = [torch.cuda.current_device()] if self.device.type == 'cuda' else None
        net = parallel.DistributedDataParallel(
            net, device_ids=device_ids, find_unused_parameters=self.opt.get('find_unused_parameters', False))
    elif self.opt['num_gpu'] > 1:
        net = parallel.DataParallel(net)
    return net


# How a collective that gave up waiting reads: gloo's "Timed out waiting 600000ms for recv operation to complete";
# nccl's only with TORCH_NCCL_BLOCKING_WAIT=1 (otherwise its watchdog ends the process with its own message).
COLLECTIVE_TIMEOUT = re.compile(r'Timed out waiting|collective operation timeout|timed out in call to wait')


def gathered(value: Any) -> List[Any]:
    """``value`` of every rank, in rank order (``[value]`` without a process group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [value]
    values = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values


def is_collective_timeout(error: BaseException) -> bool:
    """Whether ``error`` is a collective that gave up waiting (:data:`COLLECTIVE_TIMEOUT`)."""
    return isinstance(error, RuntimeError) and COLLECTIVE_TIMEOUT.search(str(error)) is not None


def collective_timeout_message(error: BaseException) -> str:
    rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    return (f'rank {rank}: a collective waited dist_params.timeout_s ({_group_timeout_s} s) for another rank and gave '
            f'up ({str(error).splitlines()[0]}). Another rank stopped responding or is still busy: when rank 0\'s '
            'validation plus checkpoint write takes longer than that, raise dist_params.timeout_s; otherwise look at '
            'the other ranks\' logs. Under torchrun --max-restarts the group restarts from the last complete '
            'checkpoint.')


def tear_down(failed: bool = False) -> None:
    """Destroy the default process group, if any, so that its background threads end while the interpreter is still
    whole: left to the exit, a gloo rank can die with ``terminate called without an active exception`` (SIGABRT)
    after training finished (pytorch/pytorch#190489). After a failure only a gloo group is destroyed: destroying an
    nccl group while other ranks still wait in a collective can hang, and the process ends anyway."""
    global _group_timeout_s
    if dist.is_available() and dist.is_initialized() and (not failed or dist.get_backend() == 'gloo'):
        dist.destroy_process_group()
    _group_timeout_s = None


def with_collective_errors_and_teardown(pipeline: Callable[[str], Any]) -> Callable[[str], Any]:
    """``pipeline`` (BasicSR's ``train_pipeline``) that reports a collective timeout as
    :class:`~dckd_basicsr.errors.CollectiveTimeoutError` and destroys the process group when it ends
    (:func:`tear_down`)."""

    def run(root_path: str) -> Any:
        try:
            result = pipeline(root_path)
        except RuntimeError as error:
            timed_out = _group_timeout_s is not None and is_collective_timeout(error)
            message = collective_timeout_message(error) if timed_out else ''
            tear_down(failed=True)
            if timed_out:
                raise CollectiveTimeoutError(message) from error
            raise
        except BaseException:
            tear_down(failed=True)
            raise
        tear_down()
        return result

    run.__doc__ = pipeline.__doc__
    run.__wrapped__ = pipeline
    return run
