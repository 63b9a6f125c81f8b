"""Optimistic locking the Lease and the actions rely on, against an emulator that answers a stale write with 409 like the
real API server (tests/support/kube.py).  Races are staged by letting the rival act between one replica's
read and its write, through a client that hands over control right before a patch."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import pytest

from commands.actions import apply
from commands.clients.kube import KubeClient
from commands.clients.lease import LeaderElector
from commands.errors import Conflict
from tests.support.kube import FakeKube
from tests.test_actions import deployment, plan_for

NOW = datetime(2026, 11, 30, 6, 0, tzinfo=timezone.utc)
LEASE = ("Lease", "meshbot", "meshbot-scheduler")


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


class InterruptedBeforePatch(KubeClient):
    """A real KubeClient whose next patch first lets ``rival`` run: the other replica's write lands between
    this replica's read and its own write."""

    rival: Callable[[], object] | None = None

    def patch(self, *args, **kwargs):
        rival, self.rival = self.rival, None
        if rival is not None:
            rival()
        return super().patch(*args, **kwargs)


def interrupted_client(kube: FakeKube) -> InterruptedBeforePatch:
    return InterruptedBeforePatch.for_host(kube.url, timeout=1.0)  # type: ignore[return-value]


def elector(client: KubeClient, identity: str, clock: Clock) -> LeaderElector:
    return LeaderElector(client, "meshbot", identity, duration=timedelta(seconds=15), clock=clock,
                         elapsed=lambda: clock.now.timestamp())


def expired_lease(kube: FakeKube, holder: str = "gone") -> None:
    kube.add({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
              "metadata": {"name": "meshbot-scheduler", "namespace": "meshbot"},
              "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15, "leaseTransitions": 3,
                       "renewTime": "2026-11-30T05:00:00.000000Z"}})


def test_the_emulator_answers_a_patch_with_a_stale_resource_version_with_409_and_keeps_the_object(kube):
    expired_lease(kube)
    client = kube.client()
    seen = client.get(*LEASE)["metadata"]["resourceVersion"]
    client.patch(*LEASE, {"metadata": {"resourceVersion": seen}, "spec": {"holderIdentity": "first"}})
    with pytest.raises(Conflict, match="the object has been modified"):
        client.patch(*LEASE, {"metadata": {"resourceVersion": seen}, "spec": {"holderIdentity": "second"}})
    stored = kube.object(*LEASE)
    assert stored["spec"]["holderIdentity"] == "first"
    assert stored["metadata"]["resourceVersion"] != seen, "every write bumps resourceVersion"


def test_a_dry_run_patch_stores_nothing(kube):
    expired_lease(kube)
    kube.client().patch(*LEASE, {"spec": {"holderIdentity": "dry"}}, dry_run=True)
    assert kube.object(*LEASE)["spec"]["holderIdentity"] == "gone"


def test_of_two_replicas_taking_over_an_expired_lease_at_once_exactly_one_leads(kube):
    expired_lease(kube)
    clock = Clock()
    slow_client = interrupted_client(kube)
    a, b = elector(slow_client, "a", clock), elector(kube.client(), "b", clock)
    # An old renewTime proves nothing (the holder's clock may be behind): each waits out the record it saw.
    assert not a.tick() and not b.tick()
    clock.now += timedelta(seconds=16)
    outcomes: dict[str, bool] = {}
    slow_client.rival = lambda: outcomes.setdefault("b", b.tick())  # b reads and writes after a has read

    outcomes["a"] = a.tick()

    assert outcomes == {"b": True, "a": False}
    spec = kube.object(*LEASE)["spec"]
    assert spec["holderIdentity"] == "b" and spec["leaseTransitions"] == 4, "one transition, not two"
    assert not a.is_leader and b.is_leader


