"""Several real ``meshbot serve`` processes on one PostgreSQL database and one fake Slack, as pods behind a Service.

Used by tests/test_ha_replicas.py and bench/bench_ha_storm.py.  Each replica is
the CLI a container runs (``python -m bot.cli serve``), configured only through
its environment, with the database password in a file as a Secret mounts it.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from tests.support.processes import stop_process
from tests.support.slack import BOT_TOKEN, SIGNING_SECRET

ROOT = Path(__file__).resolve().parents[2]
DEMO_SCENARIO = str(ROOT / "examples" / "demo" / "scenario.yaml")
ALERTMANAGER_TOKEN = "replicas-alertmanager-token"
AUDIT_KEY = "replicas-audit-key-0123456789abcdef012345"
CHANNEL = "CINCIDENT"
ALERTNAMES = ["EnvoySidecarCrashLoop", "IstiodHighMemory", "EnvoyHighMemoryUsage", "EnvoyCircuitBreakerOpen"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Replica:
    name: str
    process: subprocess.Popen
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """``kill -9``: no shutdown, no flush; whatever it held in PostgreSQL goes with its connections."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()


def start_replicas(count: int, *, database_url: str, password_file: Path, slack_api_url: str, work: Path,
                   extra_env: dict[str, str] | None = None, prefix: Sequence[str] | None = None) -> list[Replica]:
    """``count`` replicas, ready; ``prefix`` runs each under another command (``faketime -f +5m``: a skewed clock)."""
    env_base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(work),
                "SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SIGNING_SECRET, "SLACK_API_URL": slack_api_url,
                "MESHBOT_HOST": "127.0.0.1", "MESHBOT_DATABASE_URL": database_url,
                "MESHBOT_DATABASE_PASSWORD_FILE": str(password_file), "MESHBOT_AUDIT_KEY": AUDIT_KEY,
                "ALERTMANAGER_TOKEN": ALERTMANAGER_TOKEN, "MESHBOT_CHANNEL": CHANNEL,
                "MESHBOT_SCENARIO": DEMO_SCENARIO, "MESHBOT_REMINDERS": "false", "MESHBOT_WORKERS": "4",
                "MESHBOT_THREAD_BATCH_SECONDS": "1", "MESHBOT_LOG_LEVEL": "WARNING", **(extra_env or {})}
    replicas = []
    for n in range(count):
        port = _free_port()
        log = work / f"replica-{n}.log"
        env = {**env_base, "MESHBOT_PORT": str(port), "MESHBOT_DB": str(work / f"replica-{n}.db"),
               "POD_NAME": f"meshbot-{n}"}
        process = subprocess.Popen([*(prefix or ()), sys.executable, "-m", "bot.cli", "serve"], cwd=ROOT, env=env,
                                   stdout=log.open("wb"), stderr=subprocess.STDOUT)
        replicas.append(Replica(f"meshbot-{n}", process, port, log))
    for replica in replicas:
        wait_ready(replica)
    return replicas


