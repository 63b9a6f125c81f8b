"""Faults a cluster produces, on real ``meshbot serve`` processes sharing one real PostgreSQL: a paused executor
(SIGSTOP/SIGCONT, as a long GC or node pressure pauses a pod) and a replica whose clock is minutes off (faketime).

Each replica is the CLI a container runs, acting on kmock's API server and posting to the fake Slack, both served
from this test process.  Every process a test starts is stopped by its fixture.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import psycopg
import pytest

from bot.slack.errors import Failed, user_message
from bot.storage.database import DatabaseUnavailable
from commands.clients.lease import LeaderElector
from tests.support.istiod import push_after_every_write, syncz_entry
from tests.support.kube import FakeKube, write_kubeconfig
from tests.support.postgres import PASSWORD, with_password
from tests.support.replicas import Replica, notification, start_replicas, stop_replicas
from tests.support.slack import block_action_body, post_signed
from tests.test_actions import deployment, injected_pod, meshed_namespace, namespace
from tests.test_approvals import APPROVERS, ask, ask_rollback, istiod_pod
from tests.test_postgres_storage import allow_connections

LEASE_SECONDS = 4.0
"""The execution lease the replicas run with: short, so a takeover happens within seconds (renewed every 1.3 s, which
a loaded CI machine still manages)."""


@pytest.fixture
def mesh(kube: FakeKube) -> FakeKube:
    """payments is meshed (an injected pod), so permissive-mtls writes two objects: PERMISSIVE, then plaintext."""
    kube.add(meshed_namespace("payments"), namespace("istio-system"), deployment("istiod", "istio-system"),
             deployment("api", "payments"), injected_pod("api-1", "payments"), istiod_pod())
    return kube


@pytest.fixture
def fleet(postgres, mesh, istiod_server, fake_slack, tmp_path) -> Iterator[tuple[str, dict[str, str]]]:
    """What every replica of a test is started with: the shared database's URL and their environment."""
    fake_slack.usergroups = {"S0SRE": ["UDAVE"]}
    istiod_server.answer("/debug/syncz", [syncz_entry("api-1.payments")])  # istiod up and pushing: preconditions hold
    # No test here is about the effect: istiod acknowledges each write at once, so no execution waits out its settle.
    push_after_every_write(mesh, istiod_server, ["api-1.payments"])
    password_file = tmp_path / "database-password"
    password_file.write_text(PASSWORD + "\n")
    env = {"KUBECONFIG": write_kubeconfig(tmp_path / "kubeconfig", mesh.url), "MESHBOT_KUBE_CONTEXT": "kmock",
           "MESHBOT_KUBE_TIMEOUT": "15", "MESHBOT_SCENARIO": "", "MESHBOT_APPROVERS": ",".join(APPROVERS),
           "MESHBOT_RESPONDERS": "UALICE,UBOB", "MESHBOT_REQUIRED_APPROVALS": "2",
           "MESHBOT_EXECUTION_LEASE_SECONDS": str(LEASE_SECONDS),
           "MESHBOT_ISTIOD_URL": istiod_server.url, "MESHBOT_LOG_LEVEL": "INFO"}
    yield postgres.create(), {"password_file": str(password_file), **env}


def serve(fleet: tuple[str, dict[str, str]], fake_slack, work: Path, count: int, *,
          prefix: list[str] | None = None) -> list[Replica]:
    url, env = fleet
    work.mkdir(parents=True, exist_ok=True)
    env = dict(env)
    password_file = Path(env.pop("password_file"))
    return start_replicas(count, database_url=url, password_file=password_file, slack_api_url=fake_slack.api_url,
                          work=work, extra_env=env, prefix=prefix)


def query(url: str, sql: str, params: list | None = None) -> list[tuple]:
    """Read the shared database directly, as an operator would with psql."""
    with psycopg.connect(with_password(url, PASSWORD)) as conn:
        return conn.execute(sql, params or []).fetchall()


