"""Approvals run on a pool of their own: an ask is answered while a storm of diagnoses fills the worker pool.

The storm is real: ``/mesh diagnose`` commands over signed HTTP, each on the worker pool and the Diagnostician's
queue, whose runner (the one ``build(runner=...)`` takes for every diagnosis) holds the storm's namespaces until
the test lets go.  The ask goes through the same bot, kmock's API server and the fake Slack."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

import pytest

from bot.server.meshbot import Meshbot
from bot.server.wiring import build
from commands.findings import Finding
from tests.support.bot import bot_settings
from tests.support.istiod import FakeIstiod, syncz_entry
from tests.support.kube import FakeKube, write_kubeconfig
from tests.support.slack import FakeSlack, post_signed, slash_command_body
from tests.test_actions import deployment, namespace
from tests.test_approvals import APPROVERS, ask, istiod_pod

STORM = [f"storm-{n}" for n in range(6)]
WORKERS = 2
"""A small worker pool, so six diagnoses are more than it can hold."""


class HeldStorm:
    """The diagnosis runner: the storm's namespaces wait until ``release``; anything else answers at once."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.finished: list[str] = []

    def __call__(self, checks: Sequence[str], namespace: str | None, pods: Sequence[object] = ()) -> list[Finding]:
        if namespace in STORM:
            self.entered.set()
            self.gate.wait(60)
            self.finished.append(namespace)
        return []

    def release(self) -> None:
        self.gate.set()


@pytest.fixture
def storm() -> Iterator[HeldStorm]:
    held = HeldStorm()
    yield held
    held.release()


@pytest.fixture
def storm_bot(kube: FakeKube, istiod_server: FakeIstiod, fake_slack: FakeSlack, tmp_path,
              storm: HeldStorm) -> Iterator[Meshbot]:
    kube.add(namespace("payments"), namespace("istio-system"), deployment("istiod", "istio-system"),
             deployment("reviews", "payments"), istiod_pod(), *(namespace(name) for name in STORM))
    istiod_server.answer("/debug/syncz", [syncz_entry("reviews-1.payments")])
    fake_slack.usergroups = {"S0SRE": ["UDAVE"]}
    settings = bot_settings(fake_slack, tmp_path, scenario=None, kubeconfig=write_kubeconfig(
        tmp_path / "kubeconfig", kube.url), kube_context="kmock", kube_timeout=5.0, approvers=APPROVERS,
        required_approvals=2, channel="CINCIDENT", istiod_url=istiod_server.url, workers=WORKERS, max_diagnoses=1)
    meshbot = build(settings, runner=storm).start()
    yield meshbot
    storm.release()  # the held diagnoses end before the bot stops
    meshbot.stop(timeout=5)


def test_an_ask_is_answered_while_diagnoses_fill_the_worker_pool(storm_bot: Meshbot, fake_slack: FakeSlack,
                                                                 storm: HeldStorm):
    for name in STORM:
        body = slash_command_body(f"diagnose {name}", response_url=fake_slack.response_url(f"storm-{name}"))
        assert post_signed(f"{storm_bot.url}/slack/events", body).status_code == 200
    assert storm.entered.wait(30), "the storm's first diagnosis started"
    diagnostician = storm_bot.services.diagnostician
    fake_slack.wait_for(lambda: diagnostician.queue.depth >= WORKERS, what="every worker busy with the storm")

    request_id, _ = ask(storm_bot, fake_slack, "permissive-mtls payments")

    assert request_id >= 1
    assert storm.finished == [], "answered while every storm diagnosis was still held"
    assert not storm.gate.is_set()
