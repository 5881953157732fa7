"""The blocks of an option file, for BasicSR 1.4.2 and the plugin: which keys exist, read off the code that reads them,
and one line of documentation per key.

Which keys a block has comes from the code (:mod:`.schema_sources`), so a new arch, loss, dataset or model needs no
schema code:

* ``network_*``, ``train.*_opt`` (losses), ``val.metrics.<name>``, ``train.optim_g`` / ``optim_d``,
  ``train.scheduler`` and ``io_backend``: the constructor's keyword arguments, by the ``type`` the block names;
* ``datasets.<phase>``: the keys the dataset class reads (``opt['x']``, ``opt.get('x')``) and those BasicSR's data
  loader reads (``basicsr/data/__init__.py``, ``basicsr/train.py``);
* the top level, ``path``, ``train``, ``val``, ``logger``: the keys BasicSR's pipeline reads (``basicsr/train.py``,
  ``basicsr/test.py``, ``basicsr/utils/options.py``), the keys the ``model_type`` class reads (its methods along the
  MRO), the loss blocks of its ``LOSS_TERMS``, and the keys the plugin reads outside the model classes, declared here
  with the models that read them (:data:`PLUGIN_READS`).

What each key means comes from the catalogue below (type, default, one line), from the constructor's docstring for
constructor arguments, else "read by <class>". A class that is neither BasicSR's nor the plugin's (a third-party
plugin's model, dataset or arch whose constructor uses its ``**kwargs``) has its keys checked as far as the code
tells, and the rest listed in one warning (:attr:`~.option_schema.Block.unchecked`), never refused.

:func:`option_root` is the schema of one option file (its ``model_type``); :func:`union_root` accepts what any known
model reads (``--explain`` without a file, the shipped JSON Schema, :data:`SCHEMA_FILE`).
"""
import functools
import json
import os.path as osp
import re
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from dckd_basicsr.integration.option_schema import Block, Family, Field, close_names
from dckd_basicsr.integration.schema_catalogue import (CONTAINERS, DATASET, DATASET_CONTAINERS, NESTED, PATH_PATTERNS,
                                                       PLUGIN_DATASET, RETIRED_TRAIN, SECTIONS, TOP, TRAIN,
                                                       plugin_reads)
from dckd_basicsr.integration.schema_json import json_schema
from dckd_basicsr.integration.schema_sources import (REQUIRED, Argument, constructor_arguments, default_type,
                                                     keys_read, source_readable)

SCHEMA_FILE = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'option_schema.json')
SCHEMA_TITLE = 'dckd-basicsr / BasicSR 1.4.2 option file'
OWN_MODULES = ('basicsr.', 'dckd_basicsr.')
EXPLAIN = 'See dckd-train --explain KEY.'

# ---------------------------------------------------------------------------------------------- families
def registered(registry: Any, name: str) -> Any:
    """BasicSR's lookup (``name`` or ``name_basicsr``) without raising; None when not registered."""
    for key in (name, f'{name}_basicsr'):
        if key in registry:
            return registry.get(key)
    return None


def registry_names(registry: Any) -> List[str]:
    names = set(registry.keys())
    names |= {name[:-len('_basicsr')] for name in names if name.endswith('_basicsr')}
    return sorted(names)


def unknown_registry_type(registry_getter: Callable[[], Any]) -> Callable[[str, str], str]:
    def message(name: str, path: str) -> str:
        from dckd_basicsr.integration.registry_lookup import unknown_type
        return str(unknown_type(registry_getter(), name, path))
    return message


def own_code(obj: Any) -> bool:
    """Whether ``obj`` is BasicSR's or the plugin's (its keys are then all known)."""
    return getattr(obj, '__module__', '').startswith(OWN_MODULES)


def argument_field(argument: Argument, owner: str) -> Field:
    return Field(argument.type, argument.default, argument.description or f'argument of {owner}')


