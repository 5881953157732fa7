"""The option schema's generic core: fields, blocks, blocks chosen by their ``type``, one check and one JSON Schema.

An option file is a tree of :class:`Block` (mappings of known keys, each a :class:`Field`: type, default, one-line
description). A field whose value is a mapping is checked against its ``block``, or, for a ``type``-selected block
(``network_g``, ``train.pixel_opt``, ``datasets.<phase>``, ``val.metrics.<name>``, ``train.optim_g``,
``train.scheduler``, ``io_backend``), against the block its :class:`Family` derives for that type (from the
constructor's signature or the class's source, :mod:`.schema_sources`). Which blocks and keys exist is declared and
derived in :mod:`.schema_blocks`; this module only walks them:

* :func:`check` returns a :class:`Report`: every problem, each one line naming the key (unknown keys with the close
  names, wrong types with the value and the expected type, unknown ``type`` names, missing required keys), and the
  keys no schema could check (a third-party type whose signature does not tell), for one warning;
* :func:`~.schema_json.json_schema` writes the same tree as a JSON Schema (:mod:`.schema_json`);
* :func:`describe_field` / :func:`describe_block`: the text of ``dckd-train --explain``.
"""
import difflib
import re
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from dckd_basicsr.integration.schema_sources import REQUIRED

# How messages name the schema's types (``|`` joins alternatives).
TYPE_WORDS = {'int': 'an integer', 'count': 'a whole number', 'float': 'a number', 'bool': 'true or false',
              'str': 'a string', 'list': 'a list', 'dict': 'a mapping', 'any': 'anything'}


@dataclass(frozen=True)
class Field:
    """One option key.

    Attributes:
        type: ``int``, ``count`` (an integer, also written as ``!!float 5e3``), ``float`` (an integer is a number
            too), ``bool``, ``str``, ``list``, ``dict``, ``any``, or
            alternatives joined by ``|``. ``None`` (YAML ``~``) is always accepted: it means "not set".
        default: The value used when the key is left out (``REQUIRED``: it must be given).
        description: One line for ``--explain``, the JSON Schema and the option reference.
        choices: The accepted strings, when the value is a string.
        block: The block a mapping value is checked against.
        family: The family whose ``type``-selected block a mapping value is checked against.
        extra: Keys a ``family`` block accepts here besides its type's own (a model's keys in a loss block).
        models: Model class names that read this key (and their subclasses); empty: every model.
        computed: Filled in while the options are parsed; not written in option files (no JSON Schema entry).
        top_level: A ``train`` key the models also read at the top level of the file (the DCKD authors' keys).
        for_training: A ``REQUIRED`` key that only training runs need (test files leave it out).
    """
    type: str = 'any'
    default: Any = None
    description: str = ''
    choices: Tuple[Any, ...] = ()
    block: Optional['Block'] = None
    family: Optional['Family'] = None
    extra: Tuple[Tuple[str, 'Field'], ...] = ()
    models: Tuple[str, ...] = ()
    computed: bool = False
    top_level: bool = False
    for_training: bool = False

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


@dataclass
class Block:
    """A mapping of option keys.

    Attributes:
        title: How messages name the block's owner (``SwinIR``, ``DCKDModel's train block``).
        fields: The keys it accepts.
        patterns: ``(regex, field)`` for families of keys (``pretrain_network_<net>``).
        entries: When set, every key is a name the user chooses (dataset phases, metric names), each value checked
            against this field.
        unchecked: Why keys outside ``fields`` cannot be checked (a third-party type); they are then listed in one
            warning instead of being errors.
        list_accepted: Name the accepted keys when refusing one (constructor arguments: a short list).
        hint: Last words of an unknown-key message.
        unknown_key: Optional message for an unknown key (``key``, ``path``) that knows better than the generic one.
        module: The module of the class or function a ``type``-selected block was derived from.
    """
    title: str
    fields: Dict[str, Field] = field(default_factory=dict)
    patterns: Tuple[Tuple[str, Field], ...] = ()
    entries: Optional[Field] = None
    unchecked: str = ''
    list_accepted: bool = True
    hint: str = ''
    unknown_key: Optional[Callable[[str, str], Optional[str]]] = None
    module: str = ''

    def field(self, key: str) -> Optional[Field]:
        if key in self.fields:
            return self.fields[key]
        return next((f for pattern, f in self.patterns if re.fullmatch(pattern, key)), None)

    def names(self) -> List[str]:
        return [name for name, f in self.fields.items() if not f.computed]


