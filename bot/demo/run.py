"""``meshbot demo``: the real bot (``bot.server.wiring.build``) between an embedded Slack and cluster.

Only the two outside worlds are replaced: Slack by ``bot.demo.workspace`` (reached
through ``SLACK_API_URL``, with signed requests into ``/slack/events``) and the
cluster by ``bot.demo.cluster`` (reached through a kubeconfig).  Playbooks,
approvals (ON: bob and carol approve) and the incident log are the ones ``meshbot
serve`` runs; only the daily certificate scan is off (see ``demo_settings``).

Two things differ from a live cluster, both in the diagnosis runner handed to
``build``: the clock is the scenario's (its 3 AM, moving on in real time, so the
story's certificate dates stay true), and istiod's and the sidecar's HTTP answers
come from the scenario's captured files (kmock has no pods to port-forward to),
moved by what the bot's actions change in the cluster (``bot.demo.mesh``), so
verification by effect sees a fix work.
"""

from __future__ import annotations

import logging
import secrets
import signal
import tempfile
import threading
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import httpx

from bot.cluster import ClusterAccess, ScenarioClock
from bot.demo.alerts import BY_KEY, AlertStatus, webhook_body
from bot.demo.cluster import EmbeddedCluster
from bot.demo.console import Console, ConsoleServer
from bot.demo.controller import DemoController
from bot.demo.mesh import DemoMesh
from bot.demo.workspace import CHANNEL, PEOPLE, Workspace
from bot.server.meshbot import Meshbot
from bot.server.wiring import build
from bot.settings import Settings
from bot.timeline.reader import CAPTURES
from commands.catalog import default_checks
from commands.checks.registry import Thresholds
from commands.clients.kube import KubeClient
from commands.cluster.demo import load_scenario
from commands.cluster.sources.kube import KubeSource
from commands.findings import Finding
from commands.resources.references import PodRef

log = logging.getLogger(__name__)

DEFAULT_PORT = 8080


def demo_settings(*, api_url: str, kubeconfig: Path, db_path: Path, bot_token: str, signing_secret: str,
                  alertmanager_token: str) -> Settings:
    """The bot's settings for the demo, validated like any other (``Settings.load``, not the environment)."""
    approvers = ",".join(p.id for p in PEOPLE if p.approver)
    responders = ",".join(p.id for p in PEOPLE if not p.approver)  # on call: may ask for actions, not approve
    return Settings.load(environ={
        "SLACK_BOT_TOKEN": bot_token, "SLACK_SIGNING_SECRET": signing_secret, "SLACK_API_URL": api_url,
        "ALERTMANAGER_TOKEN": alertmanager_token, "MESHBOT_CHANNEL": CHANNEL, "MESHBOT_APPROVERS": approvers,
        "MESHBOT_RESPONDERS": responders,
        "KUBECONFIG": str(kubeconfig), "MESHBOT_DB": str(db_path), "MESHBOT_HOST": "127.0.0.1",
        "MESHBOT_PORT": "0", "MESHBOT_WORKERS": "4", "MESHBOT_HTTP_THREADS": "4", "MESHBOT_KUBE_TIMEOUT": "5",
        # The daily certificate scan reads the wall clock, not the scenario's 3 AM: it would date the
        # story's certificates from today (and `/mesh reminders` says they are off).
        "MESHBOT_REMINDERS": "false",
        # The incident log lives in a temporary directory for one run, so does its key.
        "MESHBOT_AUDIT_KEY": secrets.token_hex(32),
        # Alert updates in a thread are batched (30 s in production); a demo should answer at once.
        "MESHBOT_THREAD_BATCH_SECONDS": "2",
    })


class DiagnosisRunner:
    """The bot's diagnosis on the embedded cluster, with the scenario's clock and its endpoints as the cluster's
    state makes them (``bot.demo.mesh``)."""

    def __init__(self, settings: Settings, mesh: DemoMesh, clock: ScenarioClock):
        self.cluster = ClusterAccess(settings)
        self.mesh = mesh
        self.clock = clock
        self.checks = default_checks()

    def __call__(self, checks: Sequence[str], namespace: str | None, pods: Sequence[PodRef] = ()) -> list[Finding]:
        endpoints = self.mesh.endpoints()
        endpoints.focus_pods = tuple(pods)
        # Read the embedded cluster directly, not through the bot's shared view (which serves pod lists for up to
        # FRESH_SECONDS): the demo's story is "approve, then see it change", and a fix must show at once.
        source = KubeSource(self.cluster.client(), istio_namespace=self.cluster.settings.istio_namespace)
        return self.checks.diagnose(checks, source, namespace=namespace, now=self.clock.now(),
                                    thresholds=Thresholds(), endpoints=endpoints)

    def close(self) -> None:
        self.cluster.client().close()