def constructor_block(name: str, obj: Any, skip: Iterable[str] = (), common: Optional[Dict[str, Field]] = None,
                      what: str = 'constructor') -> Block:
    """The block of ``obj(**block)``: ``type``, its keyword arguments, ``common``; unchecked beyond them when the
    arguments cannot be known (a ``**kwargs`` it uses)."""
    fields = {'type': Field('str', None, f'{name}')}
    fields.update(common or {})
    complete = constructor_arguments(obj, skip) is not None
    fields.update((a.name, argument_field(a, name)) for a in constructor_arguments(obj, skip, partial=True))
    unchecked = '' if complete else f"{name}'s {what} takes **kwargs and uses them, so its other keys are not known"
    return Block(name, fields, unchecked=unchecked, module=getattr(obj, '__module__', '') or '')


@functools.lru_cache(maxsize=None)
def _cached_block(kind: str, name: str, obj: Any) -> Block:
    if kind == 'dataset':
        return dataset_block(name, obj)
    if kind == 'metric':
        return constructor_block(name, obj, ('img', 'img2'), {'better': Field(
            'str', 'higher', 'which way is better, for the best-metric log', ('higher', 'lower'))}, 'function')
    skip = {'optimizer': ('params', ), 'scheduler': ('optimizer', ), 'io_backend': ('db_paths', 'client_keys')}
    block = constructor_block(name, obj, skip.get(kind, ()))
    if kind in skip:  # the types BasicSR (and the plugin's get_optimizer) build: theirs, whoever defines the class
        block.module = 'basicsr.models'
    return block


def _registry_family(kind: str, registry_name: str) -> Family:
    def registry():
        import basicsr.utils.registry as registries
        return getattr(registries, registry_name)

    def block(name: str) -> Optional[Block]:
        obj = registered(registry(), name)
        return None if obj is None else _cached_block(kind, name, obj)

    return Family(kind, lambda: registry_names(registry()), block, unknown_registry_type(registry))


NETWORK = _registry_family('network', 'ARCH_REGISTRY')
LOSS = _registry_family('loss', 'LOSS_REGISTRY')
METRIC = _registry_family('metric', 'METRIC_REGISTRY')
DATASET_FAMILY = _registry_family('dataset', 'DATASET_REGISTRY')


def optimizers() -> Dict[str, Any]:
    import torch
    from dckd_basicsr.integration.optimizers import OPTIMIZERS
    return {name: getattr(torch.optim, name) for name in OPTIMIZERS}


def schedulers() -> Dict[str, Any]:
    """The ``train.scheduler`` types BasicSR 1.4.2's ``setup_schedulers`` builds."""
    from basicsr.models import lr_scheduler
    return {'MultiStepLR': lr_scheduler.MultiStepRestartLR, 'MultiStepRestartLR': lr_scheduler.MultiStepRestartLR,
            'CosineAnnealingRestartLR': lr_scheduler.CosineAnnealingRestartLR}


def io_backends() -> Dict[str, Any]:
    from basicsr.utils.file_client import FileClient
    return dict(FileClient._backends)


def _table_family(kind: str, table: Callable[[], Dict[str, Any]], option: str) -> Family:
    def block(name: str) -> Optional[Block]:
        obj = table().get(name)
        return None if obj is None else _cached_block(kind, name, obj)

    def unknown(name: str, path: str) -> str:
        close = close_names(name, list(table()))
        return (f'{path}: {name!r} is not a {option}; ' + (f'did you mean {" or ".join(close)}? ' if close else '') +
                f'BasicSR builds {", ".join(table())}.')

    return Family(kind, lambda: list(table()), block, unknown)


OPTIMIZER = _table_family('optimizer', optimizers, 'supported optimizer')
SCHEDULER = _table_family('scheduler', schedulers, 'learning-rate scheduler BasicSR 1.4.2 builds')
IO_BACKEND = _table_family('io_backend', io_backends, 'file backend')


