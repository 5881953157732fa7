"""The option schema as text: ``dckd-train --explain KEY`` (:func:`explain`) and the option reference
``docs/options.md`` (:func:`option_reference`, written by :func:`write_reference`; a test keeps the file equal).
"""
import os.path as osp
from dataclasses import replace
from typing import Any, Dict, List, Optional, Tuple

from dckd_basicsr.errors import OptionError
from dckd_basicsr.integration.option_schema import (Block, Field, close_names, describe_block, describe_default,
                                                    describe_field, kind_text)
from dckd_basicsr.integration.schema_blocks import (DATASET_FAMILY, IO_BACKEND, LOSS, METRIC, NETWORK, OPTIMIZER,
                                                    SCHEDULER, option_root, union_root)
from dckd_basicsr.integration.schema_catalogue import DIST_PARAMS, DUKD, FAST, NOISY, WANDB

FAMILIES = (NETWORK, LOSS, DATASET_FAMILY, METRIC, OPTIMIZER, SCHEDULER, IO_BACKEND)
# The type --explain assumes for a family block the option file does not give (datasets.<phase>.<key>).
EXPLAIN_DEFAULT_TYPES = {'dataset': 'PairedImageDataset', 'io_backend': 'disk'}


def _typed(f: Field, value: Any, next_part: Optional[str]) -> Tuple[Optional[Block], bool]:
    """The block of family field ``f`` for ``--explain``: the option file's type, else ``next_part`` when it names
    a type (then consumed), else the family's usual one. Returns (block, consumed)."""
    family = f.family
    name = value.get('type') if isinstance(value, dict) else None
    consumed = False
    if name is None and next_part is not None and family.block(next_part) is not None:
        name, consumed = next_part, True
    name = name or EXPLAIN_DEFAULT_TYPES.get(family.name)
    block = family.block(name) if name else None
    if block is not None and f.extra:
        block = replace(block, fields={**block.fields, **dict(f.extra)})
    return block, consumed


def explain(key: str, opt: Optional[Dict[str, Any]] = None) -> str:
    """What ``key`` means (``train.num_neg``, ``network_g.embed_dim``, ``datasets.train.use_hflip``, ``SwinIR``,
    ``SwinIR.embed_dim``, ``train``): type, default, who reads it, one line; a block lists its keys. With ``opt``
    (``-opt FILE``) the blocks are those of its ``model_type`` and the types it names."""
    parts = [part for part in key.split('.') if part]
    for family in FAMILIES:
        if parts and family.block(parts[0]) is not None and (opt is None or parts[0] not in (opt or {})):
            block = family.block(parts[0])
            if len(parts) == 1:
                return describe_block(f'{parts[0]} ({family.name})', block)
            f = block.field(parts[1])
            if f is None or len(parts) > 2:
                raise OptionError(f'--explain {key}: {parts[0]} has no option {parts[1]!r}; it accepts '
                                  f'{", ".join(n for n in block.names() if n != "type")}.')
            return describe_field(key, f)
    block: Optional[Block] = option_root(opt) if opt else union_root()
    value: Any = opt
    path: List[str] = []
    f: Optional[Field] = None
    i = 0
    while i < len(parts):
        part = parts[i]
        if block is None:
            raise OptionError(f'--explain {key}: {".".join(path)} holds no keys.')
        if block.entries is not None:
            f = block.entries
        else:
            f = block.field(part)
            if f is None:
                close = close_names(part, block.names())
                raise OptionError(f'--explain {key}: {block.title} has no option {part!r}' +
                                  (f'; did you mean {" or ".join(close)}?' if close else '.'))
        path.append(part)
        value = value.get(part) if isinstance(value, dict) else None
        i += 1
        if f.family is not None:
            block, consumed = _typed(f, value, parts[i] if i < len(parts) else None)
            if consumed:
                path.append(parts[i])
                i += 1
            elif block is None and i < len(parts):
                raise OptionError(f'--explain {key}: the keys of {".".join(path)} depend on its type; give the option '
                                  f'file (-opt FILE) or the type: --explain {".".join(path)}.<type>.{parts[i]} or '
                                  f'--explain <type>.{parts[i]} (e.g. {", ".join(f.family.names()[:3])}).')
        else:
            block = f.block
    if f is None:
        return describe_block('', block)
    text = describe_field('.'.join(path), f)
    if block is not None:
        text += '\n' + describe_block('.'.join(path), block)
    return text