def test_release_does_not_clear_a_lease_another_replica_took_over_meanwhile(kube):
    clock = Clock()
    slow_client = interrupted_client(kube)
    a, b = elector(slow_client, "a", clock), elector(kube.client(), "b", clock)
    assert a.tick() and not b.tick()

    def b_takes_over() -> None:  # a stopped renewing long enough for its lease to run out
        clock.now += timedelta(seconds=16)
        assert b.tick()

    slow_client.rival = b_takes_over
    a.release()  # a read itself as holder just before b took over

    assert kube.object(*LEASE)["spec"]["holderIdentity"] == "b"
    assert b.tick(), "b still leads at its next renewal"


def test_release_still_hands_over_when_nobody_raced(kube):
    clock = Clock()
    a, b = elector(kube.client(), "a", clock), elector(kube.client(), "b", clock)
    assert a.tick()
    a.release()
    assert "holderIdentity" not in kube.object(*LEASE)["spec"]
    assert b.tick()


# -- actions: a write racing another writer ---------------------------------------------------------------

INJECT_LABEL = ("spec", "template", "metadata", "labels", "sidecar.istio.io/inject")


def inject_label(kube: FakeKube) -> str | None:
    node = kube.object("Deployment", "bookinfo", "reviews")
    for key in INJECT_LABEL:
        node = (node or {}).get(key)
    return node


def bypass_plan_raced_by(kube: FakeKube, other_write: dict):
    """The bypass plan for bookinfo/reviews, applied by a client that lets ``other_write`` land between the
    pre-flight read and the patch."""
    kube.add(deployment("reviews", "bookinfo"))
    plan = plan_for(kube, "bypass reviews -n bookinfo")
    client = interrupted_client(kube)
    other = kube.client()
    client.rival = lambda: other.patch("Deployment", "bookinfo", "reviews", other_write)
    return client, plan


def test_an_action_whose_object_another_writer_changed_the_same_field_of_stops_with_nothing_written(kube):
    client, plan = bypass_plan_raced_by(kube, {"spec": {"template": {"metadata": {"labels": {
        "sidecar.istio.io/inject": "true"}}}}})

    outcome = apply(client, plan)

    assert not outcome.ok and outcome.applied == 0
    assert "changed by another writer between the check and the write (HTTP 409)" in outcome.error
    assert "nothing of this change was written" in outcome.error
    assert inject_label(kube) == "true", "the other writer's value stands"


def test_an_action_raced_by_an_unrelated_write_rereads_and_applies_on_the_fresh_version(kube):
    client, plan = bypass_plan_raced_by(kube, {"spec": {"replicas": 5}})

    outcome = apply(client, plan)

    assert outcome.ok and [s.state for s in outcome.steps] == ["done"]
    assert inject_label(kube) == "false"
    assert kube.object("Deployment", "bookinfo", "reviews")["spec"]["replicas"] == 5, "the other write is kept"
    assert len(kube.requests("PATCH")) == 3, "other writer, refused stale patch, patch on the fresh version"


def test_an_action_raced_by_a_writer_making_the_same_change_reports_it_already_in_place(kube):
    client, plan = bypass_plan_raced_by(kube, {"spec": {"template": {"metadata": {"labels": {
        "sidecar.istio.io/inject": "false"}}}}})

    outcome = apply(client, plan)

    assert outcome.ok and [s.state for s in outcome.steps] == ["already in place"]
    assert inject_label(kube) == "false"



def test_a_restart_raced_by_a_writer_pausing_the_deployment_is_refused_with_nothing_written(kube):
    kube.add(deployment("payment", "prod"))
    plan = plan_for(kube, "restart payment -n prod")
    client = interrupted_client(kube)
    other = kube.client()
    client.rival = lambda: other.patch("Deployment", "prod", "payment", {"spec": {"paused": True}})

    outcome = apply(client, plan)

    assert not outcome.ok and outcome.applied == 0
    assert "Deployment prod/payment is paused now" in outcome.error
    assert "nothing of this change was written" in outcome.error
    annotations = kube.object("Deployment", "prod", "payment")["spec"]["template"]["metadata"].get("annotations")
    assert "kubectl.kubernetes.io/restartedAt" not in (annotations or {})
