"""Where a pydantic error is, read from the validators pydantic built (the model's core schema).

A location such as ``('mda', 'time_plan', 'TIntervalLoops', 'loops')`` mixes keys with the tags by which pydantic
names a union's member (``TIntervalLoops``, ``constrained-int``, ``function-after[_validate_startat(),
RandomPoints]``). Their spelling does not tell them apart: a device label (``micromanager.properties.Camera``) is a
capitalised key, and a tag may be lowercase. Where they sit does: a part that follows a union and names one of its
members (as pydantic names it) is a tag; every other part is a key, an item's index, or a dict key's ``[key]``.
"""
from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

from pydantic import BaseModel
from pydantic_core import SchemaValidator

_UNIONS = ("union", "tagged-union")
# The nodes that hold keys, items or members; any other node wraps one inner schema (validators, defaults, models).
_HOLDERS = (*_UNIONS, "model-fields", "typed-dict", "dataclass-args", "list", "set", "frozenset", "tuple", "dict",
            "generator")
_WRAPPED_UNDER = ("schema", "python_schema", "lax_schema", "strict_schema")
_KEY_MARKER = "[key]"   # pydantic's mark that a dict's key, not its value, is wrong
# How many item levels (a list's, a union member's) a key is looked for under when a validator of the library's
# own (useq's channels, stage_positions) validated its items itself and its errors leave their index out.
_ITEM_LEVELS_SKIPPED = 3


@dataclass(frozen=True)
class ErrorLocation:
    """One error's location: its key path (tags left out), and each union it passes through with the member's tag
    there (the location up to the union, and the tag), outermost first."""

    keys: tuple[str | int, ...]
    members: tuple[tuple[tuple, str], ...]


def read_location(model: type[BaseModel], location: tuple) -> ErrorLocation:
    """``location`` (an error's ``loc``) in ``model``, split into its key path and its union-member tags."""
    flags = _walk(model, location)[0]
    return ErrorLocation(keys=tuple(part for part, is_tag in zip(location, flags) if not is_tag),
                         members=tuple((tuple(location[:at]), location[at])
                                       for at, is_tag in enumerate(flags) if is_tag))


def keys_allowed_at(model: type[BaseModel], location: tuple) -> list[str] | None:
    """The field names of the one model at ``location`` (for an unknown key's message); None where it is not
    one model's."""
    nodes = _walk(model, location)[1]
    if len(nodes) != 1 or nodes[0]["type"] != "model-fields":
        return None
    return sorted(nodes[0]["fields"])


def _walk(model: type[BaseModel], location: tuple) -> tuple[list[bool], list[dict]]:
    """Along ``location`` through ``model``'s schema: whether each part is a union-member tag, and the nodes where
    it ends. Where a part leads nowhere the schema knows, a later part is a tag if it is a member's name anywhere
    in the schema."""
    definitions = _definitions(model)
    nodes = _unwrapped([_schema_of(model)], definitions)
    flags = []
    for at, part in enumerate(location):
        unions = [node for node in nodes if node["type"] in _UNIONS]
        named = [member for union in unions for name, member in _members(union, definitions) if name == str(part)]
        if not nodes:
            flags.append(isinstance(part, str) and part in _member_names(model))
            continue
        flags.append(bool(named))
        following = location[at + 1] if at + 1 < len(location) else None
        nodes = _unwrapped(named, definitions) if named else _children_under_items(nodes, part, following,
                                                                                    definitions)
    return flags, nodes


def _schema_of(model: type[BaseModel]) -> dict:
    return cast(dict, model.__pydantic_core_schema__)


@functools.cache
def _member_names(model: type[BaseModel]) -> frozenset[str]:
    """The name of every member of every union in ``model``'s schema, as pydantic tags them."""
    definitions = _definitions(model)
    return frozenset(name for node in _nodes(_schema_of(model)) if node.get("type") in _UNIONS
                     for name, _ in _members(node, definitions))


@functools.cache
def _definitions(model: type[BaseModel]) -> dict[str, dict]:
    """The schemas that ``definition-ref`` nodes name, by ref (a model used twice is defined once)."""
    return {definition["ref"]: definition for node in _nodes(_schema_of(model)) if node.get("type") == "definitions"
            for definition in node["definitions"]}


