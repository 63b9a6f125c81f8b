"""Makes the embedded cluster react like a real one to what the bot's actions write.

A real cluster has a Deployment controller (a changed pod template rolls the pods),
Istio's sidecar injector (a new pod gets ``istio-proxy`` unless injection is off) and
the kubelet (a fresh container starts clean).  kmock has none of them, so after an
approved ``restart`` or ``bypass`` nothing would happen.  This controller closes the
gap for the demo, through the same Kubernetes API the bot uses:

- a Deployment whose pod template changed (``restartedAt`` bumped, injection label set)
  gets new pods in place of the old ones;
- a new pod runs ``istio-proxy`` only where Istio would inject it;
- application containers start Ready (a restarted, OOMKilled istiod comes back), but
  a sidecar keeps the state it had: a restart does not cure what broke it (an expired
  root stays expired; only fixing the certificate would).

``plan_rollout`` is the pure decision; ``DemoController`` polls and applies it.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from bot.demo.cluster import INJECTED_LABELS, SIDECAR, TEMPLATE_HASH_LABEL, owning_deployment, template_hash
from commands.clients.kube import KubeClient
from commands.errors import MeshbotError
from commands.times import rfc3339

log = logging.getLogger(__name__)

INJECT_LABEL = "sidecar.istio.io/inject"
"""Pod-template label; "false" opts the pod out of injection whatever its namespace says.
(istio.io/latest/docs/setup/additional-setup/sidecar-injection/#controlling-the-injection-policy)"""
NAMESPACE_INJECTION = "istio-injection"
"""Namespace label; ``disabled`` turns injection off for the namespace (same page)."""
INJECTED_ANNOTATION = "sidecar.istio.io/status"


@dataclass(frozen=True)
class Rollout:
    """New pods for a Deployment whose template changed, replacing ``retire``."""

    namespace: str
    deployment: str
    template_hash: str
    retire: tuple[str, ...]
    start: tuple[dict[str, Any], ...]


def injects_sidecar(template: Mapping[str, Any], namespace_labels: Mapping[str, str], was_injected: bool) -> bool:
    """Istio's injection policy for a new pod: a pod label "false" or a disabled namespace win over the rest."""
    labels = (template.get("metadata") or {}).get("labels") or {}
    if str(labels.get(INJECT_LABEL, "")).lower() == "false":
        return False
    if namespace_labels.get(NAMESPACE_INJECTION) == "disabled":
        return False
    if str(labels.get(INJECT_LABEL, "")).lower() == "true" or namespace_labels.get(NAMESPACE_INJECTION) == "enabled":
        return True
    return was_injected  # injected through a revision label or a mesh-wide default the scenario does not show


def _sidecar(pod: Mapping[str, Any]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The old pod's istio-proxy container and its status, if it had one."""
    container = next((c for c in (pod.get("spec") or {}).get("containers") or [] if c.get("name") == SIDECAR), None)
    status = next((s for s in (pod.get("status") or {}).get("containerStatuses") or [] if s.get("name") == SIDECAR),
                  None)
    return container, status


def _new_pod(deployment: Mapping[str, Any], old: Mapping[str, Any], digest: str, inject: bool,
             now: datetime) -> dict[str, Any]:
    meta, template = deployment["metadata"], deployment["spec"]["template"]
    name = meta["name"]
    suffix = hashlib.sha256(f"{old['metadata']['name']}/{digest}".encode()).hexdigest()[:5]
    labels = {k: v for k, v in ((template.get("metadata") or {}).get("labels") or {}).items()
              if k not in INJECTED_LABELS}
    labels[TEMPLATE_HASH_LABEL] = digest
    containers = [dict(c) for c in template["spec"].get("containers") or []]
    statuses = [{"name": c["name"], "ready": True, "restartCount": 0, "image": c.get("image"),
                 "state": {"running": {"startedAt": rfc3339(now)}}} for c in containers]
    annotations = dict((template.get("metadata") or {}).get("annotations") or {})
    old_sidecar, old_sidecar_status = _sidecar(old)
    if inject:
        labels["security.istio.io/tlsMode"] = "istio"
        annotations[INJECTED_ANNOTATION] = '{"containers":["istio-proxy"]}'
        containers.append(dict(old_sidecar or {"name": SIDECAR, "image": "docker.io/istio/proxyv2"}))
        # The sidecar's trouble (a certificate it cannot use) survives a restart, so does its state.
        carried = dict(old_sidecar_status or {"name": SIDECAR, "ready": True, "restartCount": 0,
                                              "state": {"running": {}}})
        statuses.append(carried)
    ready = all(s.get("ready") for s in statuses)
    old_spec = old.get("spec") or {}
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": f"{name}-{digest}-{suffix}", "namespace": meta["namespace"], "labels": labels,
                     "annotations": annotations,
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": f"{name}-{digest}",
                                          "uid": f"demo-{digest}"}]},
        "spec": {**{k: v for k, v in old_spec.items() if k in ("serviceAccountName", "nodeName")},
                 "containers": containers},
        "status": {"phase": "Running", "podIP": (old.get("status") or {}).get("podIP"),
                   "startTime": rfc3339(now),
                   "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                   "containerStatuses": statuses},
    }


