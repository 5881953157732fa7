"""Option keys read off the code that consumes them, for the option schema (:mod:`.option_schema`).

* :func:`constructor_arguments`: the keyword arguments ``obj(**block)`` accepts, from the signatures along the MRO
  (BasicSR's ``build_network`` / ``build_loss`` pass a block's keys, ``type`` removed, as keyword arguments). A
  constructor with ``**kwargs`` accepts only its named arguments when its body never touches ``kwargs`` (BasicSR's
  ``SwinIR``, the metric functions), its own and the next class's when it passes them on with
  ``super().__init__(**kwargs)`` (the plugin's spandrel students), plus the keys it reads with ``kwargs['x']`` /
  ``kwargs.get('x')`` / ``kwargs.pop('x')``; any other use leaves the block unchecked (None).
* :func:`keys_read`: the string keys a class's methods (along its MRO) or a function read from given containers,
  ``opt['x']``, ``opt.get('x', default)``, ``'x' in opt``, ``train_option(opt, 'x')``: how each BasicSR dataset
  class, model class and the training pipeline read their blocks.
* :func:`docstring_arguments`: ``name (type): text`` lines of a Google-style docstring (BasicSR's): the type and
  the first sentence of each.
"""
import ast
import functools
import inspect
import re
import textwrap
import typing
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

# A default that marks a required argument or a key read without a fallback.
REQUIRED = inspect.Parameter.empty


@dataclass(frozen=True)
class Argument:
    """One keyword argument a constructor accepts: its default (``REQUIRED`` when it has none), its type as the
    option schema names types (``int``, ``float``, ``bool``, ``str``, ``list``, ``dict``, ``any``, ``|``-joined) and
    the first sentence its docstring gives it (or '')."""
    name: str
    default: Any
    type: str
    description: str


def _source_tree(obj: Any) -> Optional[ast.AST]:
    try:
        return ast.parse(textwrap.dedent(inspect.getsource(obj)))
    except (OSError, TypeError, SyntaxError, IndentationError):
        return None


@functools.lru_cache(maxsize=None)
def _cached_tree(obj: Any) -> Optional[ast.AST]:
    return _source_tree(obj)


def _literal(node: Optional[ast.AST]) -> Any:
    if node is None:
        return None
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None


def _is_init_call(call: ast.Call) -> bool:
    """``super().__init__(...)`` or ``Base.__init__(self, ...)``."""
    return isinstance(call.func, ast.Attribute) and call.func.attr == '__init__'


def kwargs_use(function: Callable, name: str) -> Tuple[str, Dict[str, Any]]:
    """How ``function`` uses its ``**name`` argument, ``(use, {key: default})``: ``use`` is ``'unused'``,
    ``'read'`` (only constant keys: ``kwargs['x']``, ``kwargs.get('x')``, ``kwargs.pop('x')``, returned with their
    defaults), ``'passed_on'`` (``super().__init__(**kwargs)``) or ``'other'`` (also when the source cannot be
    read)."""
    tree = _cached_tree(function)
    if tree is None:
        return 'other', {}
    keys: Dict[str, Any] = {}
    handled = set()
    passed_on = False
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            if _is_init_call(node) and any(k.arg is None and isinstance(k.value, ast.Name) and k.value.id == name
                                           for k in node.keywords):
                passed_on = True
                handled.update(id(k.value) for k in node.keywords if k.arg is None)
            func = node.func
            if isinstance(func, ast.Attribute) and func.attr in ('get', 'pop') and isinstance(func.value, ast.Name) \
                    and func.value.id == name and node.args and isinstance(node.args[0], ast.Constant):
                keys[node.args[0].value] = _literal(node.args[1]) if len(node.args) > 1 else None
                handled.add(id(func.value))
        elif isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id == name and \
                isinstance(node.slice, ast.Constant):
            keys[node.slice.value] = REQUIRED
            handled.add(id(node.value))
    uses = [n for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id == name and id(n) not in handled]
    if passed_on:
        return 'passed_on', keys
    if uses:
        return 'other', keys
    return ('read' if keys else 'unused'), keys


def annotation_type(annotation: Any) -> Optional[str]:
    """The schema type of a type hint (``Optional[int]`` -> ``int``; ``Sequence[float]`` -> ``list``), or None."""
    if annotation is inspect.Parameter.empty or annotation is None:
        return None
    if isinstance(annotation, str):
        simple = {'int': 'int', 'float': 'float', 'bool': 'bool', 'str': 'str'}
        return simple.get(annotation.replace('Optional[', '').rstrip(']'))
    origin = typing.get_origin(annotation)
    if origin is typing.Union or type(annotation).__name__ == 'UnionType':
        parts = [annotation_type(a) for a in typing.get_args(annotation) if a is not type(None)]
        if any(p is None or p == 'any' for p in parts):
            return 'any'
        return '|'.join(dict.fromkeys(p for part in parts for p in part.split('|')))
    if origin is typing.Literal:
        values = typing.get_args(annotation)
        kinds = {annotation_type(type(v)) for v in values}
        return kinds.pop() if len(kinds) == 1 else 'any'
    base = origin or annotation
    if base is bool:
        return 'bool'
    if base is int:
        return 'int'
    if base is float:
        return 'float'
    if base is str:
        return 'str'
    if base in (list, tuple, set, frozenset) or (isinstance(base, type) and base.__module__ == 'collections.abc' and
                                                 base.__name__ in ('Sequence', 'Iterable', 'MutableSequence')):
        return 'list'
    if base is dict or (isinstance(base, type) and base.__name__ in ('Mapping', 'MutableMapping')):
        return 'dict'
    return 'any'


