"""Approvals with three replicas on one PostgreSQL: clicks on different replicas execute a request once, and a
request whose replica died mid-action is resumed once, by one survivor.

The replicas are three meshbot servers in this process (each with its own HTTP port, connections and workers),
sharing the database, kmock's API server and the fake Slack, as three pods share them."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import pytest

from bot.approvals.desk import EXECUTION_LEASE
from bot.approvals.rule import RequestState, Vote
from bot.incidents.records import EventKind, iso
from tests.support.istiod import syncz_entry
from tests.support.kube import FakeKube, write_kubeconfig
from tests.support.postgres import PASSWORD
from tests.support.slack import post_signed, slash_command_body
from tests.test_actions import deployment, namespace
from tests.test_approvals import (
    APPROVERS,
    ASK_TIMEOUT,
    ask,
    created_peer_authentications,
    events,
    istiod_pod,
    press,
    wait_finished,
)

AUDIT_KEY = "ha-test-audit-key-0123456789abcdef0123"
REQUESTS = 20
TWENTY_ASKS_TIMEOUT = 4 * ASK_TIMEOUT
"""Each ask runs a precondition diagnosis, four at a time per replica (the diagnosis cap): the last of twenty
waits for the others on a loaded two-core machine."""

KUBE_TIMEOUT = 10.0
"""Three replicas and kmock share one process (and its GIL): on a loaded two-core machine twenty dry runs at once
took more than 2 s to be answered, and the asks were refused ("no answer within 2s") rather than slow."""


def approval_replicas(kube: FakeKube, bot_factory, fake_slack, tmp_path, postgres, istiod_server, *, teams: int,
                      count: int, **settings) -> list:
    """``count`` replicas on one fresh PostgreSQL database requiring two approvals (``settings`` added, e.g. the
    audit key shared as from one Secret), ``teams`` namespaces with an ``api`` Deployment each, and a healthy istiod
    (its pod Ready, its syncz answering) so the actions' preconditions hold."""
    for n in range(teams):
        kube.add(namespace(f"team-{n}"), deployment("api", f"team-{n}"))
    kube.add(namespace("istio-system"), deployment("istiod", "istio-system"), istiod_pod())
    istiod_server.answer("/debug/syncz", [syncz_entry("api-1.team-0")])
    fake_slack.usergroups = {"S0SRE": ["UDAVE"]}
    config = write_kubeconfig(tmp_path / "kubeconfig", kube.url)
    url = postgres.create()
    return [bot_factory(scenario=None, kubeconfig=config, kube_context="kmock", kube_timeout=KUBE_TIMEOUT,
                        approvers=APPROVERS, required_approvals=2, channel="CINCIDENT", database_url=url,
                        database_password=PASSWORD, db_path=str(tmp_path / f"replica{i}.db"),
                        istiod_url=istiod_server.url, **settings)
            for i in range(count)]


@pytest.fixture
def replicas(kube: FakeKube, bot_factory, fake_slack, tmp_path, postgres, istiod_server):
    """Three replicas (the audit key shared, as from one Secret), one team namespace per request."""
    started = approval_replicas(kube, bot_factory, fake_slack, tmp_path, postgres, istiod_server, teams=REQUESTS,
                                count=3, audit_key=AUDIT_KEY)
    for meshbot in started:
        # No test here is about the effect: the first look after execution need not wait for acknowledgements.
        meshbot.services.approvals.effects.settle = timedelta(0)
        # Nor about Slack's one post per second per channel (tests/test_outbox.py): cards and notes go out at once.
        meshbot.services.outbox.min_post_interval = 0.0
    return started


def ask_in(meshbot, fake_slack, text: str, channel: str) -> int:
    """``/mesh text`` typed in ``channel``: each request in a channel of its own, so Slack's pacing of one post per
    second per channel does not serialise the test."""
    name = f"ask-{channel}"
    body = slash_command_body(text, channel_id=channel, response_url=fake_slack.response_url(name))
    assert post_signed(f"{meshbot.url}/slack/events", body).status_code == 200
    # Asking plans, runs a diagnosis for the preconditions and dry-runs: allow for a loaded machine.
    # Twenty asks at once queue behind the diagnosis cap first ("Queued behind N diagnoses"), then answer.
    answer = fake_slack.wait_for(lambda: [a for a in fake_slack.answers_to(name) if "Queued behind" not in a],
                                 timeout=TWENTY_ASKS_TIMEOUT, what=f"the answer to /mesh {text}")[0]
    assert "Request #" in answer, answer  # a refusal (a dry run that timed out, say) fails here, saying why
    request_id = int(answer.split("Request #", 1)[1].split()[0])
    fake_slack.wait_for(lambda: [m for m in fake_slack.messages() if f"request #{request_id}:" in m.get("text", "")],
                        timeout=ASK_TIMEOUT, what=f"request #{request_id} in its thread")
    return request_id


