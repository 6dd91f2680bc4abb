"""Build a named thing from a registry of constructors, with the errors a user can act on."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Literal, TypeVar, Union

from dmaml_core.plugins import resolve

T = TypeVar("T")


def build(kind: str, registry: Mapping[str, Callable[..., T]], name: str, params: Any) -> T:
    """``registry[name](**params)``, or the plug-in ``name`` stands for (dmaml_core/plugins.py);
    an unknown name lists the known ones, and a parameter the
    constructor does not take, or of the wrong type, becomes a ``ValueError`` naming ``kind`` and
    ``name``. Dataclass fields are type-checked against their annotations first (TOML gives
    ``2.5`` for an int field or a list for a tuple), so a bad value fails here, not mid-run."""
    constructor = resolve(kind, name, registry)  # a built-in, module:Class or an entry point
    if dataclasses.is_dataclass(constructor) and isinstance(constructor, type):
        params = checked_params(kind, name, constructor, dict(params))
    try:
        return constructor(**params)
    except TypeError as err:  # an unknown parameter name
        raise ValueError(f"bad parameters for {kind} {name!r}: {err}") from None


def checked_params(kind: str, name: str, cls: type, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` with lists turned into tuples where a field is a tuple, after checking every
    value against its field's annotation; unknown names are left for the constructor to refuse."""
    try:
        hints = typing.get_type_hints(cls)
    except (NameError, TypeError) as err:  # e.g. a name imported only under TYPE_CHECKING
        raise ValueError(
            f"bad parameters for {kind} {name!r}: cannot read the field annotations of "
            f"{cls.__qualname__} ({err})"
        ) from None
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    out = dict(params)
    for key, value in params.items():
        if key not in fields:
            continue
        ok, coerced = _conforms(value, hints[key])
        if not ok:
            raise ValueError(
                f"bad parameters for {kind} {name!r}: {key} must be {_describe(hints[key])}, "
                f"got {value!r}"
            )
        out[key] = coerced
    return out


def _conforms(value: Any, hint: Any) -> tuple[bool, Any]:
    """(whether ``value`` fits ``hint``, the value with lists made tuples); unknown hints pass."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return True, value
    if hint is type(None):
        return value is None, value
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in args), value
    if origin in (Union, types.UnionType):
        for arg in args:
            ok, coerced = _conforms(value, arg)
            if ok:
                return True, coerced
        return False, value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            return False, value
        items = list(value)
        if len(args) == 2 and args[1] is Ellipsis:
            item_hints = [args[0]] * len(items)
        elif len(args) != len(items):
            return False, value
        else:
            item_hints = list(args)
        checked = [_conforms(v, h) for v, h in zip(items, item_hints, strict=True)]
        return all(ok for ok, _ in checked), tuple(c for _, c in checked)
    if hint is bool:
        return type(value) is bool, value
    if hint is int:
        return type(value) is int, value
    if hint is float:
        if type(value) is int:
            return True, float(value)
        return type(value) is float, value
    if hint is str:
        return isinstance(value, str), value
    return True, value


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is type(None):
        return "None"
    if origin is Literal:
        return "one of " + ", ".join(map(repr, args))
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_PLURAL.get(args[0], _describe(args[0]))}"
        return f"a list of {len(args)} {_PLURAL.get(args[0], 'values')}"
    return _NAMES.get(hint, str(hint))


_NAMES: dict[Any, str] = {
    int: "an integer",
    float: "a number",
    bool: "true or false",
    str: "a string",
}
_PLURAL: dict[Any, str] = {int: "integers", float: "numbers", bool: "booleans", str: "strings"}
