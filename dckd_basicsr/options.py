"""Reading option values that several parts of the plugin need.

The authors' DCKD keys (``num_neg``, ``*_prob``, ``update_decay``, ``step``, ``noisy``) may stand under ``train:``
or at the top level of an option file: :func:`train_option` reads ``train`` first, then the top level.
:func:`in_channels` reads a network block's input channels, whatever the arch calls them.
"""
from typing import Any, Dict


def train_option(opt: Dict[str, Any], key: str, default: Any = None) -> Any:
    """``opt['train'][key]`` if present, else ``opt[key]``, else ``default``."""
    train_opt = opt.get('train') or {}
    if key in train_opt:
        return train_opt[key]
    return opt.get(key, default)


# Keys under which BasicSR and plugin archs name their input channels.
IN_CHANNEL_KEYS = ('num_in_ch', 'in_chans', 'inp_channels', 'img_channel', 'in_nc', 'in_channels')


def in_channels(net_opt: Dict[str, Any]) -> int:
    """Input channels of a network option block (3 when it does not say)."""
    return next((int(net_opt[key]) for key in IN_CHANNEL_KEYS if key in net_opt), 3)