def wait_ready(replica: Replica, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not replica.alive():
            raise AssertionError(f"{replica.name} exited: {replica.log.read_text()[-2000:]}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", replica.port, timeout=2)
            connection.request("GET", "/readyz")
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{replica.name} not ready after {timeout:.0f}s: {replica.log.read_text()[-2000:]}")


def stop_replicas(replicas: Sequence[Replica]) -> None:
    """SIGTERM to all at once (each drains on its own), then wait for each (SIGKILL after 10 s)."""
    for replica in replicas:
        if replica.alive():
            replica.process.terminate()
    for replica in replicas:
        stop_process(replica.process, timeout=10)


def notification(group: int, sequence: int, *, new_alert_every: int = 3, max_alerts: int = 8,
                 alertnames: Sequence[str] = ALERTNAMES) -> bytes:
    """The ``sequence``-th notification of a group (Alertmanager's webhook body): an alert joins every
    ``new_alert_every`` notifications, up to ``max_alerts``."""
    alertname = alertnames[group % len(alertnames)]
    namespace = f"team-{group:02d}"
    alerts = [{
        "status": "firing",
        "labels": {"alertname": alertname, "namespace": namespace, "pod": f"app-{group}-{n}", "severity": "critical"},
        "annotations": {"summary": f"{alertname} in {namespace}"},
        "startsAt": "2026-11-24T03:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus:9090/graph", "fingerprint": f"{group:04x}{n:012x}",
    } for n in range(min(sequence // new_alert_every + 1, max_alerts))]
    return json.dumps({
        "version": "4", "groupKey": f'{{}}:{{alertname="{alertname}", namespace="{namespace}"}}',
        "truncatedAlerts": 0, "status": "firing", "receiver": "meshbot",
        "groupLabels": {"alertname": alertname, "namespace": namespace},
        "commonLabels": {"alertname": alertname, "namespace": namespace, "severity": "critical"},
        "commonAnnotations": {"summary": f"{alertname} in {namespace}"},
        "externalURL": "http://alertmanager:9093", "alerts": alerts,
    }).encode()


@dataclass
class Storm:
    """Alertmanager in front of several replicas: the bodies spread over all of them, and on a failure
    (a replica killed mid-request) retried on another, as Alertmanager retries a failed webhook."""

    replicas: list[Replica]
    sent: int = 0
    retried: int = 0
    latencies: list[float] = field(default_factory=list)
    accepted_by: Counter = field(default_factory=Counter)
    """(replica name, group key) -> notifications that replica accepted."""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def send(self, index: int, body: bytes) -> None:
        count = len(self.replicas)
        # Rotated every round, so a group whose notifications come every ``count``-th body still reaches them all.
        first = index + index // count
        for attempt in range(count * 3):
            replica = self.replicas[(first + attempt) % count]
            if not replica.alive():
                continue
            started = time.perf_counter()
            try:
                connection = http.client.HTTPConnection("127.0.0.1", replica.port, timeout=10)
                connection.request("POST", "/alertmanager", body=body, headers={
                    "Content-Type": "application/json", "Authorization": f"Bearer {ALERTMANAGER_TOKEN}"})
                status = connection.getresponse().status
            except OSError:
                status = 0
            if status == 200:
                with self._lock:
                    self.sent += 1
                    self.latencies.append(time.perf_counter() - started)
                    self.accepted_by[replica.name, json.loads(body)["groupKey"]] += 1
                return
            with self._lock:
                self.retried += 1
        raise AssertionError(f"notification {index} was accepted by no replica")


def counts(database_url: str) -> dict[str, int]:
    """What the shared database holds, read directly (as an operator would with psql)."""
    queries = {
        "incidents": "SELECT COUNT(*) FROM incidents",
        "notifications": "SELECT COUNT(*) FROM notifications",
        "unprocessed": "SELECT COUNT(*) FROM notifications WHERE processed_at IS NULL",
        "pending": "SELECT COUNT(*) FROM outbox WHERE state = 'pending'",
        "failed": "SELECT COUNT(*) FROM outbox WHERE state = 'failed'",
        "undiagnosed": "SELECT COUNT(*) FROM incidents WHERE diagnosed = 0",
        "posted_events": "SELECT COUNT(*) FROM events WHERE kind = 'message_posted'",
        "posted_entries": "SELECT COUNT(DISTINCT data::jsonb ->> 'outbox_id') FROM events "
                          "WHERE kind = 'message_posted'",
    }
    with psycopg.connect(database_url) as conn:
        return {name: conn.execute(sql).fetchone()[0] for name, sql in queries.items()}


def wait_drained(database_url: str, timeout: float = 120.0) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while True:
        now = counts(database_url)
        if not (now["unprocessed"] or now["pending"] or now["undiagnosed"]) or time.monotonic() > deadline:
            return now
        time.sleep(0.3)
