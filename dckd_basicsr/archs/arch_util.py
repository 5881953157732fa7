"""Facts about a built network that the commands and tests read: its input channels and its parameter count."""
from torch import nn

from dckd_basicsr.errors import OptionError


def input_channels(net: nn.Module) -> int:
    """Channels of the network's input: those of its first convolution."""
    for module in net.modules():
        if isinstance(module, nn.Conv2d):
            return module.in_channels
    raise OptionError(f'{type(net).__name__} has no convolution to tell its input channels from.')


def count_parameters(net: nn.Module) -> int:
    """Parameters of ``net`` (buffers excluded), as Table 1 of the paper counts them."""
    return sum(p.numel() for p in net.parameters())