def default_type(default: Any) -> str:
    """The schema type a default value suggests: an int default accepts a float too (``eta_min=0`` takes 1e-6)."""
    if default is REQUIRED or default is None:
        return 'any'
    if isinstance(default, bool):
        return 'bool'
    if isinstance(default, (int, float)):
        return 'float'
    if isinstance(default, str):
        return 'str'
    if isinstance(default, (list, tuple)):
        return 'list'
    if isinstance(default, dict):
        return 'dict'
    return 'any'


def argument_type(parameter: inspect.Parameter, documented: str = '') -> str:
    """The schema type of a parameter: its type hint, else what its default suggests, else its docstring's."""
    hinted = annotation_type(parameter.annotation)
    if hinted not in (None, 'any'):
        return hinted
    kind = default_type(parameter.default)
    return docstring_type(documented) if kind == 'any' else kind


DOC_ARG = re.compile(r'^\s*\**(\w+)\s*(?:\(([^)]*)\))?\s*:\s*(\S.*)$')


def first_sentence(text: str) -> str:
    text = ' '.join(text.split())
    match = re.match(r'(.+?[.!?])(\s|$)', text)
    return (match.group(1) if match else text).strip()


def docstring_arguments(*objects: Any) -> Dict[str, Tuple[str, str]]:
    """``{argument: (type text, first sentence)}`` from the ``Args:`` sections of the docstrings of ``objects`` (a
    class and its ``__init__``), Google style as BasicSR writes them (``num_feat (int): Channel number. Default:
    64.``); continuation lines are joined."""
    found: Dict[str, List[str]] = {}
    for obj in objects:
        doc = inspect.getdoc(obj) or ''
        in_args, current, indent = False, None, 0
        for line in doc.splitlines():
            stripped = line.strip()
            if re.match(r'^(Args|Arguments|Parameters|Keyword Args)\s*:\s*$', stripped):
                in_args, current = True, None
                continue
            if in_args and re.match(r'^(Returns|Raises|Yields|Examples?|Note|Attributes)\s*:\s*$', stripped):
                in_args = False
                continue
            if not in_args or not stripped:
                continue
            line_indent = len(line) - len(line.lstrip())
            match = DOC_ARG.match(line)
            if match and (current is None or line_indent <= indent):
                current, indent = match.group(1), line_indent
                if current not in found:
                    found[current] = [match.group(2) or '', match.group(3)]
            elif current is not None and line_indent > indent and current in found:
                found[current][1] += f' {stripped}'
    return {name: (kind.strip(), first_sentence(text)) for name, (kind, text) in found.items()}


def docstring_type(text: str) -> str:
    """The schema type a docstring's ``(int)`` / ``(list[int])`` / ``(str, optional)`` names; ``any`` when unsure."""
    text = text.lower().replace('optional', '').strip(' ,')
    if not text or '|' in text or ' or ' in text:
        return 'any'
    for prefix, kind in (('bool', 'bool'), ('int', 'int'), ('float', 'float'), ('str', 'str'), ('list', 'list'),
                         ('tuple', 'list'), ('sequence', 'list'), ('dict', 'dict')):
        if text.startswith(prefix):
            return kind
    return 'any'


def _stops_walk(klass: type) -> bool:
    return klass is object or (klass.__module__.startswith('torch.nn.modules.module'))


def constructor_arguments(obj: Any, skip: Iterable[str] = (), partial: bool = False) -> Optional[List[Argument]]:
    """The keyword arguments ``obj(**block)`` accepts (see the module docstring), or None when they cannot all be
    known (with ``partial``: those known, the named arguments up to the ``**kwargs`` it uses).

    ``obj`` is a class (its ``__init__`` along the MRO) or a function; ``skip`` names arguments the caller fills
    itself (a metric's ``img``, ``img2``; an optimizer's ``params``)."""
    skip = set(skip)
    arguments: Dict[str, Argument] = {}
    if inspect.isclass(obj):
        functions = [(klass, vars(klass)['__init__']) for klass in obj.__mro__
                     if not _stops_walk(klass) and '__init__' in vars(klass)]
        documented: Dict[str, Tuple[str, str]] = {}
        for klass, _ in functions:
            for name, entry in docstring_arguments(klass, vars(klass)['__init__']).items():
                documented.setdefault(name, entry)
    else:
        functions = [(None, obj)]
        documented = docstring_arguments(obj)
    for klass, function in functions:
        try:
            parameters = list(inspect.signature(function).parameters.values())
        except (TypeError, ValueError):
            return list(arguments.values()) if partial else None
        if klass is not None:
            parameters = parameters[1:]  # self
        for p in parameters:
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in skip and p.name not in arguments:
                kind, text = documented.get(p.name, ('', ''))
                arguments[p.name] = Argument(p.name, p.default, argument_type(p, kind), text)
        var_keyword = next((p for p in parameters if p.kind == p.VAR_KEYWORD), None)
        if var_keyword is None:
            return list(arguments.values())
        use, keys = kwargs_use(function, var_keyword.name)
        for key, default in keys.items():
            if key not in arguments and key not in skip:
                arguments[key] = Argument(key, default, default_type(default), documented.get(key, ('', ''))[1])
        if use in ('unused', 'read'):
            return list(arguments.values())
        if use == 'other' or klass is None:
            return list(arguments.values()) if partial else None
    return list(arguments.values())  # the walk reached nn.Module / object, which take no options


