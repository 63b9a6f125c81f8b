"""A Kubernetes API for tests: kmock's KubernetesEmulator on a background event loop.

Fixtures:
  ``kube``         a fresh emulator per test, as a ``FakeKube``: seed objects, inject
                   failures and delays, count requests, build a ``KubeClient`` for it.
  ``kube_client``  ``kube.client()`` — a KubeClient with a 1 s timeout.

The emulator keeps objects in memory and answers list/get/create/patch/delete like
an API server.  It checks object existence before any injected reaction: a
create of an existing object is 409 and a patch/delete of a missing one 404
whatever ``fail``/``slow`` say, so seed accordingly.  What it lacks is added in here, test-side only: Namespace paths
(a kmock 0.8 parser bug), fieldSelector/labelSelector filtering on lists, and two
behaviours of a real API server that kmock 0.8 does not have: ``dryRun=All`` writes
store nothing, and a write refused by ``fail`` (403, 409, 500…) changes nothing.
Optimistic concurrency, as the real API server does it: every stored object has a
``metadata.resourceVersion`` that each write bumps, and a patch carrying a stale one
is answered 409 Conflict (kmock 0.8 ignores it).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any, TypeVar

import kmock
import pytest
from kmock._internal import apps, k8s

from bot.demo.cluster import patch_namespace_paths, selected

from commands.resources.kinds import KINDS, KindInfo
from commands.clients.kube import KubeClient

T = TypeVar("T")

TEST_TIMEOUT = 1.0
"""Client timeout in tests: short, so timeout scenarios finish fast."""

_ACTIONS = {
    "list": kmock.action.LIST, "get": kmock.action.FETCH, "create": kmock.action.CREATE,
    "patch": kmock.action.UPDATE, "delete": kmock.action.DELETE,
}
_REASONS = {401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 409: "AlreadyExists",
            422: "Invalid", 500: "InternalError", 503: "ServiceUnavailable"}


patch_namespace_paths()


def resource_of(kind: str | KindInfo) -> kmock.resource:
    info = kind if isinstance(kind, KindInfo) else KINDS[kind]
    return kmock.resource(group=info.group, version=info.version, plural=info.plural)


def status_body(status: int, message: str) -> dict[str, Any]:
    """A ``kind: Status`` answer as the API server sends with errors."""
    return {"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure",
            "message": message, "reason": _REASONS.get(status, "Unknown"), "code": status}


class EventLoopThread:
    """One asyncio loop in a daemon thread; tests hand it coroutines and callables."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="kmock-loop", daemon=True)
        self._thread.start()

    def run(self, coroutine: Awaitable[T], timeout: float = 10) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)  # type: ignore[arg-type]

    def call(self, function: Callable[[], T]) -> T:
        """Run ``function`` on the loop thread, where kmock's state lives."""
        async def call() -> T:
            return function()
        return self.run(call())

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)


# -- selectors: kmock lists ignore them, a real API server does not (bot.demo.cluster.selected) --


def _has_selector(request: kmock.Request) -> bool:
    return bool(request.params.get("fieldSelector") or request.params.get("labelSelector"))


_WRITES = (kmock.action.CREATE, kmock.action.UPDATE, kmock.action.DELETE)


def _conflict(request: Any) -> k8s.KubernetesObjectConflictError:
    """409 for a write whose ``metadata.resourceVersion`` is not the stored one, in the API server's words."""
    # k8s.io/apimachinery/pkg/api/errors NewConflict + registry/generic/registry/store.go OptimisticLockErrorMsg
    what = f"{request.resource.plural}.{request.resource.group}" if request.resource.group \
        else request.resource.plural
    return k8s.KubernetesObjectConflictError(reason="Conflict", message=(
        f'Operation cannot be fulfilled on {what} "{request.name}": the object has been modified; '
        "please apply your changes to the latest version and try again"))


