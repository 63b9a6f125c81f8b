"""Prometheus's HTTP API (``/api/v1/query``, ``/api/v1/query_range``), bounded in time, series and bytes.

Built on ``commands.clients.http.HttpEndpoint`` (the one module that imports httpx), so the same
timeout, streamed body cap, bearer token and CA file apply.  Every question names its ``purpose``
(``failing edges``, ``istiod memory``): errors say what could not be seen, and the demo's captured
answers are files named after it (``CapturedPrometheus``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from commands.clients.http import HttpEndpoint
from commands.errors import ClusterError, InputError, TransientError

DEFAULT_TIMEOUT = 5.0
DEFAULT_MAX_SERIES = 500
DEFAULT_MAX_BODY = 16 * 1024 * 1024
MAX_RANGE = timedelta(hours=24)
# Prometheus refuses a range query of more than 11,000 points per series (web/api/v1/api.go queryRange:
# "exceeded maximum resolution of 11,000 points per timeseries"); far fewer are enough for an onset.
MAX_POINTS = 1000


@dataclass(frozen=True)
class Series:
    """One answer series: its labels and (unix seconds, value) points; NaN and ±Inf are dropped."""

    labels: Mapping[str, str]
    points: tuple[tuple[float, float], ...]

    @property
    def last(self) -> float | None:
        return self.points[-1][1] if self.points else None


class TooManySeries(ClusterError):
    """Prometheus answered more series than the caller allows: the question was too broad."""

    def __init__(self, purpose: str, count: int, limit: int, endpoint: str):
        self.count, self.limit, self.purpose = count, limit, purpose
        super().__init__(f"{count} series for {purpose}, more than the {limit} meshbot reads", endpoint=endpoint,
                         reason=f"{count} series (limit {limit})")


class PrometheusApi(Protocol):
    """What the telemetry code asks of a Prometheus: the live one or the demo's captured answers."""

    url: str

    def query(self, promql: str, at: datetime, *, purpose: str) -> list[Series]: ...

    def query_range(self, promql: str, start: datetime, end: datetime, step: timedelta, *,
                    purpose: str) -> list[Series]: ...


class PrometheusClient:
    """A Prometheus server's query API; answers are typed ``Series``, failures meshbot errors."""

    def __init__(self, url: str, *, timeout: float = DEFAULT_TIMEOUT, bearer_token: str | None = None,
                 bearer_token_file: str | None = None, ca_file: str | None = None,
                 max_series: int = DEFAULT_MAX_SERIES, max_body: int = DEFAULT_MAX_BODY,
                 endpoint: HttpEndpoint | None = None):
        self.endpoint = endpoint or HttpEndpoint(url, timeout=timeout, bearer_token=bearer_token,
                                                 bearer_token_file=bearer_token_file, ca_file=ca_file,
                                                 max_body=max_body, keep_client=True)
        self.url = self.endpoint.url
        self.timeout = timeout
        self.max_series = max_series

    def close(self) -> None:
        self.endpoint.close()

    def query(self, promql: str, at: datetime, *, purpose: str) -> list[Series]:
        """An instant query evaluated at ``at``."""
        return self._ask("api/v1/query", {"query": promql, "time": _unix(at)}, purpose)

    def query_range(self, promql: str, start: datetime, end: datetime, step: timedelta, *,
                    purpose: str) -> list[Series]:
        """A range query; the range is capped at ``MAX_RANGE`` (its end kept) and the step widened to at most
        ``MAX_POINTS`` points per series."""
        start = max(start, end - MAX_RANGE)
        seconds = max(step.total_seconds(), (end - start).total_seconds() / MAX_POINTS, 1.0)
        return self._ask("api/v1/query_range", {"query": promql, "start": _unix(start), "end": _unix(end),
                                                "step": f"{seconds:g}"}, purpose)

    def _ask(self, path: str, params: dict[str, str], purpose: str) -> list[Series]:
        # Prometheus stops evaluating at its own ``timeout`` parameter, so a heavy query frees the server too;
        # meshbot's HTTP timeout (a little longer) still bounds the wait when the server does not answer at all.
        params["timeout"] = f"{max(int(self.timeout * 1000) - 500, 500)}ms"  # whole units: Prometheus durations
        try:
            answer = self.endpoint.get_json(path, params)
        except ClusterError as exc:
            # 400 bad_data / 422 execution: Prometheus refused the PromQL (web/api/v1/api.go returnAPIError).
            if exc.status in (400, 422):
                raise ClusterError(f"Prometheus refused the query for {purpose} (HTTP {exc.status})",
                                   status=exc.status, endpoint=exc.endpoint, reason="query refused") from None
            raise
        return self._series(answer, purpose)

    def _series(self, answer: Any, purpose: str) -> list[Series]:
        result = _result(answer, self.url, purpose)
        if len(result) > self.max_series:
            raise TooManySeries(purpose, len(result), self.max_series, self.url)
        return [_one_series(item) for item in result]


class CapturedPrometheus:
    """Answers recorded from a Prometheus, one file per purpose (``failing-edges.json``), for the demo.

    Each file holds the JSON a real ``/api/v1/query(_range)`` answered; a purpose with no file answers
    no series, as a Prometheus without that metric would.
    """

    def __init__(self, directory: str | Path, *, max_series: int = DEFAULT_MAX_SERIES):
        self.directory = Path(directory)
        self.url = str(self.directory)
        self.max_series = max_series

    def query(self, promql: str, at: datetime, *, purpose: str) -> list[Series]:
        return self._answer(purpose)

    def query_range(self, promql: str, start: datetime, end: datetime, step: timedelta, *,
                    purpose: str) -> list[Series]:
        return self._answer(purpose)

    def _answer(self, purpose: str) -> list[Series]:
        path = self.directory / f"{_file_name(purpose)}.json"
        if not path.exists():
            return []
        try:
            answer = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(f"not a Prometheus answer: {exc}", path=str(path)) from None
        result = _result(answer, str(path), purpose)
        if len(result) > self.max_series:
            raise TooManySeries(purpose, len(result), self.max_series, str(path))
        return [_one_series(item) for item in result]


def _file_name(purpose: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", purpose.lower()).strip("-")


def _unix(moment: datetime) -> str:
    return f"{moment.timestamp():.3f}"


def _result(answer: Any, endpoint: str, purpose: str) -> list[dict[str, Any]]:
    """The ``data.result`` list of a successful answer (vector or matrix)."""
    if not isinstance(answer, dict) or answer.get("status") != "success":
        error = answer.get("error") if isinstance(answer, dict) else None
        raise TransientError(f"Prometheus did not answer the query for {purpose}: {error or 'no success status'}",
                             endpoint=endpoint)
    data = answer.get("data") or {}
    if data.get("resultType") not in ("vector", "matrix"):
        raise TransientError(f"Prometheus answered {data.get('resultType')!r} for {purpose}, not a vector or "
                             "matrix", endpoint=endpoint)
    result = data.get("result") or []
    return [item for item in result if isinstance(item, dict)]


def _one_series(item: dict[str, Any]) -> Series:
    raw = item.get("values") or ([item["value"]] if item.get("value") else [])
    points = []
    for stamp, text in raw:
        value = float(text)
        if math.isfinite(value):  # 0/0 is NaN: an edge with no traffic at that step has no ratio
            points.append((float(stamp), value))
    return Series(labels=dict(item.get("metric") or {}), points=tuple(points))
