"""Tolerant access to user-written config: a malformed field is skipped, never a crash."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def mapping(value: Any) -> Mapping[str, Any]:
    """``value`` when it is a mapping, else an empty one."""
    return value if isinstance(value, Mapping) else {}


def mappings(value: Any) -> list[Mapping[str, Any]]:
    """The mapping items of a list field; anything else in it is ignored."""
    return [item for item in value if isinstance(item, Mapping)] if isinstance(value, list) else []