def executions(meshbot, request_id: int, incident_id: int) -> int:
    return sum(1 for e in events(meshbot, incident_id)
               if e.kind in (EventKind.ACTION_EXECUTED, EventKind.ACTION_FAILED) and e.data["request_id"] == request_id)


def test_twenty_approvals_clicked_on_different_replicas_at_once_each_execute_once(replicas, kube, fake_slack):
    with ThreadPoolExecutor(max_workers=REQUESTS) as pool:
        asked = list(pool.map(lambda n: ask_in(replicas[n % 3], fake_slack, f"permissive-mtls team-{n}", f"CTEAM{n}"),
                              range(REQUESTS)))
    barrier = threading.Barrier(2 * REQUESTS)

    def click(replica: int, request_id: int, user: str) -> str:
        barrier.wait(timeout=30)  # every click lands at the same moment, on two different replicas per request
        return press(replicas[replica], fake_slack, "approval_approve", str(request_id), user,
                     timeout=TWENTY_ASKS_TIMEOUT)

    with ThreadPoolExecutor(max_workers=2 * REQUESTS) as pool:
        clicks = [pool.submit(click, (n + 1) % 3, request_id, "UBOB") for n, request_id in enumerate(asked)]
        clicks += [pool.submit(click, (n + 2) % 3, request_id, "UCAROL") for n, request_id in enumerate(asked)]
        for answer in clicks:
            answer.result(timeout=2 * TWENTY_ASKS_TIMEOUT)

    # Twenty executions, each verified by its effect, share three replicas' workers: allow what twenty asks get.
    finished = [wait_finished(replicas[0], fake_slack, request_id, timeout=TWENTY_ASKS_TIMEOUT) for request_id in asked]
    assert {r.state for r in finished} == {RequestState.SUCCEEDED}, [
        r.result for r in finished if r.state != RequestState.SUCCEEDED]
    assert created_peer_authentications(kube) == REQUESTS  # one write per request, none twice
    assert [executions(replicas[0], r.id, r.incident_id) for r in finished] == [1] * REQUESTS


class KilledPool:
    """A replica's worker pool after kill -9: what is handed to it never runs."""

    def submit(self, *args, **kwargs) -> None:
        return None

    def shutdown(self, *args, **kwargs) -> None:
        return None


def abandon(meshbot, request_id: int, heartbeat: datetime) -> None:
    """What a replica leaves behind when it is killed after the approving click, mid-action.

    The two approvals really happen (their keyed events and the single-use grant are what authorise a resume,
    issue 24); the replica dies before its worker starts, having claimed the execution at ``heartbeat``."""
    meshbot.approvals.workers = KilledPool()
    for approver in ("UBOB", "UCAROL"):
        meshbot.approvals.click(request_id, approver, Vote.APPROVE)
    # The lease ends ``EXECUTION_LEASE`` after the heartbeat, on the database's clock (as the store writes it).
    lease_left = (heartbeat + EXECUTION_LEASE - datetime.now(timezone.utc)).total_seconds()
    with meshbot.database.transaction() as db:
        db.execute("UPDATE approval_requests SET state = 'executing', executor = 'replica-killed', heartbeat_at = ?, "
                   "attempt = attempt + 1, lease_until = ((julianday('now') - 2440587.5) * 86400.0) + ? WHERE id = ?",
                   [iso(heartbeat), lease_left, request_id])


def test_a_request_whose_replica_died_mid_action_is_resumed_once_by_one_survivor(replicas, kube, fake_slack):
    request_id, _ = ask(replicas[0], fake_slack, "permissive-mtls team-1")
    abandon(replicas[0], request_id, datetime.now(timezone.utc) - timedelta(minutes=5))
    survivors = [replicas[1].approvals, replicas[2].approvals]
    barrier = threading.Barrier(2)

    def sweep(desk) -> None:
        barrier.wait(timeout=10)
        desk.resume_abandoned()

    threads = [threading.Thread(target=sweep, args=(desk,)) for desk in survivors]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    done = wait_finished(replicas[1], fake_slack, request_id)
    assert done.state == RequestState.SUCCEEDED
    assert created_peer_authentications(kube) == 1
    assert executions(replicas[1], request_id, done.incident_id) == 1


def test_a_request_whose_executor_is_still_heartbeating_is_not_taken_over(replicas, kube, fake_slack):
    request_id, _ = ask(replicas[0], fake_slack, "permissive-mtls team-2")
    abandon(replicas[0], request_id, datetime.now(timezone.utc))  # alive: heartbeat just now
    assert replicas[1].approvals.resume_abandoned() == 0
    assert replicas[1].approvals.get(request_id).state == RequestState.EXECUTING
    assert created_peer_authentications(kube) == 0
