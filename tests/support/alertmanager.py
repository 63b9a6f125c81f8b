"""The real Alertmanager 0.25 (Debian ``prometheus-alertmanager``) and ``amtool`` as pytest fixtures.

Each Alertmanager runs from a config written per test: one route grouping by
``alertname`` and ``namespace`` with short timers, and one ``webhook_configs``
receiver (bearer token, ``send_resolved``) pointing at the URL the test gives —
usually the bot, or a ``ProgrammableServer`` that records deliveries. Clustering is
off, the port is free, storage lives under ``tmp_path``; every process is stopped
in teardown, and its log is printed then so a failing test shows it.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest
import yaml

from tests.support import loopback
from tests.support.http_server import ProgrammableServer
from tests.support.processes import stop_process

ALERTMANAGER_MISSING = ("the real Alertmanager 0.25 is needed for these tests and `{binary}` was not found: "
                        "apt-get install -y prometheus-alertmanager")
ALERTMANAGER_BINARIES = ("prometheus-alertmanager", "alertmanager")  # Debian's name, then upstream's
STARTUP_TIMEOUT = 15.0
PORT_ATTEMPTS = 3
RECEIVER = "meshbot"
WEBHOOK_PATH = "/alertmanager"


def find_binary(*names: str) -> str:
    """The first of ``names`` on PATH; fails (never skips) with how to install Alertmanager."""
    for name in names:
        if found := shutil.which(name):
            return found
    pytest.fail(ALERTMANAGER_MISSING.format(binary=" or ".join(names)), pytrace=False)


def alert(alertname: str, *, status: Literal["firing", "resolved"] = "firing",
          labels: Mapping[str, str] | None = None, annotations: Mapping[str, str] | None = None,
          starts_at: datetime | None = None, ends_at: datetime | None = None,
          generator_url: str = "") -> dict[str, Any]:
    """One alert as ``POST /api/v2/alerts`` takes it (a ``postableAlert``).

    A firing alert without ``ends_at`` gets none, so Alertmanager holds it for
    ``resolve_timeout``; a resolved alert is one whose ``endsAt`` is in the past
    (one second ago unless ``ends_at`` is given).
    """
    if status == "resolved" and ends_at is None:
        ends_at = datetime.now(timezone.utc) - timedelta(seconds=1)
    if status == "firing" and ends_at is not None and ends_at <= datetime.now(timezone.utc):
        raise ValueError("a firing alert cannot end in the past; use status='resolved'")
    body: dict[str, Any] = {"labels": {"alertname": alertname, **(labels or {})},
                            "annotations": dict(annotations or {})}
    if starts_at is not None:
        body["startsAt"] = _rfc3339(starts_at)
    if ends_at is not None:
        body["endsAt"] = _rfc3339(ends_at)
    if generator_url:
        body["generatorURL"] = generator_url
    return body


def resolved(firing: Mapping[str, Any], ends_at: datetime | None = None) -> dict[str, Any]:
    """The same alert (same labels, hence fingerprint) resolved at ``ends_at`` (default: a second ago)."""
    ends_at = ends_at or datetime.now(timezone.utc) - timedelta(seconds=1)
    return {**firing, "endsAt": _rfc3339(ends_at)}


def _rfc3339(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("alert times must be timezone-aware")
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def config(webhook_url: str, *, bearer_token: str, group_by: Sequence[str], group_wait: str,
           group_interval: str, repeat_interval: str, resolve_timeout: str, max_alerts: int = 0) -> dict[str, Any]:
    """An Alertmanager 0.25 config: one route, one webhook receiver authenticating with a bearer token."""
    return {
        "global": {"resolve_timeout": resolve_timeout},
        "route": {"receiver": RECEIVER, "group_by": list(group_by), "group_wait": group_wait,
                  "group_interval": group_interval, "repeat_interval": repeat_interval},
        "receivers": [{"name": RECEIVER, "webhook_configs": [{
            "url": webhook_url,
            "send_resolved": True,
            "max_alerts": max_alerts,  # 0: every alert of the group, truncatedAlerts stays 0
            "http_config": {"authorization": {"type": "Bearer", "credentials": bearer_token}},
        }]}],
    }


@dataclass
class RunningAlertmanager:
    process: subprocess.Popen[bytes]
    url: str
    config_path: Path
    log_path: Path
    amtool_binary: str

    def push(self, *alerts: Mapping[str, Any]) -> None:
        """``POST /api/v2/alerts``, as Prometheus does; fails with Alertmanager's reason on a non-200."""
        response = loopback.post(f"{self.url}/api/v2/alerts", json=list(alerts), timeout=5)
        if response.status_code != 200:
            raise AssertionError(f"Alertmanager refused the alerts ({response.status_code}): {response.text}")

    def alerts(self, **params: Any) -> list[dict[str, Any]]:
        """``GET /api/v2/alerts``: what Alertmanager holds now."""
        return loopback.get(f"{self.url}/api/v2/alerts", params=params, timeout=5).json()

    def amtool(self, *args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run the real ``amtool ARGS --alertmanager.url=<this>`` (no shell); ``check`` fails on a non-zero exit."""
        command = [self.amtool_binary, *args, f"--alertmanager.url={self.url}"]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(command)} exited {result.returncode}:\n{result.stdout}{result.stderr}")
        return result

    def log(self) -> str:
        """Everything Alertmanager wrote to stderr (logfmt lines: level=… component=… msg=…)."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_for_log(self, pattern: str, timeout: float = 10.0) -> re.Match[str]:
        """The first match of ``pattern`` in the log, waiting for it: Alertmanager logs a delivery's outcome
        after the receiver has answered, so the line may land a moment after the webhook did."""
        deadline = time.monotonic() + timeout
        while True:
            found = re.search(pattern, self.log())
            if found:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"Alertmanager did not log {pattern!r} within {timeout} s; its log:\n"
                                     f"{self.log()[-2000:]}")
            time.sleep(0.05)

    def stop(self) -> None:
        stop_process(self.process)