def plan_rollout(deployment: Mapping[str, Any], pods: Sequence[Mapping[str, Any]],
                 namespace_labels: Mapping[str, str], now: datetime) -> Rollout | None:
    """New pods for the Deployment's pods that run an older template, or None when all are current."""
    meta = deployment["metadata"]
    digest = template_hash(deployment["spec"]["template"])
    owned = [p for p in pods if (p.get("metadata") or {}).get("namespace") == meta["namespace"]
             and owning_deployment(p) == meta["name"]]
    stale = [p for p in owned if ((p["metadata"].get("labels") or {}).get(TEMPLATE_HASH_LABEL)) != digest]
    if not stale:
        return None
    template = deployment["spec"]["template"]
    start = tuple(_new_pod(deployment, old, digest,
                           injects_sidecar(template, namespace_labels, _sidecar(old)[0] is not None), now)
                  for old in stale)
    return Rollout(meta["namespace"], meta["name"], digest, tuple(p["metadata"]["name"] for p in stale), start)


class DemoController:
    """Polls the embedded cluster and applies ``plan_rollout`` through the Kubernetes API."""

    def __init__(self, client: KubeClient, *, interval: float = 0.3,
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)):
        self.client = client
        self.interval = interval
        self.clock = clock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="demo-controller", daemon=True)

    def start(self) -> DemoController:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.reconcile()
            except MeshbotError as exc:  # the API server is going away with the demo; try again or stop
                log.debug("demo controller: %s", exc)

    def reconcile(self) -> list[Rollout]:
        """One pass: roll every Deployment whose pods run an older template."""
        namespaces = {n["metadata"]["name"]: n["metadata"].get("labels") or {} for n in self.client.list("Namespace")}
        pods = self.client.list("Pod")
        done = []
        for deployment in self.client.list("Deployment"):
            rollout = plan_rollout(deployment, pods, namespaces.get(deployment["metadata"]["namespace"], {}),
                                   self.clock())
            if rollout is not None:
                self._apply(deployment, rollout)
                done.append(rollout)
        return done

    def _apply(self, deployment: Mapping[str, Any], rollout: Rollout) -> None:
        for name in rollout.retire:
            self.client.delete("Pod", rollout.namespace, name)
            try:
                self.client.delete("PodMetrics", rollout.namespace, name)
            except MeshbotError:
                pass  # no metrics were recorded for this pod
        for pod in rollout.start:
            self.client.create("Pod", pod, namespace=rollout.namespace)
        generation = deployment["metadata"].get("generation", 1)
        count = len(rollout.start)
        ready = sum(1 for p in rollout.start if p["status"]["conditions"][0]["status"] == "True")
        self.client.patch("Deployment", rollout.namespace, rollout.deployment, {"status": {
            "observedGeneration": generation, "replicas": count, "updatedReplicas": count,
            "readyReplicas": ready, "availableReplicas": ready}})
        log.info("demo controller: rolled %s/%s (%d pod(s))", rollout.namespace, rollout.deployment, count)
