"""Events as evidence and the change timeline, read from the Kubernetes emulator (managedFields included)."""

from __future__ import annotations

import copy
from datetime import datetime, timedelta, timezone

from commands.telemetry.changes import REPLICA_SETS, ChangeKind, read_changes
from commands.telemetry.events import event_findings, read_events, summarize_events
from commands.times import rfc3339
from tests.support.certs import mint
from tests.support.kube import resource_of

NOW = datetime(2026, 12, 1, 10, 0, tzinfo=timezone.utc)


def _at(minutes_before: float) -> str:
    return rfc3339(NOW - timedelta(minutes=minutes_before))


def _managed(manager: str, minutes_before: float, *, operation: str = "Update", subresource: str | None = None,
             fields: dict | None = None) -> dict:
    entry = {"manager": manager, "operation": operation, "apiVersion": "v1", "time": _at(minutes_before),
             "fieldsType": "FieldsV1", "fieldsV1": fields or {"f:spec": {}}}
    if subresource:
        entry["subresource"] = subresource
    return entry


def _event(name: str, namespace: str, reason: str, message: str, involved: tuple[str, str], *, count: int = 1,
           minutes_before: float = 1, kind: str = "Warning") -> dict:
    return {"apiVersion": "v1", "kind": "Event", "metadata": {"name": name, "namespace": namespace},
            "type": kind, "reason": reason, "message": message, "count": count,
            "lastTimestamp": _at(minutes_before), "firstTimestamp": _at(minutes_before + 5),
            "involvedObject": {"kind": involved[0], "name": involved[1], "namespace": namespace}}


def _seed_replica_set(kube, obj: dict) -> None:
    """ReplicaSets are not in meshbot's kinds table (only the timeline reads them): seed them directly."""
    def store() -> None:
        kube.emulator.resources.setdefault(resource_of(REPLICA_SETS), {})
        kube.emulator.objects[resource_of(REPLICA_SETS), obj["metadata"]["namespace"], obj["metadata"]["name"]] = \
            copy.deepcopy(obj)
    kube.loop.call(store)


# -- events ---------------------------------------------------------------------------------------------


def test_warning_events_are_one_line_per_reason_and_object_with_counts_and_last_seen(kube, kube_client):
    kube.add(
        _event("p1.a", "shop", "Unhealthy", "Readiness probe failed: Get http://10.0.0.5:15021/healthz/ready",
               ("Pod", "payments-7d4b9c-abcde"), count=3, minutes_before=4),
        _event("p1.b", "shop", "Unhealthy", "Readiness probe failed: Get http://10.0.0.5:15021/healthz/ready",
               ("Pod", "payments-7d4b9c-abcde"), count=2, minutes_before=1),
        _event("rs.a", "shop", "FailedCreate",
               'Error creating: Internal error occurred: failed calling webhook "namespace.sidecar-injector.istio.io"',
               ("ReplicaSet", "payments-7d4b9c"), count=12, minutes_before=2),
        _event("other.a", "elsewhere", "BackOff", "Back-off restarting failed container", ("Pod", "x")),
    )

    events, problems = read_events(kube_client, ["shop"], "istio-system")
    evidence = summarize_events(events, ["shop"], "istio-system")

    assert problems == []
    assert [(e.reason, e.object, e.count) for e in evidence] == [
        ("Unhealthy", "Pod shop/payments-7d4b9c-abcde", 5),
        ("FailedCreate", "ReplicaSet shop/payments-7d4b9c", 12)]
    assert evidence[0].last_seen == NOW - timedelta(minutes=1)
    assert evidence[0].meaning == "the sidecar (istio-proxy) is not ready"
    assert "injection webhook" in evidence[1].meaning


def test_only_warning_events_are_asked_for(kube, kube_client):
    kube.add(_event("n.a", "shop", "Scheduled", "Successfully assigned", ("Pod", "p"), kind="Normal"),
             _event("w.a", "shop", "BackOff", "Back-off restarting failed container istio-proxy", ("Pod", "p")))

    events, _ = read_events(kube_client, ["shop"], "istio-system")

    assert [e["reason"] for e in events] == ["BackOff"]


def test_istio_namespace_mounts_and_node_oom_kills_are_in_scope(kube, kube_client):
    kube.add(
        _event("m.a", "istio-system", "FailedMount",
               'MountVolume.SetUp failed for volume "istiod-ca-cert" : configmap "istio-ca-root-cert" not found',
               ("Pod", "istiod-5d8f7c9b6-qx7wz")),
        {**_event("oom.a", "default", "OOMKilling", "Out of memory: Killed process 4242 (pilot-discovery)",
                  ("Node", "node-a")), "involvedObject": {"kind": "Node", "name": "node-a"}},
    )

    events, _ = read_events(kube_client, [], "istio-system")
    evidence = summarize_events(events, ["shop"], "istio-system")

    assert {e.reason for e in evidence} == {"FailedMount", "OOMKilling"}
    assert {f.code for f in event_findings(evidence)} == {"MB6030"}


def test_events_that_cannot_be_read_name_the_missing_permission(kube, kube_client):
    kube.fail("Event", 403)

    events, problems = read_events(kube_client, ["shop"], "istio-system")

    assert events == []
    assert {p.code for p in problems} == {"MB0001"}
    assert "list events" in problems[0].message


# -- changes: one test per kind of change ----------------------------------------------------------------