class ApiServerEmulator(kmock.KubernetesEmulator):
    """kmock's emulator, with dry-run writes and refused writes leaving the stored objects alone,
    and resourceVersion enforced on patches."""

    refusals: list[Callable[[Any], bool]]

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.refusals = []
        self.last_resource_version = 0
        # A dry run is emulated by writing and then restoring the store; a real API server never stores it, so
        # nothing else may see that moment: writes queue behind each other and reads wait for it to pass.
        self._writes = asyncio.Lock()
        self._no_dry_run = asyncio.Event()
        self._no_dry_run.set()

    def next_resource_version(self) -> str:
        self.last_resource_version += 1
        return str(self.last_resource_version)

    async def _handle(self, request: Any) -> Any:
        if request.resource is not None and request.action in _WRITES:
            async with self._writes:
                return await self._write(request)
        await self._no_dry_run.wait()
        return await super()._handle(request)

    async def _write(self, request: Any) -> Any:
        if any(refused(request) for refused in self.refusals):
            return await apps.RawHandler._handle(self, request)  # the reaction answers; nothing is stored
        # Writes are serialised by _writes, so no other write slips in between this check and the write.
        if request.action == kmock.action.UPDATE and request.name is not None and self._stale(request):
            raise _conflict(request)
        if request.action in (kmock.action.CREATE, kmock.action.UPDATE) and isinstance(request.data, dict):
            return await self._stamped(request)
        if request.params.get("dryRun") == "All":
            return await self._dry_run(request)
        return await super()._handle(request)

    async def _stamped(self, request: Any) -> Any:
        """The write with a new resourceVersion in it, so the stored object and the answer carry it; put back
        afterwards so ``requests()`` shows what the client sent.  (kmock's Request is frozen and its reactions
        match the recorded instance, so the instance is changed in place rather than copied.)"""
        sent = request.data
        stamped = copy.deepcopy(sent)
        stamped.setdefault("metadata", {})["resourceVersion"] = self.next_resource_version()
        object.__setattr__(request, "data", stamped)
        try:
            if request.params.get("dryRun") == "All":
                return await self._dry_run(request)
            return await super()._handle(request)
        finally:
            object.__setattr__(request, "data", sent)

    def _stale(self, request: Any) -> bool:
        """A patch naming a resourceVersion other than the stored object's (absent: last write wins)."""
        wanted = ((request.data or {}).get("metadata") or {}).get("resourceVersion") \
            if isinstance(request.data, dict) else None
        key = (request.resource, request.namespace, request.name)
        if wanted is None or key not in self._objects or self._objects[key].deleted:
            return False  # a missing object is kmock's 404 to give
        stored = (self._objects[key].get("metadata") or {}).get("resourceVersion")
        return str(wanted) != str(stored)

    async def _dry_run(self, request: Any) -> Any:
        """Answer as the real write would, then put every stored object back as it was."""
        saved = copy.deepcopy(self._objects)
        self._no_dry_run.clear()
        try:
            return await super()._handle(request)
        finally:
            self._objects = saved
            self._no_dry_run.set()