@dataclass
class Family:
    """Blocks selected by a mapping's ``type`` value: one per registered name.

    Attributes:
        name: ``network``, ``loss``, ``dataset``, ``metric``, ``optimizer``, ``scheduler``, ``io_backend``.
        names: The registered ``type`` names (for the JSON Schema and ``--explain``).
        block: The block of a ``type`` name, None when the name is not registered.
        unknown_type: The message for a name that is not registered (``key`` is the ``type`` key's path).
        default_type: The type used when the mapping names none (``io_backend``: none; BasicSR needs one).
    """
    name: str
    names: Callable[[], List[str]]
    block: Callable[[str], Optional[Block]]
    unknown_type: Callable[[str, str], str]
    default_type: Optional[str] = None


@dataclass
class Report:
    """What :func:`check` found: ``errors`` (one line each, the key first) and ``unchecked`` (key path, why)."""
    errors: List[str] = field(default_factory=list)
    unchecked: List[Tuple[str, str]] = field(default_factory=list)

    def warning(self) -> str:
        """One warning naming the keys no schema checked, grouped by the reason, or ''."""
        if not self.unchecked:
            return ''
        reasons: Dict[str, List[str]] = {}
        for path, why in self.unchecked:
            reasons.setdefault(why, []).append(path)
        lines = [f'{len(self.unchecked)} option key{"s" * (len(self.unchecked) != 1)} not checked by the option '
                 'schema (types it does not know; a misspelt key here is silently ignored):']
        lines += [f'  {", ".join(paths)}: {why}' for why, paths in reasons.items()]
        return '\n'.join(lines)


# ---------------------------------------------------------------------------------------------- checking
def type_matches(value: Any, kind: str) -> bool:
    """Whether ``value`` (from YAML) is of the schema type ``kind``."""
    for part in kind.split('|'):
        if part == 'any' or (part == 'bool' and isinstance(value, bool)):
            return True
        if isinstance(value, bool):
            continue
        if part == 'count' and isinstance(value, float) and value.is_integer():
            return True
        kinds = {'int': int, 'count': int, 'float': (int, float), 'str': str, 'list': (list, tuple), 'dict': dict}
        if part in kinds and isinstance(value, kinds[part]):
            return True
    return False


def type_words(kind: str) -> str:
    return ' or '.join(TYPE_WORDS[part] for part in kind.split('|'))


def value_words(value: Any) -> str:
    for kind in ('bool', 'int', 'float', 'str', 'list', 'dict'):
        if type_matches(value, kind):
            return TYPE_WORDS[kind] if kind != 'bool' else 'a boolean'
    return f'a {type(value).__name__}'


def type_problem(path: str, value: Any, kind: str) -> str:
    """``'<path>: <value> is a string; expected a number.'``, with the fix for YAML's ``1e-4`` strings."""
    message = f'{path}: {value!r} is {value_words(value)}; expected {type_words(kind)}.'
    if isinstance(value, str) and 'float' in kind.split('|'):
        try:
            float(value)
            message += f' (YAML reads {value} as a string: write it with a dot, e.g. 2.0e-4, or as !!float {value})'
        except ValueError:
            pass
    return message


def close_names(key: str, names: Sequence[str]) -> List[str]:
    """The names close to ``key``; ``*_opt`` blocks are compared by what precedes ``_opt`` (``logit_opt`` is close to
    ``logits_opt``, not to ``cl_opt``)."""
    if key.endswith('_opt'):
        stems = {name[:-len('_opt')]: name for name in names if name.endswith('_opt')}
        return [stems[stem] for stem in difflib.get_close_matches(key[:-len('_opt')], list(stems), n=3, cutoff=0.6)]
    return difflib.get_close_matches(key, list(names), n=3, cutoff=0.6)


def unknown_key_problem(block: Block, key: str, path: str) -> str:
    """The generic message for a key ``block`` does not have: the close names, else (short blocks) the accepted ones."""
    special = block.unknown_key(key, path) if block.unknown_key else None
    if special:
        return special
    close = close_names(key, block.names())
    message = f'{path}: {block.title} has no option {key!r}'
    if block.list_accepted:
        accepted = [name for name in block.names() if name != 'type']
        message += f'; it accepts {", ".join(accepted) or "no other key"}.'
        if close:
            message += f' Did you mean {" or ".join(close)}?'
    else:
        message += f'; did you mean {" or ".join(close)}?' if close else '.'
    return message + (f' {block.hint}' if block.hint else '')


def family_block(value: Dict[str, Any], f: Field, path: str, report: Report) -> Optional[Block]:
    """The block ``value``'s ``type`` selects in ``f.family`` (with ``f.extra`` added); None after reporting a
    missing or unknown type."""
    family = f.family
    name = value.get('type', family.default_type)
    if name is None:
        report.errors.append(f'{path}.type: missing; give the {family.name} type (e.g. '
                             f'{", ".join(family.names()[:3])}).')
        return None
    if not isinstance(name, str):
        report.errors.append(type_problem(f'{path}.type', name, 'str'))
        return None
    block = family.block(name)
    if block is None:
        report.errors.append(family.unknown_type(name, f'{path}.type'))
        return None
    if f.extra:
        block = replace(block, fields={**block.fields, **dict(f.extra)})
    return block


