"""dckd-basicsr: Dynamic Contrastive Knowledge Distillation (AAAI 2025) as a BasicSR plugin.

``import dckd_basicsr`` makes PyPI basicsr 1.4.2 work on current PyTorch (see
:mod:`dckd_basicsr.integration.patches`) and registers every ``*_arch.py``, ``*_loss.py`` and ``*_model.py`` module
of the plugin in BasicSR's registries. The import hook installed next to the package (``dckd_basicsr_hook``) does
this on the first ``import basicsr``.
"""
import importlib
import os
from os import path as osp

from dckd_basicsr.integration import patches

patches.apply_all()

__version__ = '0.1.0'


def _import_modules(subpackage: str, suffix: str) -> list:
    folder = osp.join(osp.dirname(osp.abspath(__file__)), subpackage)
    names = sorted(osp.splitext(name)[0] for name in os.listdir(folder) if name.endswith(suffix))
    return [importlib.import_module(f'dckd_basicsr.{subpackage}.{name}') for name in names]


_plugin_modules = (_import_modules('archs', '_arch.py') + _import_modules('losses', '_loss.py') +
                   _import_modules('models', '_model.py'))
