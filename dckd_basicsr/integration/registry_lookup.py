"""Looking up a ``type`` name in BasicSR's registries, with an error that lists what is registered.

* :func:`registry_get`: ``Registry.get`` as installed by :func:`dckd_basicsr.integration.patches.patch_registry_get`;
  reached by everything that builds from a name: ``build_network`` / ``build_loss`` / ``build_model`` in user code or
  a model built in-process, ``dckd-convert --arch X`` and ``dckd-convert -opt X.yml --network KEY`` (an option file
  read without ``parse_options``);
* :func:`check_registered`: the same check for an option file's ``type`` before anything is built, naming the
  option key (:func:`dckd_basicsr.integration.option_checks.check_option_types`).

Both raise :class:`~dckd_basicsr.errors.UnknownTypeError` (a ``KeyError`` and an ``OptionError``): the registered
names, the plugin's first, with close matches for typos.
"""
from typing import Any, List

from dckd_basicsr.errors import UnknownTypeError


def registered_plugin_names(registry: Any) -> List[str]:
    """Names in a BasicSR registry whose objects come from this plugin."""
    return sorted(name for name, obj in registry if getattr(obj, '__module__', '').startswith('dckd_basicsr'))


def unknown_type(registry: Any, name: str, option_key: str = '') -> UnknownTypeError:
    """The error for ``name`` missing from ``registry`` (prefixed with ``option_key`` when given)."""
    return UnknownTypeError(registry._name, name, registry.keys(), registered_plugin_names(registry), option_key)


def registry_get(self: Any, name: str, suffix: str = 'basicsr') -> Any:
    """``Registry.get``: the object registered as ``name`` or ``<name>_<suffix>``, else :func:`unknown_type`."""
    obj = self._obj_map.get(name)
    if obj is None:
        obj = self._obj_map.get(f'{name}_{suffix}')
    if obj is None:
        raise unknown_type(self, name)
    return obj


def check_registered(registry: Any, name: str, option_key: str) -> None:
    """Raise :func:`unknown_type` naming ``option_key`` unless ``registry`` has ``name`` (or ``<name>_basicsr``)."""
    if name not in registry and f'{name}_basicsr' not in registry:
        raise unknown_type(registry, name, option_key)
