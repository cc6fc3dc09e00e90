"""A yes or no where a profile wants a number: pydantic and useq take ``true`` for 1, so that
``exposure_ms: true`` ran a session at 1 ms. Profiles check for it with these."""
from __future__ import annotations

import math
import types
import typing
from typing import Any


def is_number_type(annotation: Any) -> bool:
    """float or int, or an optional one, or a tuple or list of them (``focus.limits``, ``plan.z.absolute``)."""
    if annotation in (int, float):
        return True
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return is_number_type(typing.get_args(annotation)[0])
    if origin not in (tuple, list, typing.Union, types.UnionType):
        return False
    args = [arg for arg in typing.get_args(annotation) if arg not in (type(None), Ellipsis)]
    return bool(args) and all(is_number_type(arg) for arg in args)


def yes_or_no_in(value: Any) -> bool | None:
    """The bool that ``value`` is or holds (in a list or tuple), else None."""
    for item in value if isinstance(value, (list, tuple)) else (value,):
        if isinstance(item, bool):
            return item
    return None


def check_no_yes_or_no(value: Any, annotation: Any) -> None:
    """A ValueError where ``value`` is or holds a yes or no and ``annotation`` wants numbers."""
    found = yes_or_no_in(value)
    if found is not None and is_number_type(annotation):
        raise ValueError(f"expected a number, got {str(found).lower()}")


def check_finite(value: Any) -> None:
    """A ValueError where ``value`` is or holds an infinite number or NaN (YAML's .inf, .nan)."""
    for item in value if isinstance(value, (list, tuple)) else (value,):
        if isinstance(item, float) and not math.isfinite(item):
            raise ValueError(f"Input should be a finite number, got {item}")
