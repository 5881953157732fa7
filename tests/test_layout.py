"""The package layout: layers as folders, imports one way, small modules (issue 22).

Read from the source with ``ast`` (every import statement, also those inside functions), so a new module that
imports against the layering fails here before a reviewer has to spot it.
"""
import ast
from collections import defaultdict
from pathlib import Path
from typing import Dict, Set

from helpers import REPO

PACKAGE = REPO / 'dckd_basicsr'
# Rank of each layer: a module may import its own layer and the layers of a lower rank. errors/options are the
# shared tiny modules; data extends BasicSR's datasets; checkpoints convert files into archs' networks, so they sit
# just above archs.
RANKS = {'errors': 0, 'options': 0, 'archs': 1, 'losses': 1, 'data': 1, 'checkpoints': 2, 'distill': 3, 'training': 3,
         'models': 4, 'integration': 5, 'commands': 6, 'train': 7, 'test': 7, '': 7}
# The user commands (console scripts); the other modules in commands/ are helpers they share.
COMMANDS = {'infer', 'export', 'profile', 'convert', 'results', 'demo'}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix('').parts
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def layer(module: str) -> str:
    """``dckd_basicsr.training.fast`` -> ``training``; ``dckd_basicsr`` -> ``''``."""
    parts = module.split('.')
    return parts[1] if len(parts) > 1 else ''


def imports() -> Dict[str, Set[str]]:
    """Every module of the package -> the package modules it imports (anywhere in its source)."""
    found = defaultdict(set)
    for path in PACKAGE.rglob('*.py'):
        importer = module_name(path)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or '').startswith('dckd_basicsr'):
                found[importer].add(node.module)
                found[importer].update(f'{node.module}.{alias.name}' for alias in node.names
                                       if (PACKAGE.parent / f'{node.module}.{alias.name}'.replace('.', '/')).exists()
                                       or (PACKAGE.parent / (f'{node.module}.{alias.name}'.replace('.', '/') + '.py'))
                                       .exists())
            elif isinstance(node, ast.Import):
                found[importer].update(alias.name for alias in node.names if alias.name.startswith('dckd_basicsr'))
    return found


def test_every_module_lives_in_a_layer():
    unknown = {module_name(path) for path in PACKAGE.rglob('*.py')} - {'dckd_basicsr'}
    unknown = sorted(module for module in unknown if layer(module) not in RANKS)
    assert not unknown, f'modules outside the known layers: {unknown}'
    root = sorted(path.name for path in PACKAGE.glob('*.py'))
    assert root == ['__init__.py', 'errors.py', 'options.py', 'test.py', 'train.py']


def test_imports_point_down_the_layers():
    """``import dckd_basicsr`` (patches and registration) is the entry layers' way to set the plugin up."""
    upward = [f'{importer} imports {imported}' for importer, targets in imports().items() for imported in targets
              if (RANKS[layer(imported)] > RANKS[layer(importer)]
                  and not (imported == 'dckd_basicsr' and layer(importer) in ('integration', 'commands')))
              or {layer(importer), layer(imported)} == {'distill', 'training'}]
    assert not upward, '\n'.join(sorted(upward))


def test_the_integration_layer_is_imported_by_the_package_and_the_commands_only():
    importers = sorted(importer for importer, targets in imports().items()
                       if any(layer(t) == 'integration' for t in targets)
                       and layer(importer) not in ('integration', 'commands', 'train', 'test', ''))
    assert not importers, importers


def test_nothing_imports_a_command_module():
    offenders = []
    for importer, targets in imports().items():
        for imported in targets:
            parts = imported.split('.')
            if len(parts) > 2 and parts[1] == 'commands' and parts[2] in COMMANDS:
                if not importer.startswith(f'dckd_basicsr.commands.{parts[2]}'):
                    offenders.append(f'{importer} imports {imported}')
    assert not offenders, offenders


def test_modules_outside_archs_are_under_400_lines():
    long = {module_name(path): len(path.read_text().splitlines()) for path in PACKAGE.rglob('*.py')
            if layer(module_name(path)) != 'archs'}
    assert all(lines < 400 for lines in long.values()), {m: n for m, n in long.items() if n >= 400}