def _nodes(node: Any) -> Iterator[dict]:
    """Every schema node (a dict) in ``node``, itself included, depth first."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _nodes(value)
    elif isinstance(node, list | tuple):
        for value in node:
            yield from _nodes(value)


def _members(union: dict, definitions: dict[str, dict]) -> list[tuple[str, dict]]:
    """A union's members, each with the tag pydantic gives its errors: a tagged union's tag, a member's label, or
    the name of the validator pydantic builds of it (a model's class name, ``constrained-int``, ...)."""
    if union["type"] == "tagged-union":
        return [(str(tag), schema) for tag, schema in union["choices"].items()]
    return [(str(choice[1]), choice[0]) if isinstance(choice, tuple) else (_validator_name(choice, definitions), choice)
            for choice in union["choices"]]


def _validator_name(schema: dict, definitions: dict[str, dict]) -> str:
    try:
        return SchemaValidator({"type": "definitions", "schema": schema,   # type: ignore[arg-type]
                                "definitions": list(definitions.values())}).title
    except Exception:  # noqa: BLE001 (a schema pydantic-core builds only in its place: no tag is known for it)
        return ""


def _unwrapped(nodes: list[dict], definitions: dict[str, dict]) -> list[dict]:
    """The nodes that hold keys, items or union members, under the validators and wrappers around them."""
    return [found for node in nodes for found in _unwrap(node, definitions, frozenset())]


def _unwrap(node: dict, definitions: dict[str, dict], seen: frozenset[str]) -> Iterator[dict]:
    kind = node.get("type")
    if kind == "definition-ref":
        ref = node["schema_ref"]
        if ref not in seen and ref in definitions:
            yield from _unwrap(definitions[ref], definitions, seen | {ref})
    elif kind == "chain":
        for step in node["steps"]:
            yield from _unwrap(step, definitions, seen)
    elif kind in _UNIONS and len(node["choices"]) == 1:   # (pydantic builds a union of one as that one)
        member = next(iter(node["choices"].values())) if kind == "tagged-union" else node["choices"][0]
        yield from _unwrap(member[0] if isinstance(member, tuple) else member, definitions, seen)
    elif kind in _HOLDERS:
        yield node
    else:
        for key in _WRAPPED_UNDER:
            if isinstance(node.get(key), dict):
                yield from _unwrap(node[key], definitions, seen)


def _children_under_items(nodes: list[dict], part: Any, following: Any, definitions: dict[str, dict]) -> list[dict]:
    """``_children``; where none, those of the nodes' items and union members, a few levels down (a library's
    validator that validated its items itself said their errors without their index or member)."""
    for _ in range(_ITEM_LEVELS_SKIPPED + 1):
        children = _unwrapped(_children(nodes, part, following), definitions)
        if children or not nodes:
            return children
        nodes = _unwrapped(_items_and_members(nodes, definitions), definitions)
    return []


def _items_and_members(nodes: list[dict], definitions: dict[str, dict]) -> list[dict]:
    found: list[dict] = []
    for node in nodes:
        if node["type"] in _UNIONS:
            found += [member for _, member in _members(node, definitions)]
        elif node["type"] in ("list", "set", "frozenset", "generator") and "items_schema" in node:
            found.append(node["items_schema"])
        elif node["type"] == "tuple":
            found += node["items_schema"]
        elif node["type"] == "dict" and "values_schema" in node:
            found.append(node["values_schema"])
    return found


def _children(nodes: list[dict], part: Any, following: Any) -> list[dict]:
    """What ``part`` leads to from each of ``nodes``: a field, a list's item, a dict's value (or, where
    ``following`` is pydantic's ``[key]``, the dict still, whose key ``[key]`` then leads to)."""
    children: list[dict] = []
    for node in nodes:
        kind = node["type"]
        if kind in ("model-fields", "typed-dict"):
            field = node["fields"].get(part) or next(
                (field for field in node["fields"].values() if field.get("validation_alias") == part), None)
            children += [field["schema"]] if field is not None else []
        elif kind == "dataclass-args":
            children += [field["schema"] for field in node["fields"] if field["name"] == part]
        elif kind in ("list", "set", "frozenset", "generator") and isinstance(part, int) and "items_schema" in node:
            children.append(node["items_schema"])
        elif kind == "tuple" and isinstance(part, int):
            items, variadic = node["items_schema"], node.get("variadic_item_index")
            at = part if variadic is None or part < variadic else variadic
            children += [items[at]] if at < len(items) else []
        elif kind == "dict" and part == _KEY_MARKER:
            children += [node["keys_schema"]] if "keys_schema" in node else []
        elif kind == "dict":
            children += [node] if following == _KEY_MARKER else \
                [node["values_schema"]] if "values_schema" in node else []
    return children