def _unparse(node: ast.AST) -> str:
    try:
        return ast.unparse(node).replace('"', "'")
    except Exception:  # noqa: B902  (a node ast.unparse cannot print is no container)
        return ''


@functools.lru_cache(maxsize=None)
def _calls_super(function: Any, name: str) -> bool:
    tree = _cached_tree(function)
    return tree is not None and any(
        isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == name and
        isinstance(node.func.value, ast.Call) and isinstance(node.func.value.func, ast.Name) and
        node.func.value.func.id == 'super' for node in ast.walk(tree))


@functools.lru_cache(maxsize=None)
def _source_objects(obj: Any) -> Tuple[Any, ...]:
    """What :func:`keys_read` reads of ``obj``: a function or module itself; for a class, the methods that run for
    it: each name's first definition along the MRO, and the next one while a definition calls
    ``super().<name>(...)``."""
    if not inspect.isclass(obj):
        return (obj, )
    classes = [klass for klass in obj.__mro__ if not _stops_walk(klass) and
               not klass.__module__.startswith(('torch.', 'builtins', 'typing', 'abc'))]
    names = dict.fromkeys(name for klass in classes for name, value in vars(klass).items()
                          if inspect.isfunction(value) or isinstance(value, (classmethod, staticmethod)))
    functions = []
    for name in names:
        for klass in classes:
            value = vars(klass).get(name)
            if value is None:
                continue
            function = value.__func__ if isinstance(value, (classmethod, staticmethod)) else value
            functions.append(function)
            if not _calls_super(function, name):
                break
    return tuple(functions)


@functools.lru_cache(maxsize=None)
def _reads(obj: Any) -> Tuple[Tuple[str, str, Any, bool], ...]:
    """Every constant-key read in the source of ``obj``: ``(container, key, default, is_call)``; ``is_call`` marks
    ``f(c, 'key')``, whose ``container`` is the function's name."""
    tree = _cached_tree(obj)
    if tree is None:
        return ()
    reads = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) and \
                isinstance(node.ctx, ast.Load):
            reads.append((_unparse(node.value), node.slice.value, REQUIRED, False))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                node.func.attr in ('get', 'pop') and node.args and isinstance(node.args[0], ast.Constant):
            reads.append((_unparse(node.func.value), node.args[0].value,
                          _literal(node.args[1]) if len(node.args) > 1 else None, False))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and len(node.args) > 1 and \
                isinstance(node.args[1], ast.Constant):
            reads.append((node.func.id, node.args[1].value, _literal(node.args[2]) if len(node.args) > 2 else None,
                          True))
        elif isinstance(node, ast.Compare) and isinstance(node.left, ast.Constant) and len(node.ops) == 1 and \
                isinstance(node.ops[0], (ast.In, ast.NotIn)):
            reads.append((_unparse(node.comparators[0]), node.left.value, None, False))
    return tuple(read for read in reads if isinstance(read[1], str))


def keys_read(objects: Iterable[Any], containers: Iterable[str],
              key_functions: Iterable[str] = ()) -> Dict[str, Any]:
    """``{key: default}`` of the string keys the source of ``objects`` (classes: the methods that run for them, see
    :func:`_source_objects`; functions; modules) reads from the expressions ``containers`` (``opt``, ``self.opt``,
    ``self.opt['train']``, as ``ast.unparse`` writes them with single quotes): ``c['x']`` (default REQUIRED unless
    also read with a fallback), ``c.get('x', d)`` / ``c.pop('x', d)`` (default ``d``), ``'x' in c`` (None); and
    ``f(c, 'x')`` for the functions named in ``key_functions`` (``train_option``, whatever its first argument)."""
    containers, key_functions = set(containers), set(key_functions)
    found: Dict[str, Any] = {}
    for root in objects:
        for obj in _source_objects(root):
            for container, key, default, is_call in _reads(obj):
                if (container in key_functions) if is_call else (container in containers):
                    if key not in found or found[key] is REQUIRED:
                        found[key] = default
    return found


def source_readable(obj: Any) -> bool:
    """Whether the source of ``obj`` (a class or function) can be read, so :func:`keys_read` sees what it reads."""
    return all(_cached_tree(o) is not None for o in _source_objects(obj))
