"""Reference tables of the typed configs, generated from their field declarations.

Every field says what it is (its ``description``) where it is declared; the docs are rendered from
those declarations (``python -m sweeps.config_doc``), so they cannot go stale, and a field without a
description is an error here rather than a silent hole in the docs.
"""

from __future__ import annotations

import json
import types
import typing
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The config models an annotation holds (``X``, ``X | None``, ``dict[str, X]``), each once."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found = [m for arg in typing.get_args(annotation) for m in _models_in(arg)]
    return list(dict.fromkeys(found))


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__name__
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " \\| ".join(str(a) for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join("null" if a is type(None) else _type_name(a) for a in typing.get_args(annotation))
    args = ", ".join(_type_name(a) for a in typing.get_args(annotation))
    return f"{getattr(origin, '__name__', str(origin))}[{args}]"


def _default(field) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "required"
    value = field.default_factory() if field.default_factory is not None else field.default
    if isinstance(value, BaseModel):
        return "its fields' defaults"
    return f"`{value}`" if isinstance(value, str) else f"`{json.dumps(value, default=str)}`"  # as YAML spells it


def field_rows(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str, str, str]]:
    """``(dotted key, type, default, description)`` for every field of ``model`` and of the config
    models nested in it, depth first. Raises ValueError naming any field without a description."""
    rows = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{field.alias or name}"  # as YAML spells it (``from``, a Python keyword)
        if not field.description:
            raise ValueError(f"{model.__name__}.{name} ({key}) has no description: add Field(description=...)")
        nested = _models_in(field.annotation)
        type_name = "mapping" if nested else _type_name(field.annotation)
        rows.append((key, type_name, _default(field), field.description))
        for sub in nested:
            sub_prefix = f"{key}.<name>." if typing.get_origin(field.annotation) is dict else f"{key}."
            rows += field_rows(sub, sub_prefix)
    return rows


def markdown_table(model: type[BaseModel], prefix: str = "") -> str:
    lines = ["| key | type | default | what it is |", "| --- | --- | --- | --- |"]
    for key, type_name, default, description in field_rows(model, prefix):
        escaped = description.replace("|", "\\|")  # a table cell: pipes escaped
        lines.append(f"| `{key}` | {type_name} | {default} | {escaped} |")
    return "\n".join(lines) + "\n"
