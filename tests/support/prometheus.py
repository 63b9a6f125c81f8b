"""A real Prometheus (Debian ``prometheus`` 2.42) on a TSDB backfilled with Istio's standard metrics.

Series are written as OpenMetrics text with timestamps (one sample every ``SCRAPE`` seconds), turned
into TSDB blocks by ``promtool tsdb create-blocks-from openmetrics`` and served by ``prometheus`` on a free
loopback port with an empty scrape config, so queries see exactly the history the test wrote.  Metric
and label names are Istio's (https://istio.io/latest/docs/reference/config/metrics/).

Fixtures:
  ``mesh_prometheus``   session: the onset shapes, healthy traffic, a caller without a sidecar, TCP and
                        istiod trends (``SCENARIOS``), around ``ALERT_AT``.
  ``empty_prometheus``  session: a Prometheus with no Istio metrics at all.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest

from commands.cluster.snapshot import Snapshot
from tests.support import loopback
from tests.support.processes import stop_process

PROMETHEUS_MISSING = ("the real Prometheus is needed for these tests and `{binary}` was not found: "
                      "apt-get install -y prometheus")
ALERT_AT = datetime(2026, 12, 1, 10, 0, tzinfo=timezone.utc)
HISTORY_START = ALERT_AT - timedelta(minutes=60)
HISTORY_END = ALERT_AT + timedelta(minutes=10)
SCRAPE = 15
STARTUP_TIMEOUT = 20.0

Rate = Callable[[float], float]
"""Requests per second at a moment (seconds since HISTORY_START)."""


def minutes_before_alert(minutes: float) -> float:
    """Seconds since HISTORY_START of the moment ``minutes`` before ALERT_AT."""
    return (ALERT_AT - HISTORY_START).total_seconds() - minutes * 60


@dataclass
class OpenMetrics:
    """Counter and gauge histories grouped by metric family, as OpenMetrics wants them."""

    families: dict[str, list[str]] = field(default_factory=dict)

    def counter(self, name: str, labels: Mapping[str, str], rate: Rate, *, start: datetime = HISTORY_START,
                end: datetime = HISTORY_END) -> None:
        """A counter growing at ``rate`` per second, sampled every SCRAPE seconds."""
        value, lines = 0.0, self.families.setdefault(name, [])
        selector = _labels(labels)
        for offset in range(0, int((end - start).total_seconds()) + 1, SCRAPE):
            value += rate(offset) * SCRAPE
            lines.append(f"{name}{selector} {value:.3f} {start.timestamp() + offset:.0f}")

    def gauge(self, name: str, labels: Mapping[str, str], level: Rate) -> None:
        lines, selector = self.families.setdefault(name, []), _labels(labels)
        for offset in range(0, int((HISTORY_END - HISTORY_START).total_seconds()) + 1, SCRAPE):
            lines.append(f"{name}{selector} {level(offset):.3f} {HISTORY_START.timestamp() + offset:.0f}")

    def text(self) -> str:
        return "\n".join(line for lines in self.families.values() for line in lines) + "\n# EOF\n"


def _labels(labels: Mapping[str, str]) -> str:
    return "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


def edge_labels(reporter: str, source: tuple[str, str], destination: tuple[str, str], code: str,
                flags: str = "-", policy: str = "mutual_tls") -> dict[str, str]:
    """istio_requests_total's labels for one edge; ``source``/``destination`` are (namespace, workload)."""
    return {"reporter": reporter, "source_workload_namespace": source[0], "source_workload": source[1],
            "destination_workload_namespace": destination[0], "destination_workload": destination[1],
            "destination_service_name": destination[1], "response_code": code, "response_flags": flags,
            "connection_security_policy": policy if reporter == "destination" else "unknown",
            "request_protocol": "http"}


def requests(metrics: OpenMetrics, source: tuple[str, str], destination: tuple[str, str], *, ok: Rate,
             failed: Rate = lambda t: 0.0, code: str = "503", flags: str = "-",
             reporters: Iterable[str] = ("source", "destination")) -> None:
    """An edge's traffic as each reporter counts it: ``ok`` 200s and ``failed`` ``code`` answers per second."""
    for reporter in reporters:
        metrics.counter("istio_requests_total", edge_labels(reporter, source, destination, "200"), ok)
        metrics.counter("istio_requests_total", edge_labels(reporter, source, destination, code, flags), failed)


def step_at(moment: float, before: float, after: float) -> Rate:
    return lambda t: after if t >= moment else before


def ramp(start: float, end: float, top: float) -> Rate:
    return lambda t: 0.0 if t < start else top * min((t - start) / (end - start), 1.0)