def wait_until(condition, what: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def state_of(url: str, request_id: int) -> str:
    return query(url, "SELECT state FROM approval_requests WHERE id = %s", [request_id])[0][0]


def wait_state(url: str, request_id: int, *states: str, timeout: float = 40.0) -> str:
    return wait_until(lambda: (s := state_of(url, request_id)) in states and s, f"request #{request_id} in {states}",
                      timeout)


def click(replica: Replica, fake_slack, request_id: int, user: str, action_id: str = "approval_approve") -> None:
    """A button press delivered to one replica; its private answer is not waited for (the replica may be paused)."""
    body = block_action_body(action_id, str(request_id), user_id=user, response_url=fake_slack.response_url(user))
    assert post_signed(f"{replica.url}/slack/events", body).status_code == 200


def writes_of(kube: FakeKube, resource: str) -> int:
    return len([r for r in kube.requests("POST") if resource in r.url.path and r.params.get("dryRun") != "All"])


def write_story(kube: FakeKube, replicas: list[Replica]) -> str:
    """Every write the API server received, in order, and what the replicas logged about approvals: printed when
    the assertion below fails (it failed once in a full run and never alone; this is what to read next time)."""
    writes = [f"{r.method.value} {r.url.path}{' (dry run)' if r.params.get('dryRun') == 'All' else ''}"
              for r in kube.requests() if r.method.value.upper() in ("POST", "PUT", "PATCH", "DELETE")]
    logs = [f"{replica.log.name}: {line}" for replica in replicas if replica.log.exists()
            for line in replica.log.read_text().splitlines() if "approval" in line]
    return "\nwrites:\n  " + "\n  ".join(writes) + "\napproval log lines:\n  " + "\n  ".join(logs)


def test_an_executor_paused_past_its_lease_never_reapplies_a_change_a_survivor_finished_and_people_rolled_back(
        fleet, mesh, fake_slack, tmp_path):
    paused, survivor = serve(fleet, fake_slack, tmp_path, 2)
    url = fleet[0]
    try:
        request_id, _ = ask(paused, fake_slack, "permissive-mtls payments")
        stopped = threading.Event()

        def pause_the_executor(request) -> None:
            # The first object is stored; its writer is stopped before it hears so (SIGSTOP, as a long GC would).
            if "peerauthentications" in request.url.path and not stopped.is_set() and request.method.value == "POST":
                os.kill(paused.process.pid, signal.SIGSTOP)
                stopped.set()
        mesh.emulator.after_write.append(pause_the_executor)
        click(paused, fake_slack, request_id, "UBOB")
        click(paused, fake_slack, request_id, "UCAROL")
        assert stopped.wait(30), "the executor never wrote its first object"
        paused_at = time.monotonic()

        # The survivor resumes the orphaned execution once the lease is over (the sweep runs twice a lease), and
        # people roll it back.
        wait_until(lambda: query(url, "SELECT attempt FROM approval_requests WHERE id = %s", [request_id])[0][0] >= 2,
                   "the survivor's claim")
        takeover = time.monotonic() - paused_at
        assert takeover < LEASE_SECONDS * 1.5 + 5, f"takeover took {takeover:.1f}s"  # 5 s: a loaded CI machine
        assert wait_state(url, request_id, "succeeded", "failed") == "succeeded"
        rollback_id = ask_rollback(survivor, fake_slack, request_id, "UBOB")
        click(survivor, fake_slack, rollback_id, "UCAROL")
        click(survivor, fake_slack, rollback_id, "UDAVE")
        assert wait_state(url, rollback_id, "succeeded", "failed") == "succeeded"
        assert mesh.object("PeerAuthentication", "payments", "meshbot-emergency-permissive") is None
        assert mesh.object("DestinationRule", "payments", "meshbot-emergency-plaintext") is None

        os.kill(paused.process.pid, signal.SIGCONT)
        superseded = wait_until(lambda: query(url, "SELECT data FROM events WHERE kind = 'execution_superseded'"),
                                "the woken executor to say it was superseded")
    finally:
        if paused.alive():
            os.kill(paused.process.pid, signal.SIGCONT)
        stop_replicas([paused, survivor])

    assert '"attempt": 1' in superseded[0][0]  # the paused executor's claim, the first
    said = paused.log.read_text()  # at its next write, or at its outcome when it had nothing left to write
    assert "stopping with nothing more written" in said or "could be recorded; recorded nothing" in said
    # Nothing re-applied: the rolled-back objects stay gone, and the plaintext rule was written once (by the survivor).
    story = write_story(mesh, [paused, survivor])
    assert writes_of(mesh, "destinationrules") == 1, story
    assert writes_of(mesh, "peerauthentications") == 1, story
    assert mesh.object("PeerAuthentication", "payments", "meshbot-emergency-permissive") is None, story
    assert mesh.object("DestinationRule", "payments", "meshbot-emergency-plaintext") is None, story


@pytest.fixture
def faketime() -> str:
    found = shutil.which("faketime")
    if found is None:
        pytest.fail("faketime not found: apt-get install -y faketime (scripts/test.sh installs it)")
    return found


def test_a_replica_whose_clock_is_five_minutes_ahead_takes_no_live_execution_over(fleet, mesh, fake_slack, tmp_path,
                                                                                   faketime):
    (executor,) = serve(fleet, fake_slack, tmp_path / "a", 1)
    # Only the wall clock is skewed (libfaketime): Python's waits run on the monotonic clock, as in a real pod.
    (ahead,) = serve(fleet, fake_slack, tmp_path / "b", 1,
                     prefix=["env", "FAKETIME_DONT_FAKE_MONOTONIC=1", faketime, "-f", "+5m"])
    url = fleet[0]
    try:
        request_id, _ = ask(executor, fake_slack, "permissive-mtls payments")
        held = threading.Event()

        def hold_the_write(request) -> None:
            # The executor stays live (its heartbeat renews the lease) while its first write takes two leases,
            # long enough for the replica ahead to sweep several times.
            if "peerauthentications" in request.url.path and request.method.value == "POST" and not held.is_set():
                held.set()
                time.sleep(LEASE_SECONDS * 2)
        mesh.emulator.after_write.append(hold_the_write)
        click(executor, fake_slack, request_id, "UBOB")
        click(executor, fake_slack, request_id, "UCAROL")
        assert wait_state(url, request_id, "succeeded", "failed") == "succeeded"
    finally:
        stop_replicas([executor, ahead])

    attempts = query(url, "SELECT attempt, executor FROM approval_requests WHERE id = %s", [request_id])[0]
    assert attempts[0] == 1, f"the replica 5 minutes ahead took the execution over: {attempts}"
    assert writes_of(mesh, "peerauthentications") == 1



def test_a_click_the_database_could_not_take_is_answered_not_recorded_click_again():
    answer = user_message(Failed("cannot record the click", DatabaseUnavailable("PostgreSQL db is unreachable")))
    assert answer.startswith(":warning: Not recorded") and "Click again" in answer


def test_an_accepted_alert_is_applied_after_the_database_comes_back_not_set_aside(bot_factory, postgres):
    url = postgres.create()
    meshbot = bot_factory(database_url=url, database_password=PASSWORD, audit_key="k" * 40, alertmanager_token="t",
                          channel="CINCIDENT")
    meshbot.incident_flow.stop()  # the test applies the stored notification itself, at the moment of its choosing
    accepted = httpx.post(f"{meshbot.url}/alertmanager", content=notification(0, 0),
                          headers={"Authorization": "Bearer t", "Content-Type": "application/json"})
    assert accepted.status_code == 200

    allow_connections(postgres, url, False)  # lost connections, then a database that refuses new ones for 2 s
    threading.Timer(2.0, allow_connections, args=(postgres, url, True)).start()
    assert meshbot.incident_flow.process_pending() == 1

    stored = query(url, "SELECT processed_at IS NOT NULL, error FROM notifications")
    assert stored == [(True, None)], "applied once the database was back, not set aside with an error"
    assert query(url, "SELECT COUNT(*) FROM incidents") == [(1,)]


def test_a_renewal_that_fails_unexpectedly_ends_leadership(kube: FakeKube):
    elector = LeaderElector(kube.client(), "meshbot", "meshbot-0", duration=timedelta(seconds=15))
    assert elector.tick() and elector.is_leader
    # The Lease edited into something the renewal cannot read (a renewTime that is no time): not a MeshbotError,
    # and no proof this replica still leads, so it stops acting as the leader until a renewal succeeds.
    kube.add({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
              "metadata": {"name": "meshbot-scheduler", "namespace": "meshbot"},
              "spec": {"holderIdentity": "meshbot-0", "leaseDurationSeconds": 15, "renewTime": "not-a-time"}})
    assert not elector.tick()
    assert not elector.is_leader and elector.last_error


def test_healthz_answers_while_150_idle_connections_are_held_open(bot_factory):
    meshbot = bot_factory()
    host, port = meshbot.url.removeprefix("http://").split(":")
    idle = [socket.create_connection((host, int(port)), timeout=5) for _ in range(150)]  # connected, silent
    try:
        started = time.monotonic()
        assert httpx.get(f"{meshbot.url}/healthz", timeout=5).status_code == 200
        assert time.monotonic() - started < 3
    finally:
        for connection in idle:
            connection.close()