def test_mesh_config_change_has_its_time_and_manager_from_managed_fields(kube, kube_client):
    kube.add({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
              "metadata": {"name": "deny-all", "namespace": "shop", "creationTimestamp": _at(300),
                           "managedFields": [_managed("kubectl-client-side-apply", 300),
                                             _managed("argocd-controller", 12, operation="Apply"),
                                             _managed("pilot-discovery", 11, subresource="status")]},
              "spec": {}})

    changes, problems = read_changes(kube_client, ["shop"], "istio-system")

    assert problems == []
    assert [(c.kind, c.object, c.what, c.manager, c.at) for c in changes] == [
        (ChangeKind.CONFIG, "AuthorizationPolicy shop/deny-all", "created", "kubectl-client-side-apply",
         NOW - timedelta(minutes=300)),
        (ChangeKind.CONFIG, "AuthorizationPolicy shop/deny-all", "applied", "argocd-controller",
         NOW - timedelta(minutes=12))]


def test_every_mesh_kind_is_part_of_the_timeline(kube, kube_client):
    kinds = {"VirtualService": "networking.istio.io/v1", "DestinationRule": "networking.istio.io/v1",
             "PeerAuthentication": "security.istio.io/v1", "EnvoyFilter": "networking.istio.io/v1alpha3",
             "Sidecar": "networking.istio.io/v1", "Gateway": "networking.istio.io/v1",
             "Telemetry": "telemetry.istio.io/v1", "ServiceEntry": "networking.istio.io/v1"}
    kube.add(*({"apiVersion": api, "kind": kind, "metadata": {
        "name": kind.lower(), "namespace": "istio-system", "creationTimestamp": _at(30),
        "managedFields": [_managed("kubectl", 30)]}, "spec": {}} for kind, api in kinds.items()))

    changes, _ = read_changes(kube_client, ["shop"], "istio-system")

    assert {c.object.split()[0] for c in changes} == set(kinds)


def test_namespace_injection_label_change_names_the_label_and_its_value(kube, kube_client):
    kube.add({"apiVersion": "v1", "kind": "Namespace",
              "metadata": {"name": "shop", "labels": {"istio.io/rev": "canary"}, "creationTimestamp": _at(900),
                           "managedFields": [_managed("kubectl-label", 7, fields={
                               "f:metadata": {"f:labels": {"f:istio.io/rev": {}, "f:istio-injection": {}}}})]}})

    changes, _ = read_changes(kube_client, ["shop"], "istio-system")

    assert [(c.kind, c.object, c.what, c.manager) for c in changes] == [
        (ChangeKind.INJECTION, "Namespace shop", "label istio-injection removed", "kubectl-label"),
        (ChangeKind.INJECTION, "Namespace shop", "label istio.io/rev=canary set", "kubectl-label")]


def test_a_rollout_is_the_new_replica_set_credited_to_the_deployments_writer(kube, kube_client):
    kube.add({"apiVersion": "apps/v1", "kind": "Deployment",
              "metadata": {"name": "payments", "namespace": "shop", "creationTimestamp": _at(900),
                           "managedFields": [_managed("helm", 6),
                                             _managed("kube-controller-manager", 5, subresource="status")]},
              "spec": {}})
    _seed_replica_set(kube, {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {
        "name": "payments-7d4b9c", "namespace": "shop", "creationTimestamp": _at(6),
        "annotations": {"deployment.kubernetes.io/revision": "4"},
        "ownerReferences": [{"kind": "Deployment", "name": "payments"}],
        "managedFields": [_managed("kube-controller-manager", 6)]}})

    changes, _ = read_changes(kube_client, ["shop"], "istio-system")

    [rollout] = [c for c in changes if c.kind == ChangeKind.ROLLOUT]
    assert (rollout.object, rollout.what, rollout.manager) == (
        "Deployment shop/payments", "rolled out ReplicaSet payments-7d4b9c (revision 4)", "helm")
    assert rollout.at == NOW - timedelta(minutes=6)


def test_istiod_restarts_carry_the_last_exit_reason(kube, kube_client):
    kube.add({"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": "istiod-5d8f7c9b6-qx7wz", "namespace": "istio-system", "labels": {"app": "istiod"}},
        "spec": {"containers": [{"name": "discovery"}]},
        "status": {"startTime": _at(600), "containerStatuses": [{
            "name": "discovery", "restartCount": 7, "state": {"running": {"startedAt": _at(3)}},
            "lastState": {"terminated": {"reason": "OOMKilled", "finishedAt": _at(3)}}}]}})

    changes, _ = read_changes(kube_client, ["shop"], "istio-system")

    restarts = [c for c in changes if c.kind == ChangeKind.RESTART]
    assert [c.what for c in restarts] == ["started", "container discovery restarted (7 restarts, last exit OOMKilled)"]


def test_mesh_root_not_before_is_a_certificate_change(kube, kube_client):
    root = mint("mesh root", not_before=NOW - timedelta(minutes=20), days=3650, is_ca=True)
    kube.add({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {
        "name": "istio-ca-root-cert", "namespace": "istio-system",
        "managedFields": [_managed("pilot-discovery", 19)]}, "data": {"root-cert.pem": root.cert_pem}})

    changes, _ = read_changes(kube_client, ["shop"], "istio-system")

    [change] = [c for c in changes if c.kind == ChangeKind.CERTIFICATE]
    assert change.at == NOW - timedelta(minutes=20)
    assert change.manager == "pilot-discovery"
    assert "valid from (notBefore)" in change.what


def test_an_unreachable_api_server_is_one_finding_not_a_timeout_per_kind(kube, kube_client):
    kube.slow("VirtualService", 3.0)

    changes, problems = read_changes(kube_client, ["shop"], "istio-system")

    assert changes == []
    assert [p.code for p in problems] == ["MB0002"]
