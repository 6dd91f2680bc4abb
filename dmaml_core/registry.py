"""Build a named thing from a registry of constructors, with the errors a user can act on."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

T = TypeVar("T")


def build(kind: str, registry: Mapping[str, Callable[..., T]], name: str, params: Any) -> T:
    """``registry[name](**params)``; an unknown name lists the known ones, and a parameter the
    constructor does not take becomes a ``ValueError`` naming ``kind`` and ``name``."""
    if name not in registry:
        raise ValueError(f"unknown {kind} {name!r}; known: {', '.join(sorted(registry))}")
    try:
        return registry[name](**params)
    except TypeError as err:  # an unknown parameter name
        raise ValueError(f"bad parameters for {kind} {name!r}: {err}") from None
