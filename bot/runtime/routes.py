"""The shape of an HTTP route in meshbot's small WSGI app (shared by the features that add routes)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

Answer = tuple[int, dict[str, str], bytes]
Route = Callable[[dict, bytes], Answer]
"""(WSGI environ, request body) -> (status, headers, body)."""


def json_answer(status: int, data: Any) -> Answer:
    return status, {"Content-Type": "application/json"}, json.dumps(data).encode()