def _pipeline_modules() -> List[Any]:
    import basicsr.data
    import basicsr.models
    import basicsr.test
    import basicsr.train
    import basicsr.utils.options
    return [basicsr.train, basicsr.test, basicsr.utils.options, basicsr.data, basicsr.models]


@functools.lru_cache(maxsize=None)
def pipeline_reads(section: str) -> Dict[str, Any]:
    """Keys BasicSR's train/test pipeline and option parser read from ``section`` (``''``: the top level)."""
    return keys_read(_pipeline_modules(), CONTAINERS[section])


@functools.lru_cache(maxsize=None)
def loader_reads() -> Dict[str, Any]:
    """Keys BasicSR's data loader and training loop read from every dataset block."""
    return keys_read(_pipeline_modules(), ('dataset_opt', "opt['datasets']['train']"))


def catalogue_field(catalogue: Dict[str, Field], key: str, default: Any, reader: str) -> Field:
    """The catalogue's field for ``key``, or one made from what the code shows (``default``, read by ``reader``)."""
    if key in catalogue:
        return catalogue[key]
    default = None if default is REQUIRED else default  # whether another key stands in for it is not visible
    return Field(default_type(default), default, f'read by {reader}')


def dataset_block(name: str, cls: Any) -> Block:
    """A dataset type's block: the keys its class reads, those BasicSR's loader reads, and the plugin's."""
    fields = {key: catalogue_field(DATASET, key, default, 'the data loader') for key, default in loader_reads().items()}
    for key, default in keys_read([cls], DATASET_CONTAINERS).items():
        fields.setdefault(key, catalogue_field(DATASET, key, default, name))
    fields.update(PLUGIN_DATASET)
    fields['type'] = Field('str', None, name)
    fields['io_backend'] = Field('dict', None, DATASET['io_backend'].description, family=IO_BACKEND)
    for key in ('phase', 'scale'):
        fields[key] = DATASET[key]
    unchecked = ''
    if not own_code(cls) or not source_readable(cls):
        unchecked = f'{name} is not a BasicSR or dckd-basicsr dataset; the keys its code reads are not all visible'
    return Block(name, fields, unchecked=unchecked, list_accepted=False,
                 hint=f'dckd-train --explain {name} lists them.', module=cls.__module__)


# ---------------------------------------------------------------------------------------------- the option file
def model_reads(cls: Any, section: str) -> Dict[str, Any]:
    keys = keys_read([cls], CONTAINERS[section], ('train_option', ) if section == 'train' else ())
    if section == '':  # train_option reads the authors' keys at the top level too
        keys.update((k, None) for k in keys_read([cls], (), ('train_option', )))
    return keys


@functools.lru_cache(maxsize=None)
def reads_of(cls: Any, section: str) -> Dict[str, Field]:
    """The fields ``section`` has for model class ``cls``: what the pipeline reads, what ``cls`` reads, and the
    catalogue's declared reads of the plugin for a class in ``cls``'s MRO."""
    catalogue = SECTIONS[section]
    mro = {klass.__name__ for klass in cls.__mro__}
    reader = cls.__name__
    fields = {key: catalogue_field(catalogue, key, default, 'BasicSR') for key, default in
              pipeline_reads(section).items()
              if not (section == 'path' and any(re.fullmatch(pattern, key) for pattern, _ in PATH_PATTERNS))}
    for key, default in model_reads(cls, section).items():
        if section == 'path' and any(re.fullmatch(pattern, key) for pattern, _ in PATH_PATTERNS):
            continue  # path.pretrain_network_<net> & co: the patterns describe them
        if section == '' and key not in catalogue and key in TRAIN and TRAIN[key].top_level:
            fields.setdefault(key, TRAIN[key])  # the authors' keys, read by train_option at the top level too
        fields.setdefault(key, catalogue_field(catalogue, key, default, reader))
    for key, models in plugin_reads()[section].items():
        if mro & set(models):
            fields.setdefault(key, catalogue[key] if key in catalogue else Field(description=f'read by {reader}'))
    for key, f in catalogue.items():
        if f.computed:
            fields.setdefault(key, f)
    if section == '':
        for key, f in reads_of(cls, 'train').items():
            if f.top_level:
                fields.setdefault(key, f)
    return fields


