"""Registers dckd-basicsr with BasicSR the first time ``basicsr`` is imported, from any entry point.

BasicSR has no plugin mechanism, yet ``python -m basicsr.train -opt X.yml`` must find ``model_type: DCKDModel``.
The installed ``dckd_basicsr_hook.pth`` runs :func:`install` at interpreter start-up. That only puts a finder on
``sys.meta_path``; nothing heavy (torch, basicsr) is imported until a program imports ``basicsr`` itself. Then the
finder wraps basicsr's real loader so that ``dckd_basicsr`` (compatibility patches, then registration) is imported
just before basicsr's ``__init__`` runs. Set ``DCKD_BASICSR_NO_HOOK=1`` to turn the hook off.
"""
import importlib.abc
import importlib.machinery
import os
import sys


class _PluginLoader(importlib.abc.Loader):
    """Delegates to basicsr's own loader, importing the plugin before basicsr's package body executes."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        # basicsr is in sys.modules (empty) at this point, so the plugin can import its submodules; the plugin's
        # first step aliases the torchvision module without which basicsr's own __init__ fails.
        import dckd_basicsr  # noqa: F401
        self._loader.exec_module(module)

    def __getattr__(self, name):
        return getattr(self._loader, name)


class BasicSRFinder(importlib.abc.MetaPathFinder):
    """Finds ``basicsr`` with the remaining finders and hands back its spec with :class:`_PluginLoader`."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != 'basicsr':
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, 'find_spec'):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and 'dckd_basicsr' not in sys.modules:
                    spec.loader = _PluginLoader(spec.loader)
                return spec
        return None


def install() -> None:
    """Put :class:`BasicSRFinder` first on ``sys.meta_path`` (once) unless ``DCKD_BASICSR_NO_HOOK`` is set."""
    if os.environ.get('DCKD_BASICSR_NO_HOOK') or 'basicsr' in sys.modules:
        return
    if not any(isinstance(finder, BasicSRFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, BasicSRFinder())
