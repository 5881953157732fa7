"""Facts about a built network that the commands and tests read: its input channels and its parameter counts."""
from torch import nn

from dckd_basicsr.errors import OptionError


def input_channels(net: nn.Module) -> int:
    """Channels of the network's input: its ``input_channels`` where it states them (spandrel's archs), else those of
    its first convolution."""
    stated = getattr(net, 'input_channels', None)
    if isinstance(stated, int):
        return stated
    for module in net.modules():
        if isinstance(module, nn.Conv2d):
            return module.in_channels
    raise OptionError(f'{type(net).__name__} has no convolution to tell its input channels from.')


def count_parameters(net: nn.Module) -> int:
    """Parameters of ``net`` (buffers excluded), as Table 1 of the paper counts them."""
    return sum(p.numel() for p in net.parameters())


def deployed_parameters(net: nn.Module) -> int:
    """Parameters of ``net`` as deployed: what its ``deployed_parameters()`` says for a network that re-parameterises
    for inference (SPAN's fused convolutions), else :func:`count_parameters`."""
    counter = getattr(net, 'deployed_parameters', None)
    return int(counter()) if callable(counter) else count_parameters(net)


def switch_to_deploy(net: nn.Module) -> nn.Module:
    """``net`` switched to its deployed form where it has one (``net.switch_to_deploy()``: SPAN runs its fused
    convolutions alone), for inference, export and profiling; returns ``net``."""
    switch = getattr(net, 'switch_to_deploy', None)
    if callable(switch):
        switch()
    return net
