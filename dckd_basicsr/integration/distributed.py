"""Distributed training without CUDA: BasicSR 1.4.2's process-group set-up and DDP wrapping, made to run on CPU.

Installed by :func:`dckd_basicsr.integration.patches.patch_init_dist_pytorch` and
:func:`~dckd_basicsr.integration.patches.patch_model_to_device`; with them ``torchrun ... --launcher pytorch`` runs
on CPU with the gloo backend, and on GPUs as before.
"""
import os
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn import parallel


def init_dist_pytorch(backend: str, **kwargs: Any) -> None:
    """``basicsr.utils.dist_util._init_dist_pytorch``: nccl and the local rank's GPU when CUDA is available, gloo
    and no device call otherwise."""
    if torch.cuda.is_available():
        local_rank = int(os.environ.get('LOCAL_RANK', os.environ['RANK']))
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
    else:
        backend = 'gloo'
    dist.init_process_group(backend=backend, **kwargs)


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