class Demo:
    """Everything ``meshbot demo`` runs; ``start`` then ``stop`` (or use it as a context manager)."""

    def __init__(self, *, scenario: str | None = None, host: str = "127.0.0.1", port: int = DEFAULT_PORT):
        self.scenario = load_scenario(scenario)
        self.host, self.port = host, port
        self.clock = ScenarioClock(self.scenario.now)
        self._secrets = {"bot_token": "xoxb-demo-" + secrets.token_hex(12),
                         "signing_secret": secrets.token_hex(16), "alertmanager_token": secrets.token_hex(16)}
        self._tmp: tempfile.TemporaryDirectory | None = None
        self.cluster: EmbeddedCluster | None = None
        self.controller: DemoController | None = None
        self.workspace: Workspace | None = None
        self.console: ConsoleServer | None = None
        self.bot: Meshbot | None = None
        self.runner: DiagnosisRunner | None = None
        self._controller_client: KubeClient | None = None
        self._firing_since: dict[str, datetime] = {}

    @property
    def url(self) -> str:
        return self.console.url if self.console else ""

    def start(self) -> Demo:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        # kmock's server logs every request at INFO; the demo's own log should stay readable.
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
        self._tmp = tempfile.TemporaryDirectory(prefix="meshbot-demo-")
        tmp = Path(self._tmp.name)
        self.cluster = EmbeddedCluster().start()
        self.cluster.load_scenario(self.scenario)
        self._controller_client = KubeClient.for_host(self.cluster.url, timeout=5)
        self.controller = DemoController(self._controller_client, clock=self.clock.now).start()

        self.workspace = Workspace(bot_token=self._secrets["bot_token"],
                                   signing_secret=self._secrets["signing_secret"])
        console = Console(self.workspace, self.send_alert, self.cluster.stored)
        self.console = ConsoleServer(console, self.host, self.port).start()
        self.workspace.base_url = self.console.url

        settings = demo_settings(api_url=self.console.url + "/api/", kubeconfig=self.cluster.kubeconfig(
            tmp / "kubeconfig"), db_path=tmp / "meshbot.db", **self._secrets)
        mesh = DemoMesh(self._controller_client, self.scenario)
        self.runner = DiagnosisRunner(settings, mesh, self.clock)
        # The outage's telemetry, Events and changes are captured beside the scenario: no Prometheus to run.
        self.bot = build(settings, runner=self.runner, clock=self.clock.now, endpoints=mesh.endpoints,
                         timeline_captures=self.scenario.cluster_dir.parent / CAPTURES).start()
        self.workspace.bot_url = self.bot.url

    def send_alert(self, key: str, state: AlertStatus) -> int:
        """POST one alert to the bot's /alertmanager as Alertmanager would, with the bearer token."""
        if self.bot is None:
            raise RuntimeError("the demo's bot is not running: start() it first")
        alert = BY_KEY[key]
        now = self.clock.now()
        starts_at = self._firing_since.setdefault(key, now)
        if state == AlertStatus.RESOLVED:
            self._firing_since.pop(key, None)
        body = webhook_body(alert, state, starts_at=starts_at, now=now)
        answer = httpx.post(f"{self.bot.url}/alertmanager", content=body, timeout=10.0, headers={
            "Content-Type": "application/json", "Authorization": f"Bearer {self._secrets['alertmanager_token']}"})
        return answer.status_code

    def stop(self) -> None:
        """The bot, then the workspace and console it talks to, then the cluster it acts on. Idempotent."""
        if self.bot is not None:  # first, so that what it is still posting reaches the workspace
            self.bot.stop()
            self.bot = None
        if self.console is not None:
            self.console.stop()
            self.console = None
        if self.runner is not None:
            self.runner.close()
            self.runner = None
        if self.controller is not None:
            self.controller.stop()
            self.controller = None
        if self._controller_client is not None:
            self._controller_client.close()
            self._controller_client = None
        if self.cluster is not None:
            self.cluster.stop()
            self.cluster = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> Demo:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_until_interrupted(demo: Demo, *, announce=print) -> None:
    """Start, print the console's URL, serve until SIGINT/SIGTERM, stop cleanly."""
    stopping = threading.Event()

    def stop(signum: int, frame: object) -> None:
        stopping.set()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        demo.start()
        announce(f"meshbot demo: open {demo.url} (Ctrl-C stops it)")
        while not stopping.wait(0.5):
            pass
        announce("meshbot demo: stopping")
    finally:
        demo.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