def flapping(start: float, period: float, level: float) -> Rate:
    """``level`` in the first half of every ``period`` from ``start``, 0 in the second."""
    return lambda t: level if t >= start and int((t - start) // (period / 2)) % 2 == 0 else 0.0


def mesh_metrics() -> OpenMetrics:
    """Every scenario the telemetry tests read, each in its own namespace."""
    metrics = OpenMetrics()
    onset = minutes_before_alert(10)
    # step: 403s from frontend to payments begin 10 minutes before the alert, seen by both sidecars.
    requests(metrics, ("shop", "frontend"), ("shop", "payments"), ok=step_at(onset, 10.0, 5.0),
             failed=step_at(onset, 0.0, 5.0), code="403")
    # ramp: 503 UH from web to api grow from 15 to 5 minutes before the alert.
    requests(metrics, ("ramp", "web"), ("ramp", "api"), ok=lambda t: 10.0,
             failed=ramp(minutes_before_alert(15), minutes_before_alert(5), 10.0), flags="UH",
             reporters=("source",))
    # flapping: 503s for three minutes, then none for three, from 12 minutes before the alert (longer than
    # the 2m rate window, or rate() would smooth the flapping into a constant ratio).
    requests(metrics, ("flap", "a"), ("flap", "b"), ok=lambda t: 10.0,
             failed=flapping(minutes_before_alert(12), 360, 10.0))
    # healthy: half a percent of 503s all along is noise, not an outage.
    requests(metrics, ("calm", "c"), ("calm", "d"), ok=lambda t: 20.0, failed=lambda t: 0.1)
    # a caller without a sidecar: only the server's proxy reports, with the flag of its inbound failure.
    requests(metrics, ("legacy", "unknown"), ("legacy", "orders"), ok=lambda t: 5.0,
             failed=step_at(minutes_before_alert(8), 0.0, 5.0), flags="UF", reporters=("destination",))
    # TCP: connections to the database close with UF from 6 minutes before the alert.
    tcp = {"reporter": "source", "source_workload_namespace": "data", "source_workload": "billing",
           "destination_workload_namespace": "data", "destination_workload": "postgres",
           "destination_service_name": "postgres"}
    metrics.counter("istio_tcp_connections_closed_total", {**tcp, "response_flags": "-"}, lambda t: 1.0)
    metrics.counter("istio_tcp_connections_closed_total", {**tcp, "response_flags": "UF"},
                    step_at(minutes_before_alert(6), 0.0, 2.0))
    _istiod(metrics)
    return metrics


def _istiod(metrics: OpenMetrics) -> None:
    pod = {"namespace": "istio-system", "pod": "istiod-7d4b9c-abcde", "container": "discovery"}
    metrics.gauge("container_memory_working_set_bytes", pod, lambda t: 200 * 2**20 + t * 2**20 / 5)
    metrics.counter("pilot_xds_pushes", {"type": "cds"}, lambda t: 2.0)
    metrics.counter("pilot_total_xds_rejects", {"type": "lds"}, step_at(minutes_before_alert(10), 0.0, 0.1))
    metrics.counter("citadel_server_csr_sign_err_count", {}, step_at(minutes_before_alert(20), 0.0, 0.05))
    # A convergence histogram whose pushes mostly take 10-20 s (buckets of pilot/pkg/xds/monitoring.go).
    for le, share in (("0.1", 0.0), ("1", 0.05), ("5", 0.1), ("10", 0.2), ("20", 1.0), ("30", 1.0), ("+Inf", 1.0)):
        metrics.counter("pilot_proxy_convergence_time_bucket", {"le": le}, lambda t, s=share: 2.0 * s)


# -- the server ------------------------------------------------------------------------------------------


@dataclass
class RunningPrometheus:
    url: str
    data_dir: Path
    process: subprocess.Popen

    def stop(self) -> None:
        stop_process(self.process)


def find_binary(name: str) -> str:
    """``prometheus``/``promtool`` on PATH; fails (never skips) with how to install them."""
    found = shutil.which(name)
    if not found:
        pytest.fail(PROMETHEUS_MISSING.format(binary=name), pytrace=False)
    return found


def backfill(metrics: OpenMetrics | None, data_dir: Path) -> None:
    """Write ``metrics`` as TSDB blocks under ``data_dir`` (nothing for an empty Prometheus)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    if metrics is None:
        return
    source = data_dir.parent / f"{data_dir.name}.om"
    source.write_text(metrics.text(), encoding="utf-8")
    done = subprocess.run([find_binary("promtool"), "tsdb", "create-blocks-from", "openmetrics", str(source),
                           str(data_dir)], capture_output=True, text=True, timeout=600)
    if done.returncode:
        raise RuntimeError(f"promtool could not backfill {source}: {done.stderr[-2000:]}")


def start_prometheus(data_dir: Path) -> RunningPrometheus:
    """``prometheus`` on a free loopback port over ``data_dir``, once it says it is ready."""
    config = data_dir.parent / "prometheus.yml"
    config.write_text("global: {}\n", encoding="utf-8")
    port = _free_port()
    log = (data_dir.parent / f"prometheus-{port}.log").open("w")
    process = subprocess.Popen(
        [find_binary("prometheus"), f"--config.file={config}", f"--storage.tsdb.path={data_dir}",
         f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=100y",
         "--query.lookback-delta=1m"], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"prometheus exited with {process.returncode}: see {log.name}")
        try:
            if loopback.get(f"{url}/-/ready", timeout=1.0).status_code == 200:
                return RunningPrometheus(url, data_dir, process)
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    stop_process(process)
    raise RuntimeError(f"prometheus did not become ready within {STARTUP_TIMEOUT:g}s: see {log.name}")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def serve_backfilled(tmp_path_factory: pytest.TempPathFactory, name: str,
                     metrics: OpenMetrics | None) -> Iterator[RunningPrometheus]:
    """The body of a Prometheus fixture: ``metrics`` backfilled under a new directory ``name``, served until the
    fixture ends (``yield from serve_backfilled(...)``)."""
    base = tmp_path_factory.mktemp(name)
    backfill(metrics, base / "data")
    running = start_prometheus(base / "data")
    yield running
    running.stop()


class NoPods:
    """A cluster source with no pods to read: traffic comes from Prometheus alone, or from an Envoy named
    directly."""

    def snapshot(self, kinds) -> Snapshot:
        return Snapshot()


@pytest.fixture(scope="session")
def mesh_prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPrometheus]:
    yield from serve_backfilled(tmp_path_factory, "prometheus-mesh", mesh_metrics())


@pytest.fixture(scope="session")
def empty_prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPrometheus]:
    yield from serve_backfilled(tmp_path_factory, "prometheus-empty", None)
