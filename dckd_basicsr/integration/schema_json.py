"""The option schema as a JSON Schema (draft 2020-12), for editors' YAML extensions: the same :class:`Block` tree
:func:`~.option_schema.check` walks, one ``if``/``then`` branch per ``type`` value of a family, each family's blocks
in ``$defs`` once. :func:`dckd_basicsr.integration.schema_blocks.write_schema` writes the shipped file.
"""
from dataclasses import replace
from typing import Any, Dict, Tuple

from dckd_basicsr.integration.option_schema import Block, Field, json_value
from dckd_basicsr.integration.schema_sources import REQUIRED

# The JSON Schema type of each of the schema's types.
JSON_TYPES = {'int': 'integer', 'count': 'integer', 'float': 'number', 'bool': 'boolean', 'str': 'string',
              'list': 'array', 'dict': 'object'}


class JsonSchemaWriter:
    """Writes a :class:`Block` tree as a JSON Schema; each family's blocks go into ``$defs`` once. ``modules``: the
    ``type``-selected blocks written are those derived from these module prefixes (all when empty)."""

    def __init__(self, modules: Tuple[str, ...] = ()):
        self.defs: Dict[str, Any] = {}
        self.modules = modules

    def field_schema(self, f: Field) -> Dict[str, Any]:
        schema: Dict[str, Any] = {}
        if f.family is not None:
            schema.update(self.family_schema(f))
        elif f.block is not None:
            schema.update(self.block_schema(f.block))
        if f.description:
            schema['description'] = f.description
        if f.default is not REQUIRED and f.default is not None and json_value(f.default) is not None:
            schema['default'] = json_value(f.default)
        if f.type != 'any':
            types = list(dict.fromkeys(JSON_TYPES[part] for part in f.type.split('|')))
            if 'number' in types and 'integer' in types:
                types.remove('integer')
            if f.choices:
                others = [t for t in types if t != 'string']
                choices = {'enum': list(f.choices)}
                schema['anyOf'] = [{'type': others + ['null']}, choices] if others else [{'type': 'null'}, choices]
            else:
                schema['type'] = types + ['null']
        return schema

    def family_schema(self, f: Field) -> Dict[str, Any]:
        family = f.family
        names, branches = [], []
        for name in sorted(family.names()):
            block = family.block(name)
            if block is None or (self.modules and not block.module.startswith(self.modules)):
                continue
            names.append(name)
            if f.extra:
                then = self.block_schema(replace(block, fields={**block.fields, **dict(f.extra)}))
            else:
                ref = f'{family.name}.{name}'
                if ref not in self.defs:
                    self.defs[ref] = {}  # reserved before recursing
                    self.defs[ref] = self.block_schema(block)
                then = {'$ref': f'#/$defs/{ref}'}
            branches.append({'if': {'type': 'object', 'properties': {'type': {'const': name}}, 'required': ['type']},
                             'then': then})
        schema: Dict[str, Any] = {'properties': {'type': {'description': f'the {family.name} type', 'enum': names}},
                                  'allOf': branches}
        if family.default_type is None:
            schema['required'] = ['type']
        return schema

    def block_schema(self, block: Block) -> Dict[str, Any]:
        schema: Dict[str, Any] = {'type': 'object'}
        if block.entries is not None:
            schema['additionalProperties'] = self.field_schema(block.entries)
            return schema
        schema['properties'] = {name: self.field_schema(f) for name, f in block.fields.items() if not f.computed}
        required = [name for name, f in block.fields.items() if f.required and not f.computed and not f.for_training]
        if required:
            schema['required'] = required
        if block.patterns:
            schema['patternProperties'] = {f'^{pattern}$': self.field_schema(f) for pattern, f in block.patterns}
        if not block.unchecked:
            schema['additionalProperties'] = False
        return schema


def json_schema(root: Block, title: str, modules: Tuple[str, ...] = ()) -> Dict[str, Any]:
    """The JSON Schema (draft 2020-12) of ``root``; ``modules``: see :class:`JsonSchemaWriter`."""
    writer = JsonSchemaWriter(modules)
    body = writer.block_schema(root)
    body['type'] = 'object'
    schema = {'$schema': 'https://json-schema.org/draft/2020-12/schema', 'title': title}
    schema.update(body)
    schema['$defs'] = dict(sorted(writer.defs.items()))
    return schema
