"""The scheduler's Lease with replicas whose wall clocks disagree by 5 minutes, against the emulated API server.

Each elector is given its wall clock (what it writes in renewTime) and its own elapsed-time clock (how long it has
seen the record unchanged); only the second decides expiry, as in client-go's leaderelection.  The elapsed clocks
start at different values on purpose: a monotonic clock means something only as a difference."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from commands.clients.lease import LeaderElector
from tests.support.kube import FakeKube

NOW = datetime(2026, 12, 7, 9, 0, tzinfo=timezone.utc)
SKEW = timedelta(minutes=5)
LEASE = timedelta(seconds=15)


class Replica:
    """One replica's two clocks: its wall clock (``skew`` off the true time) and its monotonic seconds."""

    def __init__(self, skew: timedelta, boot: float) -> None:
        self.true_now = NOW
        self.skew = skew
        self.boot = boot

    def wall(self) -> datetime:
        return self.true_now + self.skew

    def monotonic(self) -> float:
        return self.boot + (self.true_now - NOW).total_seconds()


class Fleet:
    """Real time passing for every replica at once."""

    def __init__(self, *replicas: Replica) -> None:
        self.replicas = replicas

    def wait(self, seconds: float) -> None:
        for replica in self.replicas:
            replica.true_now += timedelta(seconds=seconds)


def elector(kube: FakeKube, identity: str, replica: Replica) -> LeaderElector:
    return LeaderElector(kube.client(), "meshbot", identity, duration=LEASE, clock=replica.wall,
                         elapsed=replica.monotonic)


def renew_time(kube: FakeKube) -> str:
    return kube.object("Lease", "meshbot", "meshbot-scheduler")["spec"]["renewTime"]


def test_a_replica_five_minutes_ahead_does_not_take_a_lease_its_holder_keeps_renewing(kube: FakeKube):
    on_time, ahead = Replica(timedelta(0), boot=100.0), Replica(SKEW, boot=7_000.0)
    fleet = Fleet(on_time, ahead)
    holder, rival = elector(kube, "meshbot-0", on_time), elector(kube, "meshbot-1", ahead)

    assert holder.tick()
    for _ in range(6):  # a minute and a half of renewals every 10 s, 5 minutes "old" by the rival's clock
        assert not rival.tick()
        fleet.wait(10)
        assert holder.tick()

    assert not rival.tick() and holder.is_leader and not rival.is_leader
    assert renew_time(kube).startswith("2026-12-07T09:01:00"), "renewTime is the holder's own wall time"


def test_a_dead_holder_five_minutes_ahead_is_taken_over_one_lease_after_its_last_renewal(kube: FakeKube):
    ahead, on_time = Replica(SKEW, boot=50.0), Replica(timedelta(0), boot=9_000.0)
    fleet = Fleet(ahead, on_time)
    holder, survivor = elector(kube, "meshbot-0", ahead), elector(kube, "meshbot-1", on_time)
    assert holder.tick()
    assert not survivor.tick(), "renewTime is 5 minutes in the survivor's future: it is not trusted either way"

    # The holder dies now.  The survivor judges by how long it has seen the same record, not by renewTime.
    fleet.wait(10)
    assert not survivor.tick(), "10 s unchanged: still within the lease"
    fleet.wait(6)
    assert survivor.tick(), "16 s unchanged: taken over, not 5 minutes later"
    spec = kube.object("Lease", "meshbot", "meshbot-scheduler")["spec"]
    assert spec["holderIdentity"] == "meshbot-1" and spec["leaseTransitions"] == 1


def test_a_replica_that_first_sees_a_held_lease_waits_one_lease_whatever_its_renew_time_says(kube: FakeKube):
    behind, newcomer = Replica(-SKEW, boot=0.0), Replica(timedelta(0), boot=300.0)
    fleet = Fleet(behind, newcomer)
    holder = elector(kube, "meshbot-0", behind)
    assert holder.tick()  # renewTime 5 minutes in the past by everyone else's clock
    late = elector(kube, "meshbot-1", newcomer)

    assert not late.tick(), "a renewTime 5 minutes old is the holder's clock, not proof it died"
    fleet.wait(10)
    assert holder.tick() and not late.tick()
    fleet.wait(14)
    assert not late.tick(), "the record changed 14 s ago, when the holder renewed"


def test_a_released_lease_is_taken_at_once_by_a_replica_with_a_skewed_clock(kube: FakeKube):
    on_time, ahead = Replica(timedelta(0), boot=1.0), Replica(SKEW, boot=2.0)
    holder, successor = elector(kube, "meshbot-0", on_time), elector(kube, "meshbot-1", ahead)
    assert holder.tick() and not successor.tick()

    holder.release()  # SIGTERM: no holder, so nothing to wait out

    assert successor.tick()


def test_leadership_is_dropped_when_a_renewal_fails(kube: FakeKube):
    replica = Replica(timedelta(0), boot=0.0)
    holder = elector(kube, "meshbot-0", replica)
    assert holder.tick() and holder.is_leader

    kube.fail("Lease", 500, verb="patch", namespace="meshbot", name="meshbot-scheduler")
    Fleet(replica).wait(5)

    assert not holder.tick()
    assert not holder.is_leader and holder.last_error