def start_alertmanager(webhook_url: str, *, bearer_token: str, tmp_path: Path,
                       group_by: Sequence[str] = ("alertname", "namespace"), group_wait: str = "1s",
                       group_interval: str = "2s", repeat_interval: str = "1h", resolve_timeout: str = "5m",
                       max_alerts: int = 0, external_url: str | None = None) -> RunningAlertmanager:
    """Run Alertmanager delivering to ``webhook_url`` and return once ``/-/ready`` answers 200.

    ``external_url`` (``--web.external-url``) is what payloads carry as ``externalURL``;
    by default Alertmanager derives it from the host name and port.
    """
    binary = find_binary(*ALERTMANAGER_BINARIES)
    amtool = find_binary("amtool")
    tmp_path.mkdir(parents=True, exist_ok=True)
    config_path, log_path = tmp_path / "alertmanager.yml", tmp_path / "alertmanager.log"
    config_path.write_text(yaml.safe_dump(config(
        webhook_url, bearer_token=bearer_token, group_by=group_by, group_wait=group_wait,
        group_interval=group_interval, repeat_interval=repeat_interval, resolve_timeout=resolve_timeout,
        max_alerts=max_alerts), sort_keys=False))
    options = [f"--config.file={config_path}", f"--storage.path={tmp_path / 'data'}",
               "--cluster.listen-address=",  # empty: no gossip, no peer wait before the first notification
               "--log.level=debug"]
    if external_url:
        options.append(f"--web.external-url={external_url}")
    for attempt in range(PORT_ATTEMPTS):
        alertmanager = _launch(binary, options, _free_port(), config_path, log_path, amtool)
        try:
            _wait_until_ready(alertmanager)
            return alertmanager
        except AssertionError:
            alertmanager.stop()
            # The free port can be taken between asking the kernel and Alertmanager binding it.
            if "address already in use" not in alertmanager.log() or attempt == PORT_ATTEMPTS - 1:
                raise
        except BaseException:
            alertmanager.stop()
            raise
    raise AssertionError("unreachable")


