"""Reading option files and the option values that several layers of the plugin need.

* :func:`read_option_file`: an option file read as BasicSR reads it (ordered YAML), the one YAML reader of the
  plugin;
* :func:`train_option`: the authors' DCKD keys (``num_neg``, ``*_prob``, ``update_decay``, ``step``, ``noisy``) may
  stand under ``train:`` or at the top level of an option file; ``train`` is read first, then the top level;
* :func:`network_in_channels`: a network block's input channels, whatever the arch calls them;
* :func:`validation_pad_multiple`: the multiple validation and inference pad their inputs to;
* :func:`check_unit_interval`: a value that must lie in [0, 1] (probabilities, the history decay).
"""
from typing import Any, Dict

from dckd_basicsr.errors import OptionError


def read_option_file(path: str, option: str = '-opt') -> Dict[str, Any]:
    """The option file at ``path`` as an ordered mapping; OptionError naming ``option`` when it cannot be read, is
    not valid YAML or is not a mapping."""
    import yaml
    from basicsr.utils.options import ordered_yaml
    try:
        with open(path, mode='r') as f:
            opt = yaml.load(f, Loader=ordered_yaml()[0]) or {}
    except OSError as error:
        raise OptionError(f'{option} {path}: {error.strerror}.') from error
    except yaml.YAMLError as error:
        raise OptionError(f'{option} {path} is not valid YAML: {error}') from error
    if not isinstance(opt, dict):
        raise OptionError(f'{option} {path} is not an option file (a YAML mapping).')
    return opt


def train_option(opt: Dict[str, Any], key: str, default: Any = None) -> Any:
    """``opt['train'][key]`` if present, else ``opt[key]``, else ``default``."""
    train_opt = opt.get('train') or {}
    if key in train_opt:
        return train_opt[key]
    return opt.get(key, default)


# Keys under which BasicSR and plugin archs name their input channels.
IN_CHANNEL_KEYS = ('num_in_ch', 'in_chans', 'inp_channels', 'img_channel', 'in_nc', 'in_channels')


def network_in_channels(net_opt: Dict[str, Any]) -> int:
    """Input channels of a network option block (3 when it does not say)."""
    return next((int(net_opt[key]) for key in IN_CHANNEL_KEYS if key in net_opt), 3)


def validation_pad_multiple(opt: Dict[str, Any], network: str = 'network_g', pads_itself: bool = False) -> int:
    """The multiple validation pads to: ``val.pad_multiple``, else the authors' ``val.window_size``, else
    ``<network>.window_size`` (SwinIR), else 1. A network that ``pads_itself`` to what it needs (a spandrel student)
    is not padded to its ``window_size``, so it validates as it runs when deployed."""
    val_opt = opt.get('val') or {}
    own = 1 if pads_itself else (opt.get(network) or {}).get('window_size', 1)
    return int(val_opt.get('pad_multiple', val_opt.get('window_size', own)))


def check_unit_interval(key: str, value: float, noun: str = 'a probability') -> float:
    """``value`` when it lies in [0, 1]; OptionError ``'<key>: <value>; <noun> must lie in [0, 1].'`` otherwise."""
    if not 0 <= value <= 1:
        raise OptionError(f'{key}: {value}; {noun} must lie in [0, 1].')
    return value
