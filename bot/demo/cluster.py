"""The bundled outage as a writable Kubernetes API: kmock's emulator on a loopback port, in a thread.

The bot reaches it through its normal client (a kubeconfig pointing at the URL), so
approved actions really change it.  kmock 0.8 lacks a few things a real API server
does that the bot relies on; they are added here: Namespace paths (a parser bug),
field/label selectors on lists, and server-side dry run (``dryRun=All`` stores nothing —
without it, the desk's rehearsal of an action would already apply it).

The scenario has Pods but no Deployments (a capture of pods); ``deployments_for`` derives
the Deployments their ReplicaSet owners imply, so ``restart`` and ``bypass`` have
something to act on.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import json
import threading
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, cast

import kmock
import yaml
from kmock._internal import parsing

from bot.demo.kmock_matching import ConstantTimeMatching
from commands.cluster.demo import Scenario
from commands.resources.kinds import KINDS, KindInfo

TEMPLATE_HASH_LABEL = "pod-template-hash"
SIDECAR = "istio-proxy"
INJECTED_LABELS = ("security.istio.io/tlsMode", "service.istio.io/canonical-name",
                   "service.istio.io/canonical-revision")
"""Labels Istio's injector adds to a pod (istio/istio pkg/kube/inject/inject.go), not part of its template."""


def patch_namespace_paths() -> None:
    """kmock 0.8 cannot parse ``/api/v1/namespaces[/NAME]`` (/work/shared/TESTING.md); idempotent."""
    original = parsing.parse_path
    if getattr(original, "meshbot_patched", False):
        return

    def parse_path(path: str) -> parsing.ParsedPath:
        parts = path.strip("/").split("/")
        if parts[:3] == ["api", "v1", "namespaces"] and len(parts) <= 4:
            return parsing.ParsedPath("", "v1", "namespaces", None, parts[3] if len(parts) == 4 else None, None)
        return original(path)

    setattr(parse_path, "meshbot_patched", True)  # the mark read above: a second EmbeddedCluster patches nothing
    parsing.parse_path = parse_path


def resource_of(info: KindInfo) -> kmock.resource:
    return kmock.resource(group=info.group, version=info.version, plural=info.plural)


# -- selectors: kmock lists ignore them, a real API server does not -----------------------


def _selector_terms(text: str) -> list[tuple[str, str, str | None]]:
    """``a=b,c!=d,e`` -> [(key, op, value)]: equality, inequality and existence (what the bot sends)."""
    terms: list[tuple[str, str, str | None]] = []
    for term in filter(None, (t.strip() for t in text.split(","))):
        for op in ("!=", "==", "="):
            key, sep, value = term.partition(op)
            if sep:
                terms.append((key.strip(), "!=" if op == "!=" else "=", value.strip()))
                break
        else:
            terms.append((term, "exists", None))
    return terms


def _field(obj: Mapping[str, Any], path: str) -> str | None:
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return None if value is None else str(value)


def selected(obj: Mapping[str, Any], field_selector: str = "", label_selector: str = "") -> bool:
    """Whether a real API server would list ``obj`` for these selectors."""
    labels = (obj.get("metadata") or {}).get("labels") or {}
    checks = [(_field(obj, key), op, value) for key, op, value in _selector_terms(field_selector)]
    checks += [(labels.get(key), op, value) for key, op, value in _selector_terms(label_selector)]
    for actual, op, value in checks:
        if (op == "=" and actual != value) or (op == "!=" and actual == value) or (op == "exists" and actual is None):
            return False
    return True


_WRITES = (kmock.action.CREATE, kmock.action.UPDATE, kmock.action.DELETE)


class DemoApiServer(kmock.KubernetesEmulator, ConstantTimeMatching):
    """kmock's emulator with selectors on lists and server-side dry run.

    ConstantTimeMatching picks each request's reaction without replaying every earlier request, so a demo left
    open for hours answers as fast as a fresh one (bot/demo/kmock_matching.py)."""

    async def _handle(self, request: Any) -> Any:
        if request.resource is not None and request.action in _WRITES and request.params.get("dryRun") == "All":
            saved = copy.deepcopy(self._objects)
            try:
                return await super()._handle(request)
            finally:
                self._objects = saved  # answered as the write would be; nothing stored
        return await super()._handle(request)

    async def _serve_list(self, request: Any) -> Any:
        # kmock types its answers as any payload; a list's is always the JSON object it built.
        answer = cast(dict[str, Any], await super()._serve_list(request))
        fields, labels = request.params.get("fieldSelector", ""), request.params.get("labelSelector", "")
        if fields or labels:
            answer["items"] = [item for item in answer["items"] if selected(item, fields, labels)]
        return answer


# -- the scenario's objects ----------------------------------------------------------------


def scenario_objects(cluster_dir: Path) -> list[dict[str, Any]]:
    """Every object in the scenario's YAML files (``kind: List`` flattened), in file order."""
    objects: list[dict[str, Any]] = []
    for path in sorted(cluster_dir.glob("*.y*ml")):
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if not isinstance(document, dict):
                continue
            items = document.get("items") if document.get("kind") == "List" else [document]
            objects.extend(item for item in items or [] if isinstance(item, dict) and item.get("kind") in KINDS)
    return objects