class FakeKube:
    """The test's handle on one emulated API server."""

    def __init__(self, loop: EventLoopThread, emulator: kmock.KubernetesEmulator, url: str,
                 release: asyncio.Event):
        self.loop = loop
        self.emulator = emulator
        self.url = url.rstrip("/")
        self._release = release
        loop.call(self._install_defaults)

    def _install_defaults(self) -> None:
        for info in KINDS.values():  # every kind is served (lists answer [] rather than 404)
            self.emulator.resources[resource_of(info)] = {}
        (self.emulator ** -1)[kmock.action.LIST][_has_selector] << self._filtered_list

    def _filtered_list(self, request: kmock.Request) -> dict[str, Any]:
        if not any(resource == request.resource for resource in self.emulator.resources) and not any(
                key[0] == request.resource for key, _ in self.emulator.objects.items()):
            raise kmock.KubernetesResourceNotFoundError()
        items = [obj.raw for (resource, namespace, _), obj in self.emulator.objects.items()
                 if resource == request.resource and not obj.deleted
                 and (request.namespace is None or namespace == request.namespace)]
        fields, labels = request.params.get("fieldSelector", ""), request.params.get("labelSelector", "")
        return {"metadata": {"resourceVersion": "1"}, "items": [i for i in items if selected(i, fields, labels)]}

    # -- seeding -------------------------------------------------------------------------

    def add(self, *objects: Mapping[str, Any]) -> None:
        """Store objects as if created earlier; ``kind`` picks the resource, metadata the namespace/name."""
        for obj in objects:
            info = KINDS[obj["kind"]]
            meta = obj["metadata"]
            key = (resource_of(info), meta.get("namespace") if info.namespaced else None, meta["name"])
            stored = copy.deepcopy(dict(obj))
            stored["metadata"].setdefault("resourceVersion", self.loop.call(self.emulator.next_resource_version))
            self.loop.call(lambda: self.emulator.objects.__setitem__(key, stored))

    def object(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        """The stored state of an object, or None when absent or deleted."""
        def lookup() -> dict[str, Any] | None:
            key = (resource_of(kind), namespace, name)
            if key not in self.emulator.objects or self.emulator.objects[key].deleted:
                return None
            return copy.deepcopy(self.emulator.objects[key].raw)
        return self.loop.call(lookup)

    def not_served(self, kind: str) -> None:
        """The API server does not know the resource (CRD or metrics-server not installed): lists get 404."""
        self.loop.call(lambda: self.emulator.resources.__delitem__(resource_of(kind)))

    # -- reactions ---------------------------------------------------------------------

    def _view(self, kind: str, verb: str, namespace: str | None, name: str | None,
              subresource: str | None) -> kmock.View:
        view = self.emulator[resource_of(kind), _ACTIONS[verb]]
        if namespace is not None:
            view = view[kmock.namespace(namespace)]
        if name is not None:
            view = view[kmock.name(name)]
        if subresource is not None:
            view = view[kmock.subresource(subresource)]
        return view

    def fail(self, kind: str, status: int, *, verb: str = "list", namespace: str | None = None,
             name: str | None = None, subresource: str | None = None, message: str | None = None) -> None:
        """Answer matching requests with ``status`` and a Status body."""
        body = status_body(status, message or f"{verb} {kind} refused by the test")
        view = self._view(kind, verb, namespace, name, subresource)
        if verb in ("create", "patch", "delete"):
            resource = resource_of(kind)

            def refused(request: kmock.Request) -> bool:
                return (request.resource == resource and request.action == _ACTIONS[verb]
                        and (namespace is None or request.namespace == namespace)
                        and (name is None or request.name == name or verb == "create"))
            self.emulator.refusals.append(refused)
        self.loop.call(lambda: view << status << body)

    def slow(self, kind: str, seconds: float, *, verb: str = "list", namespace: str | None = None) -> None:
        """Answer matching requests only after ``seconds`` (cut short at teardown)."""
        release = self._release

        async def late_answer() -> dict[str, Any]:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(release.wait(), seconds)
            return {"metadata": {}, "items": []}

        view = self._view(kind, verb, namespace, None, None)
        self.loop.call(lambda: view << late_answer)

    # -- assertions ----------------------------------------------------------------------

    def requests(self, method: str | None = None, path: str | None = None) -> list[kmock.Request]:
        """Every request received, optionally only those with this HTTP method and exact path."""
        received = self.loop.call(lambda: list(self.emulator))
        return [r for r in received
                if (method is None or r.method.value.upper() == method.upper())
                and (path is None or r.url.path == path)]

    def count(self, method: str, path: str) -> int:
        return len(self.requests(method, path))

    def client(self, *, timeout: float = TEST_TIMEOUT, token: str | None = None) -> KubeClient:
        return KubeClient.for_host(self.url, token=token, timeout=timeout)


@pytest.fixture(scope="session")
def kube_event_loop() -> Iterator[EventLoopThread]:
    loop = EventLoopThread()
    yield loop
    loop.stop()


@pytest.fixture
def kube(kube_event_loop: EventLoopThread) -> Iterator[FakeKube]:
    """A fresh emulated API server for one test."""
    stack = contextlib.AsyncExitStack()

    async def start() -> tuple[kmock.KubernetesEmulator, str, asyncio.Event]:
        emulator = await stack.enter_async_context(ApiServerEmulator())
        server = await stack.enter_async_context(kmock.Server(emulator))
        return emulator, str(server.url), asyncio.Event()

    emulator, url, release = kube_event_loop.run(start())
    try:
        yield FakeKube(kube_event_loop, emulator, url, release)
    finally:
        kube_event_loop.call(release.set)
        kube_event_loop.run(stack.aclose())


@pytest.fixture
def kube_client(kube: FakeKube) -> Iterator[KubeClient]:
    client = kube.client()
    yield client
    client.close()


def write_kubeconfig(path, url: str, *, context: str = "kmock") -> str:
    """A kubeconfig file whose ``context`` points at ``url`` (the emulator), for CLI tests."""
    import yaml

    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "other",
        "clusters": [{"name": context, "cluster": {"server": url.rstrip("/")}},
                     {"name": "other", "cluster": {"server": "http://127.0.0.1:9"}}],
        "users": [{"name": context, "user": {"token": "test-token-not-a-secret"}}],
        "contexts": [{"name": context, "context": {"cluster": context, "user": context}},
                     {"name": "other", "context": {"cluster": "other", "user": context}}],
    }
    path.write_text(yaml.safe_dump(config))
    return str(path)