# ---------------------------------------------------------------------------------------------- docs/options.md
REFERENCE_FILE = osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'docs', 'options.md')
REFERENCE_HEADER = """# Option reference

Generated from the option schema (`dckd_basicsr/integration/schema_docs.py`) by
`python -c "import dckd_basicsr.integration.schema_docs as s; s.write_reference()"`; a test keeps it equal to the
schema, so it cannot drift. Every key below is checked before anything is built: an unknown key is an error with the
close names, a value of the wrong type an error naming the key, the value and the expected type
(`dckd-train --explain KEY` prints one entry, `--explain KEY -opt FILE` for that file's `model_type` and types).

*Read by* names the plugin's model classes that read a key (their subclasses too); blank: BasicSR's pipeline or
every model of BasicSR that reads it (`--explain KEY -opt FILE` and the checks use what each model's code reads).
The keys of a `type`-selected block (`network_*`, `train.*_opt` losses, `train.optim_g`, `train.scheduler`,
`val.metrics.<name>`, `datasets.<phase>`, `io_backend`) are the arguments of that type and are not listed here:
`dckd-train --explain SwinIR`, `--explain ContrasLoss`, `--explain PairedImageDataset` list them.
"""


def _cell(text: Any) -> str:
    return str(text).replace('|', '\\|').replace('\n', ' ')


def _reference_table(title: str, block: Block, prefix: str) -> List[str]:
    lines = [f'## {title}', '', '| key | type | default | read by | meaning |', '|---|---|---|---|---|']
    for name in sorted(block.names()):
        f = block.fields[name]
        kind = kind_text(f, ' \\| ')
        read_by = ', '.join(model for model in f.models if model != 'BaseModel')
        default = describe_default(f).replace('default: ', '')
        lines.append(f'| `{prefix}{name}` | {kind} | {_cell(default)} | {read_by} | {_cell(f.description)} |')
    for pattern, f in block.patterns:
        default = describe_default(f).replace('default: ', '')
        lines.append(f"| `{prefix}{pattern.replace(chr(92) + 'w+', '<net>')}` | {kind_text(f, ' | ')} | "
                     f'{_cell(default)} | | {_cell(f.description)} |')
    return lines + ['']


def option_reference() -> str:
    """docs/options.md: every block's keys with type, default, readers and meaning, from :func:`union_root`."""
    root = union_root()
    parts = [REFERENCE_HEADER]
    parts += _reference_table('Top level', root, '')
    for section in ('path', 'train', 'val', 'logger'):
        parts += _reference_table(f'`{section}`', root.fields[section].block, f'{section}.')
    for title, block in (('`train.fast`', FAST), ('`train.noisy`', NOISY), ('`train.dukd_opt`', DUKD),
                         ('`logger.wandb`', WANDB), ('`dist_params`', DIST_PARAMS)):
        parts += _reference_table(title, block, f'{title.strip("`")}.')
    dataset = DATASET_FAMILY.block('PairedImageDataset')
    parts += _reference_table('`datasets.<phase>` (PairedImageDataset; other types: `dckd-train --explain <type>`)',
                              dataset, 'datasets.<phase>.')
    return '\n'.join(parts).rstrip() + '\n'


def write_reference(path: str = REFERENCE_FILE) -> str:
    with open(path, 'w') as f:
        f.write(option_reference())
    return path
