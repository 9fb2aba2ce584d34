"""The base of every workload config: unknown keys and wrongly typed values are errors.

Scalars are taken strictly where pydantic's lax mode would convert between kinds: `true` is no integer, `1` no
flag and `"3"` no number (pydantic would read them as 1, True and 3). An integer is still a number for a float field
(`lr: 1`), and a list still a tuple. `strict_scalars` is the check, for other models to share.
"""

from __future__ import annotations

import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

_SCALARS = (bool, int, float, str)
# The error types spec.py (and pydantic) describe in words: "an integer", "a number", "true or false", "a string".
_ERROR = {
    int: ("int_type", "Input should be a valid integer"),
    float: ("float_type", "Input should be a valid number"),
    bool: ("bool_type", "Input should be a valid boolean"),
    str: ("string_type", "Input should be a valid string"),
}


def _scalar_kinds(annotation: Any) -> set[type]:
    """The scalar types an annotation takes at its top level, through unions, Optional, Annotated and Literal."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _scalar_kinds(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return set().union(*(_scalar_kinds(arg) for arg in get_args(annotation)))
    if origin is Literal:
        return {type(value) for value in get_args(annotation) if isinstance(value, _SCALARS)}
    return {annotation} if annotation in _SCALARS else set()


def _literals(annotation: Any) -> list[Any]:
    """The values of a Literal annotation (through Optional and Annotated); [] for any other."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _literals(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        args = [arg for arg in get_args(annotation) if arg is not type(None)]
        return _literals(args[0]) if len(args) == 1 else []
    return list(get_args(annotation)) if origin is Literal else []


def _fits(kinds: set[type], value: Any) -> bool:
    if isinstance(value, bool):
        return bool in kinds
    if isinstance(value, (int, float)):
        return bool(kinds & {int, float})
    if isinstance(value, str):
        return str in kinds
    return True  # anything else (None, numpy scalars, mappings) is pydantic's to judge


def _members(annotation: Any) -> list[Any]:
    """The annotations a container's elements may have: list[X], set[X], tuple[X, ...], tuple[X, Y], dict[K, V] (V),
    through unions and Annotated."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _members(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return [member for arg in get_args(annotation) for member in _members(arg)]
    args = [arg for arg in get_args(annotation) if arg is not Ellipsis]
    if origin in (list, set, frozenset, tuple):
        return args
    if origin is dict and len(args) == 2:
        return [args[1]]
    return []


def strict_scalars(annotation: Any, value: Any) -> None:
    """Raise a pydantic error when `value` (or an element of it, for a list, tuple or mapping) is a scalar of
    another kind than `annotation` takes: a flag for a number, a number for a flag, text for either or the reverse."""
    kinds = _scalar_kinds(annotation)
    if kinds and not _fits(kinds, value):
        options = _literals(annotation)
        if options:  # as pydantic words a Literal's error: "Input should be 'tb' or 'vargrad'"
            expected = " or ".join(repr(option) for option in options)
            raise PydanticCustomError("literal_error", "Input should be {expected}", {"expected": expected})
        expected = next(kind for kind in (float, int, bool, str) if kind in kinds)
        raise PydanticCustomError(*_ERROR[expected])
    if isinstance(value, (list, tuple, set, frozenset, dict)):
        members = _members(annotation)
        if len(members) == 1 or (get_origin(annotation) is tuple and len(members) == len(value)):
            items = value.values() if isinstance(value, dict) else value
            for i, item in enumerate(items):
                strict_scalars(members[0] if len(members) == 1 else members[i], item)


class StrictConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @field_validator("*", mode="before")
    @classmethod
    def _strict_scalars(cls, value: Any, info: ValidationInfo) -> Any:
        strict_scalars(cls.model_fields[info.field_name].annotation, value)
        return value
