"""The bot's one view of the cluster (coalesced reads, watched configuration) and its queue of diagnoses."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bot.cluster import ClusterAccess, ClusterView
from bot.diagnosis import Diagnostician, queued_text
from bot.settings import Settings
from commands.catalog import default_checks
from tests.support.diagnosis_gate import DiagnosisGate
from tests.support.kube import FakeKube


def service(name: str, namespace: str = "prod") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": namespace},
            "spec": {"ports": [{"name": "http", "port": 80}]}}


def pod(name: str, namespace: str = "prod") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace}}


def names(items: list[dict[str, Any]]) -> set[str]:
    return {item["metadata"]["name"] for item in items}


def eventually(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_concurrent_identical_reads_cost_one_list(kube: FakeKube):
    kube.slow("Pod", 0.5, namespace="prod")
    view = ClusterView(kube.client(timeout=5))

    with ThreadPoolExecutor(10) as pool:
        list(pool.map(lambda _: view.read_list("Pod", "prod"), range(10)))

    assert kube.count("GET", "/api/v1/namespaces/prod/pods") == 1


def test_a_namespace_read_serves_later_diagnoses_while_fresh(kube: FakeKube):
    kube.add(pod("a"))
    view = ClusterView(kube.client(), fresh_seconds=60)

    view.read_list("Pod", "prod")
    again = view.read_list("Pod", "prod")

    assert names(again.items) == {"a"}
    assert kube.count("GET", "/api/v1/namespaces/prod/pods") == 1


def test_a_namespace_read_is_read_again_once_stale_and_never_watched(kube: FakeKube):
    kube.add(pod("a"))
    view = ClusterView(kube.client(), fresh_seconds=0)

    view.read_list("Pod", "prod")
    kube.add(pod("b"))
    again = view.read_list("Pod", "prod")

    assert names(again.items) == {"a", "b"}
    assert kube.count("GET", "/api/v1/namespaces/prod/pods") == 2
    assert not [r for r in kube.requests("GET") if r.params.get("watch") == "true"]


def test_mesh_wide_configuration_is_listed_once_then_kept_current_by_a_watch(kube: FakeKube):
    kube.add(service("a"))
    view = ClusterView(kube.client(timeout=5), fresh_seconds=0)
    try:
        assert names(view.read_list("Service").items) == {"a"}

        kube.add(service("b"))
        kube.remove("Service", "prod", "a")

        eventually(lambda: names(view.read_list("Service").items) == {"b"})
        lists = [r for r in kube.requests("GET", "/api/v1/services") if r.params.get("watch") != "true"]
        assert len(lists) == 1
    finally:
        view.close()


def test_a_watch_answered_410_gone_lists_again(kube: FakeKube):
    kube.add(service("a"))
    # The watch is throttled once for 1 s: time to change and compact the history before it starts from the
    # list's (by then compacted) resourceVersion.
    kube.throttle(1, kind="Service", verb="watch", retry_after="1")
    view = ClusterView(kube.client(timeout=5), fresh_seconds=0)
    try:
        view.read_list("Service")
        kube.add(service("b"))
        kube.compact()

        eventually(lambda: names(view.read_list("Service").items) == {"a", "b"})
        lists = [r for r in kube.requests("GET", "/api/v1/services") if r.params.get("watch") != "true"]
        assert len(lists) == 2  # the list, and the list again after 410
    finally:
        view.close()


def test_a_failed_read_is_not_remembered(kube: FakeKube):
    kube.fail("Pod", 500, namespace="prod")
    view = ClusterView(kube.client(), fresh_seconds=60)

    for _ in range(2):
        try:
            view.read_list("Pod", "prod")
        except Exception:
            pass

    assert kube.count("GET", "/api/v1/namespaces/prod/pods") == 2


# -- the queue -----------------------------------------------------------------------------------


def diagnostician(gate: DiagnosisGate, max_running: int) -> Diagnostician:
    cluster = ClusterAccess(Settings(slack_bot_token="xoxb-test", slack_signing_secret="s"))
    return Diagnostician(cluster, default_checks(), runner=gate, max_running=max_running)


def test_a_diagnosis_beyond_the_cap_waits_and_is_told_how_many_are_ahead():
    gate = DiagnosisGate()
    doctor = diagnostician(gate, max_running=2)
    told: list[int] = []
    with ThreadPoolExecutor(4) as pool:
        first = [pool.submit(doctor.run, ["status"], ns) for ns in ("a", "b")]
        eventually(lambda: len(gate.started) == 2)
        third = pool.submit(doctor.run, ["status"], "c", on_queued=told.append)
        eventually(lambda: told == [2])

        assert gate.started == ["a", "b"] or gate.started == ["b", "a"]
        gate.release.set()
        results = [f.result(10) for f in (*first, third)]

    assert gate.started[-1] == "c"
    assert results[2].queued_seconds > 0
    assert all(r.error is None for r in results)


def test_the_same_diagnosis_asked_twice_runs_once_and_never_queues():
    gate = DiagnosisGate()
    doctor = diagnostician(gate, max_running=1)
    told: list[int] = []
    with ThreadPoolExecutor(3) as pool:
        owner = pool.submit(doctor.run, ["status"], "prod")
        eventually(lambda: len(gate.started) == 1)
        joined = pool.submit(doctor.run, ["status"], "prod", on_queued=told.append)
        gate.release.set()
        owner.result(10), joined.result(10)

    assert gate.started == ["prod"] and told == []


def test_submitted_diagnoses_wait_for_their_turn_without_a_worker_and_identical_ones_share_one_run():
    gate = DiagnosisGate()
    doctor = diagnostician(gate, max_running=1)
    told: list[int] = []
    with ThreadPoolExecutor(2) as workers:
        runs = [doctor.submit(["status"], ns, workers=workers, on_queued=told.append) for ns in ("a", "b", "c")]
        joined = [doctor.submit(["status"], "c", workers=workers) for _ in range(40)]
        eventually(lambda: gate.started == ["a"])
        # One run holds the only place; the two queued ones hold no worker, so the second worker is free.
        assert workers.submit(lambda: "free").result(5) == "free"
        assert told == [1, 2] and doctor.queue.depth == 3
        assert all(future is runs[2] for future in joined), "a request for a queued diagnosis joins it"
        gate.release.set()
        results = [future.result(10) for future in runs]

    assert gate.started == ["a", "b", "c"], "in the order they were asked for, one at a time"
    assert results[2].queued_seconds > 0 and all(r.error is None for r in results)
    assert doctor.queue.depth == 0


def test_a_diagnosis_submitted_after_the_workers_stopped_answers_that_meshbot_is_stopping():
    doctor = diagnostician(DiagnosisGate(), max_running=1)
    workers = ThreadPoolExecutor(1)
    workers.shutdown()
    result = doctor.submit(["status"], "prod", workers=workers).result(5)
    assert result.error and "stopping" in result.error and doctor.queue.depth == 0


def test_the_queued_note_counts_diagnoses():
    assert "Queued behind 1 diagnosis;" in queued_text(1)
    assert "Queued behind 3 diagnoses;" in queued_text(3)