def _launch(binary: str, options: list[str], port: int, config_path: Path, log_path: Path,
            amtool: str) -> RunningAlertmanager:
    with log_path.open("wb") as log:
        process = subprocess.Popen([binary, *options, f"--web.listen-address=127.0.0.1:{port}"],
                                   stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    return RunningAlertmanager(process=process, url=f"http://127.0.0.1:{port}", config_path=config_path,
                               log_path=log_path, amtool_binary=amtool)


def _free_port() -> int:
    # Alertmanager cannot listen on port 0 and report the port back, so ask the kernel for one first.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until_ready(alertmanager: RunningAlertmanager) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if alertmanager.process.poll() is not None:
            raise AssertionError(f"Alertmanager exited with {alertmanager.process.returncode}:\n"
                                 f"{alertmanager.log()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if loopback.get(f"{alertmanager.url}/-/ready", timeout=1).status_code == 200:
                return
        time.sleep(0.02)
    raise AssertionError(f"Alertmanager not ready within {STARTUP_TIMEOUT}s:\n{alertmanager.log()[-3000:]}")


@pytest.fixture
def alertmanager_factory(tmp_path: Path) -> Iterator[Callable[..., RunningAlertmanager]]:
    """Factory: ``alertmanager_factory(webhook_url, bearer_token=, **timers)`` -> a ready ``RunningAlertmanager``.

    Takes ``start_alertmanager``'s keyword arguments except ``tmp_path``; fails (never
    skips) when Alertmanager is not installed.
    """
    find_binary(*ALERTMANAGER_BINARIES)
    find_binary("amtool")
    running: list[RunningAlertmanager] = []

    def start(webhook_url: str, *, bearer_token: str, **options: Any) -> RunningAlertmanager:
        alertmanager = start_alertmanager(webhook_url, bearer_token=bearer_token,
                                          tmp_path=tmp_path / f"alertmanager-{len(running)}", **options)
        running.append(alertmanager)
        return alertmanager

    yield start
    for alertmanager in running:
        alertmanager.stop()
    for number, alertmanager in enumerate(running):
        # pytest shows teardown output only for failing tests: the log is there when it is needed.
        print(f"--- alertmanager-{number} ({alertmanager.url}) log ---\n{alertmanager.log()[-6000:]}")


@dataclass(frozen=True)
class Delivery:
    """One webhook notification as the receiver got it."""

    authorization: str
    payload: dict[str, Any]
    received_at: float
    """``time.monotonic()`` when the watcher first saw it (it polls every 10 ms)."""


class WebhookDeliveries:
    """Watches a ``ProgrammableServer`` for Alertmanager's POSTs to ``path``, noting when each was first seen."""

    def __init__(self, receiver: ProgrammableServer, path: str = WEBHOOK_PATH) -> None:
        self.receiver, self.path = receiver, path
        self._seen: list[Delivery] = []

    def __call__(self) -> list[Delivery]:
        """Every delivery so far, oldest first."""
        posts = [r for r in self.receiver.requests if r.method == "POST" and r.path.split("?")[0] == self.path]
        for request in posts[len(self._seen):]:
            headers = {name.lower(): value for name, value in request.headers.items()}
            self._seen.append(Delivery(authorization=headers.get("authorization", ""),
                                       payload=json.loads(request.body), received_at=request.at))
        return list(self._seen)

    def wait_for(self, predicate: Callable[[list[Delivery]], bool], *, timeout: float = 10.0,
                 alertmanager: RunningAlertmanager | None = None, poll: float = 0.01) -> list[Delivery]:
        """Poll until ``predicate(deliveries)`` holds; on timeout fail with what arrived and Alertmanager's log."""
        deadline = time.monotonic() + timeout
        while not predicate(deliveries := self()):
            if time.monotonic() > deadline:
                arrived = [(d.payload.get("groupKey"), d.payload.get("status")) for d in deliveries]
                log = alertmanager.log()[-3000:] if alertmanager else "(no Alertmanager given)"
                raise AssertionError(f"webhook deliveries did not match within {timeout}s; arrived: {arrived}\n"
                                     f"Alertmanager log:\n{log}")
            time.sleep(poll)
        return deliveries