def wire(section: str, key: str, f: Field, loss_extra: Dict[str, Tuple[str, ...]]) -> Field:
    """Attach the nested block or family a key's value is checked against."""
    from dataclasses import replace
    if (section, key) in NESTED:
        return replace(f, block=NESTED[(section, key)])
    if section == '' and key.startswith('network_') and 'dict' in f.type.split('|'):
        return replace(f, family=NETWORK)
    if section == '' and key == 'datasets':
        return replace(f, block=Block('datasets', entries=Field('dict', None, 'a dataset block',
                                                                 family=DATASET_FAMILY)))
    if key.endswith('_opt') and (section == 'train' or f.top_level):
        extra = tuple((name, Field('list', None, f'read by the model ({key})'))
                      for name in loss_extra.get(key, ()))
        return replace(f, type='dict', family=LOSS, extra=extra)
    if section == 'train' and key in ('optim_g', 'optim_d'):
        return replace(f, family=OPTIMIZER)
    if section == 'train' and key == 'scheduler':
        return replace(f, family=SCHEDULER)
    if section == 'val' and key == 'metrics':
        return replace(f, block=Block('val.metrics', entries=Field('dict', None, 'a metric block', family=METRIC)))
    return f


def model_loss_keys(classes: Iterable[Any]) -> Dict[str, Tuple[str, ...]]:
    from dckd_basicsr.distill.loss_terms import model_read_keys
    keys: Dict[str, Tuple[str, ...]] = {}
    for cls in classes:
        for option, names in model_read_keys(getattr(cls, 'LOSS_TERMS', ())).items():
            keys[option[len('train.'):]] = tuple(dict.fromkeys(keys.get(option[len('train.'):], ()) + names))
    return keys


def known_models() -> Dict[str, Any]:
    from basicsr.utils.registry import MODEL_REGISTRY
    return {name: cls for name, cls in MODEL_REGISTRY if own_code(cls)}


def readers(section: str, key: str) -> List[str]:
    """The most general known model classes whose ``section`` has ``key`` (their subclasses and aliases left out)."""
    classes = [cls for cls in known_models().values() if key in reads_of(cls, section)]
    return sorted({cls.__name__ for cls in classes if not any(other in cls.__mro__[1:] for other in classes)})


def unknown_in_section(section: str, model: str) -> Callable[[str, str], Optional[str]]:
    """Messages for a key of ``section`` the model does not read: retired keys, ``*_opt`` blocks no model reads,
    keys other models read."""
    def message(key: str, path: str) -> Optional[str]:
        if section == 'train' and key in RETIRED_TRAIN:
            return f'{path}: {RETIRED_TRAIN[key]}'
        others = [name for name in readers(section, key) if name != model]
        if others:
            return (f'{path}: {model} does not read this key ({", ".join(others[:4])} '
                    f'{"does" if len(others) == 1 else "do"}); use one of those model_type values or remove it.')
        if section == 'train' and key.endswith('_opt'):
            names = [name for name in reads_of_model(model, section) if name.endswith('_opt')]
            close = close_names(key, names)
            return (f'{path}: no model reads this block; ' +
                    (f'did you mean {" or ".join(close)}?' if close else f'{model} reads {", ".join(names)}.'))
        return None
    return message


def reads_of_model(model: str, section: str) -> List[str]:
    from basicsr.utils.registry import MODEL_REGISTRY
    cls = registered(MODEL_REGISTRY, model)
    return list(reads_of(cls, section)) if cls is not None else []