def template_hash(template: Mapping[str, Any]) -> str:
    """A stable short digest of a pod template (what a Deployment's ``pod-template-hash`` stands for)."""
    text = json.dumps(template, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:9]


def owning_deployment(pod: Mapping[str, Any]) -> str | None:
    """``payment-service`` for a pod owned by ReplicaSet ``payment-service-7d9f8c6b5``."""
    for owner in (pod.get("metadata") or {}).get("ownerReferences") or []:
        if owner.get("kind") == "ReplicaSet" and "-" in str(owner.get("name", "")):
            return str(owner["name"]).rsplit("-", 1)[0]
    return None


def deployments_for(pods: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The Deployments the pods' ReplicaSet owners imply, with the pods' spec (minus the injected sidecar)."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for pod in pods:
        name = owning_deployment(pod)
        meta = pod.get("metadata") or {}
        if name is None:
            continue
        key = (str(meta.get("namespace", "default")), name)
        if key in found:
            found[key]["spec"]["replicas"] += 1
            continue
        labels = {k: v for k, v in (meta.get("labels") or {}).items()
                  if k != TEMPLATE_HASH_LABEL and k not in INJECTED_LABELS}
        containers = [c for c in (pod.get("spec") or {}).get("containers") or [] if c.get("name") != SIDECAR]
        found[key] = {
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": key[0], "generation": 1, "labels": dict(labels)},
            "spec": {"replicas": 1, "selector": {"matchLabels": dict(labels)},
                     "template": {"metadata": {"labels": dict(labels)}, "spec": {"containers": containers}}},
        }
    for deployment in found.values():
        replicas = deployment["spec"]["replicas"]
        deployment["status"] = {"observedGeneration": 1, "replicas": replicas, "updatedReplicas": replicas,
                                "readyReplicas": replicas, "availableReplicas": replicas}
    return list(found.values())


def adopt(deployments: Iterable[Mapping[str, Any]], pods: Iterable[dict[str, Any]]) -> None:
    """Label the scenario's pods with their Deployment's template hash, so that only a change rolls them."""
    digests = {(d["metadata"]["namespace"], d["metadata"]["name"]): template_hash(d["spec"]["template"])
               for d in deployments}
    for pod in pods:
        key = ((pod.get("metadata") or {}).get("namespace"), owning_deployment(pod))
        if key in digests:
            pod["metadata"].setdefault("labels", {})[TEMPLATE_HASH_LABEL] = digests[key]


# -- the running API server ------------------------------------------------------------------


class EmbeddedCluster:
    """The emulator on its own event loop thread; ``url`` is ``http://127.0.0.1:PORT``."""

    def __init__(self) -> None:
        patch_namespace_paths()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="demo-kube", daemon=True)
        self._stack = contextlib.AsyncExitStack()
        self.url = ""
        self.emulator: DemoApiServer | None = None

    def start(self) -> EmbeddedCluster:
        self._thread.start()
        self.emulator, self.url = self._run(self._start())
        return self

    async def _start(self) -> tuple[DemoApiServer, str]:
        emulator = await self._stack.enter_async_context(DemoApiServer())
        server = await self._stack.enter_async_context(kmock.Server(emulator, host="127.0.0.1", port=0))
        for info in KINDS.values():  # every kind is served: an empty list, not a 404 "CRD not installed"
            emulator.resources[resource_of(info)] = kmock.ResourceInfo()
        return emulator, str(server.url).rstrip("/")

    def _started(self) -> DemoApiServer:
        if self.emulator is None:
            raise RuntimeError("the embedded cluster is not started: call start() first")
        return self.emulator

    def _run(self, coroutine: Any, timeout: float = 10) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def load(self, objects: Iterable[Mapping[str, Any]]) -> None:
        """Store objects as if created earlier (on the loop thread, where kmock's state lives)."""
        emulator = self._started()

        async def store() -> None:
            for obj in objects:
                info = KINDS[obj["kind"]]
                meta = obj["metadata"]
                key = (resource_of(info), meta.get("namespace") if info.namespaced else None, meta["name"])
                emulator.objects[key] = copy.deepcopy(dict(obj))
        self._run(store())

    def load_scenario(self, scenario: Scenario) -> None:
        objects = scenario_objects(scenario.cluster_dir)
        pods = [o for o in objects if o["kind"] == "Pod"]
        deployments = deployments_for(pods)
        adopt(deployments, pods)
        self.load(objects)
        self.load(deployments)

    def stored(self) -> Iterator[dict[str, Any]]:
        """A copy of every stored object (for the console's cluster panel and tests)."""
        emulator = self._started()

        async def snapshot() -> list[dict[str, Any]]:
            return [copy.deepcopy(obj.raw) for obj in emulator.objects.values() if not obj.deleted]
        return iter(self._run(snapshot()))

    def kubeconfig(self, path: Path) -> Path:
        """A kubeconfig whose only context points at this API server (plain HTTP on loopback)."""
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "meshbot-demo",
            "clusters": [{"name": "meshbot-demo", "cluster": {"server": self.url}}],
            "users": [{"name": "meshbot-demo", "user": {"token": "demo-token-not-a-secret"}}],
            "contexts": [{"name": "meshbot-demo", "context": {"cluster": "meshbot-demo", "user": "meshbot-demo"}}],
        }
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        return path

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        with contextlib.suppress(Exception):
            self._run(self._stack.aclose())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()