def check_value(value: Any, f: Field, path: str, report: Report, training: bool = True) -> None:
    """Check one value against its field (type, choices, and a mapping against its block)."""
    if value is None:
        return
    if not type_matches(value, f.type):
        report.errors.append(type_problem(path, value, f.type))
        return
    if f.choices and isinstance(value, str) and value not in f.choices:
        report.errors.append(f'{path}: {value!r}; expected one of {", ".join(map(str, f.choices))}.')
        return
    if isinstance(value, dict):
        block = family_block(value, f, path, report) if f.family is not None else f.block
        if block is not None:
            check_block(value, block, path, report, training)


def check_block(mapping: Dict[str, Any], block: Block, path: str, report: Report, training: bool = True) -> None:
    """Check every key of ``mapping`` (at ``path``; '' for the file itself) against ``block``; ``training``: the
    keys only training needs are required too."""
    prefix = f'{path}.' if path else ''
    if block.entries is not None:
        for key, value in mapping.items():
            check_value(value, block.entries, f'{prefix}{key}', report, training)
        return
    for key, value in mapping.items():
        f = block.field(str(key))
        if f is None:
            if block.unchecked:
                report.unchecked.append((f'{prefix}{key}', block.unchecked))
            else:
                report.errors.append(unknown_key_problem(block, str(key), f'{prefix}{key}'))
            continue
        check_value(value, f, f'{prefix}{key}', report, training)
    for key, f in block.fields.items():
        if f.required and (training or not f.for_training) and mapping.get(key) is None:
            what = f' ({f.description})' if f.description else ''
            report.errors.append(f'{prefix}{key}: missing; {block.title} needs it{what}.')


def check(opt: Dict[str, Any], root: Block, training: bool = True) -> Report:
    """Every problem of ``opt`` against ``root``, and the keys nobody could check."""
    report = Report()
    check_block(opt, root, '', report, training)
    return report


# ---------------------------------------------------------------------------------------------- descriptions
def json_value(value: Any) -> Any:
    """``value`` as JSON can hold it (tuples as lists, other objects as None): defaults in messages and schemas."""
    if isinstance(value, tuple):
        return [json_value(v) for v in value]
    if isinstance(value, list):
        return [json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return None


def describe_default(f: Field) -> str:
    if f.required:
        return 'required for training' if f.for_training else 'required'
    if f.default is None:
        return 'default: not set'
    value = json_value(f.default)
    if isinstance(value, bool):
        return f'default: {str(value).lower()}'
    return f'default: {value}'


def kind_text(f: Field, bar: str = ' | ') -> str:
    """How ``--explain`` and the option reference name a field's type: ``int``, ``number``, ``bf16 | fp16 | bool``,
    ``network block``, ``bool | network block``."""
    names = {'float': 'number', 'count': 'int', 'dict': 'mapping'}
    parts = [names.get(part, part) for part in f.type.split('|') if not (f.choices and part == 'str')]
    parts += [str(choice) for choice in f.choices]
    if f.family is not None or f.block is not None:
        parts = [part for part in parts if part != 'mapping'] + [f'{f.family.name} block' if f.family else 'block']
    return bar.join(parts)


def describe_field(path: str, f: Field) -> str:
    """``path (type; default: x; read by M)`` and the description, for ``--explain``."""
    facts = [kind_text(f), describe_default(f)]
    if f.models:
        facts.append(f'read by {", ".join(f.models)}')
    if f.top_level:
        facts.append('may also stand at the top level')
    lines = [f'{path} ({"; ".join(facts)})']
    if f.description:
        lines.append(f'  {f.description}')
    return '\n'.join(lines)


def describe_block(path: str, block: Block) -> str:
    """The keys of a block, one line each, for ``--explain``."""
    lines = [f'{path or "the option file"}: {block.title}']
    if block.entries is not None:
        lines.append(f'  <name>: {describe_field("", block.entries).splitlines()[0].strip(" ()")}')
        return '\n'.join(lines)
    width = max([len(name) for name in block.names()] + [8])
    for name in block.names():
        f = block.fields[name]
        summary = describe_field(name, f).splitlines()
        text = f.description or summary[0]
        lines.append(f'  {name:<{width}}  {text}')
    for pattern, f in block.patterns:
        lines.append(f'  {pattern:<{width}}  {f.description}')
    if block.unchecked:
        lines.append(f'  (other keys are not checked: {block.unchecked})')
    return '\n'.join(lines)