def section_block(cls: Any, section: str, title: str, fields: Dict[str, Field], checked: bool) -> Block:
    loss_extra = model_loss_keys([cls])
    wired = {key: wire(section, key, f, loss_extra) for key, f in fields.items()}
    block = Block(title, wired, list_accepted=False, hint=EXPLAIN if section else '',
                  unknown_key=unknown_in_section(section, cls.__name__))
    if section == 'path':
        block.patterns = PATH_PATTERNS
    if not checked:
        block.unchecked = (f'{cls.__name__} is not a BasicSR or dckd-basicsr model; the keys its code reads are not '
                           'all visible')
    return block


@functools.lru_cache(maxsize=None)
def _model_root(cls: Any) -> Block:
    checked = own_code(cls)
    blocks = {section: section_block(cls, section, f"{cls.__name__}'s {section} block" if section else cls.__name__,
                                     reads_of(cls, section), checked) for section in SECTIONS}
    root = blocks['']
    for section in ('path', 'train', 'val', 'logger'):
        root.fields[section] = Field('dict', None, TOP[section].description, block=blocks[section])
    if not checked:
        root.unchecked = blocks['train'].unchecked
    root.fields.setdefault('dist_params', wire('', 'dist_params', TOP['dist_params'], {}))
    return root


class AnyModel:
    """Stands for "any known model" in :func:`union_root`."""


@functools.lru_cache(maxsize=None)
def union_root() -> Block:
    """The option file of any known model: every key some BasicSR or plugin model reads (``--explain`` without a
    file, the JSON Schema)."""
    models = list(known_models().values())
    sections = {}
    for section in SECTIONS:
        fields: Dict[str, Field] = {}
        for cls in models:
            for key, f in reads_of(cls, section).items():
                fields.setdefault(key, f)
        loss_extra = model_loss_keys(models)
        wired = {key: wire(section, key, f, loss_extra) for key, f in fields.items()}
        title = f'the {section} block' if section else 'the option file'
        sections[section] = Block(title, wired, list_accepted=False, hint=EXPLAIN if section else '',
                                  patterns=PATH_PATTERNS if section == 'path' else ())
        if section == 'train':
            sections[section].unknown_key = retired_or_none
    root = sections['']
    for section in ('path', 'train', 'val', 'logger'):
        root.fields[section] = Field('dict', None, TOP[section].description, block=sections[section])
    root.fields.setdefault('dist_params', wire('', 'dist_params', TOP['dist_params'], {}))
    return root


def retired_or_none(key: str, path: str) -> Optional[str]:
    if key in RETIRED_TRAIN:
        return f'{path}: {RETIRED_TRAIN[key]}'
    if key.endswith('_opt'):
        close = close_names(key, [name for name in union_root().fields['train'].block.fields if name.endswith('_opt')])
        return f'{path}: no model reads this block' + (f'; did you mean {" or ".join(close)}?' if close else '.')
    return None


def option_root(opt: Dict[str, Any]) -> Block:
    """The schema of ``opt``: its ``model_type``'s blocks, or :func:`union_root` when it names no registered model
    (that error is reported on its own)."""
    from basicsr.utils.registry import MODEL_REGISTRY
    model_type = opt.get('model_type')
    cls = registered(MODEL_REGISTRY, model_type) if isinstance(model_type, str) else None
    return union_root() if cls is None else _model_root(cls)


def schema_document(own_only: bool = True) -> Dict[str, Any]:
    """The JSON Schema of an option file (:func:`union_root`): with ``own_only`` the types of BasicSR and the plugin,
    as shipped in :data:`SCHEMA_FILE`; else every type registered now (third-party plugins imported)."""
    return json_schema(union_root(), SCHEMA_TITLE, OWN_MODULES if own_only else ())


def schema_text(own_only: bool = True) -> str:
    return json.dumps(schema_document(own_only), indent=1) + '\n'


def write_schema(path: str = SCHEMA_FILE, own_only: bool = True) -> str:
    with open(path, 'w') as f:
        f.write(schema_text(own_only))
    return path


