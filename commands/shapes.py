"""Tolerant access to user-written config: a malformed field is skipped, never a crash."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def mapping(value: Any) -> Mapping[str, Any]:
    """``value`` when it is a mapping, else an empty one."""
    # Exact-type tests first: decoded objects are plain dicts, absent fields None, and the ABC check costs ten times
    # as much (hundreds of thousands of calls on a large mesh).
    if type(value) is dict:
        return value
    return value if value is not None and isinstance(value, Mapping) else {}


def mappings(value: Any) -> list[Mapping[str, Any]]:
    """The mapping items of a list field; anything else in it is ignored."""
    if not isinstance(value, list):
        return []
    return [item for item in value if type(item) is dict or isinstance(item, Mapping)]
