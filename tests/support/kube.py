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

Reading like a controller needs three more things a real API server does and kmock 0.8 does not:
lists served in pages (``limit``/``continue``, ordered by namespace/name as etcd keys are, with
``remainingItemCount``), watches from a ``resourceVersion`` with bookmarks, and a history that is
compacted, after which an old continue token or watch resourceVersion is answered 410 Gone.  A
test can also make the server throttle (429 with Retry-After, API Priority and Fairness).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import json
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp.web
import attrs
import kmock
import pytest
from kmock._internal import apps, k8s

from bot.demo.cluster import patch_namespace_paths, selected
from bot.demo.kmock_matching import ConstantTimeMatching
from commands.clients.kube import KubeClient
from commands.resources.kinds import KINDS, KindInfo

T = TypeVar("T")

TEST_TIMEOUT = 3.0
"""Client timeout in tests: short, so timeout scenarios finish fast (those that test one pass a shorter timeout
explicitly), yet long enough that kmock, in the same process as four busy test workers on two cores, answers in
time: at 1 s, dry runs and creates were refused "no answer within 1s" under CI's load."""

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


_WRITES = (kmock.action.CREATE, kmock.action.UPDATE, kmock.action.DELETE)


def _conflict(request: Any) -> k8s.KubernetesObjectConflictError:
    """409 for a write whose ``metadata.resourceVersion`` is not the stored one, in the API server's words."""
    # k8s.io/apimachinery/pkg/api/errors NewConflict + registry/generic/registry/store.go OptimisticLockErrorMsg
    what = f"{request.resource.plural}.{request.resource.group}" if request.resource.group \
        else request.resource.plural
    return k8s.KubernetesObjectConflictError(reason="Conflict", message=(
        f'Operation cannot be fulfilled on {what} "{request.name}": the object has been modified; '
        "please apply your changes to the latest version and try again"))


BOOKMARK_SECONDS = 0.2
"""How often an idle watch gets a BOOKMARK (a real API server sends one about every minute; tests are short)."""


@attrs.frozen
class Expired(k8s.KubernetesError):
    """410 Gone, in the API server's words (apimachinery api/errors NewResourceExpired)."""

    status: int = 410
    reason: str = "Expired"
    message: str = "too old resource version"


@dataclass
class Throttle:
    """Answer the next ``times`` matching requests with 429 and Retry-After, as API Priority and Fairness does."""

    resource: kmock.resource | None
    times: int
    retry_after: str
    action: Any = None
    """Only this kmock action (LIST, WATCH, …); None for any."""


@dataclass(frozen=True)
class Change:
    """One entry of the watch history: what a watch from an older resourceVersion is sent."""

    resource_version: int
    resource: Any
    namespace: str | None
    event: dict[str, Any]


def _continue_token(resource_version: int, namespace: str, name: str) -> str:
    """Like the apiserver's: the list's resourceVersion and the key to start after (storage/etcd3 continue.go)."""
    raw = json.dumps({"v": "meta.k8s.io/v1", "rv": resource_version, "start": [namespace, name]})
    return base64.urlsafe_b64encode(raw.encode()).decode()


def _read_continue_token(token: str) -> tuple[int, tuple[str, str]]:
    try:
        raw = json.loads(base64.urlsafe_b64decode(token.encode()))
        return int(raw["rv"]), (str(raw["start"][0]), str(raw["start"][1]))
    except (ValueError, KeyError, IndexError, TypeError):
        raise k8s.KubernetesError() from None


class ApiServerEmulator(kmock.KubernetesEmulator, ConstantTimeMatching):
    """kmock's emulator, with dry-run writes and refused writes leaving the stored objects alone,
    resourceVersion enforced on patches, paged lists, watches with bookmarks, 410 after compaction and 429."""

    refusals: list[Callable[[Any], bool]]

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.refusals = []
        self.after_write: list[Callable[[Any], None]] = []
        """Called once a write is stored, before it is answered (a fault test stops the writer right there)."""
        self.last_resource_version = 0
        self.history: list[Change] = []
        self.compacted_through = 0
        """Changes up to this resourceVersion are forgotten: older watches and continue tokens get 410."""
        self.throttles: list[Throttle] = []
        self.shutting_down = False
        """Set when the test ends: open watches end as a stopping API server ends them (the client re-lists)."""
        self._changed = asyncio.Event()
        # A dry run is emulated by writing and then restoring the store; a real API server never stores it, so
        # nothing else may see that moment: writes queue behind each other and reads wait for it to pass.
        self._writes = asyncio.Lock()
        self._no_dry_run = asyncio.Event()
        self._no_dry_run.set()

    def next_resource_version(self) -> str:
        self.last_resource_version += 1
        return str(self.last_resource_version)

    async def _handle(self, request: Any) -> Any:
        throttled = self._throttled(request)
        if throttled is not None:
            return throttled
        if request.resource is not None and request.action in _WRITES:
            async with self._writes:
                answer = await self._write(request)
            if request.params.get("dryRun") != "All" and not any(refused(request) for refused in self.refusals):
                self._record_write(request)
                for hook in self.after_write:
                    hook(request)
            return answer
        await self._no_dry_run.wait()
        return await super()._handle(request)

    # -- 429: API Priority and Fairness ------------------------------------------------------

    def _throttled(self, request: Any) -> aiohttp.web.StreamResponse | None:
        for throttle in self.throttles:
            if throttle.times > 0 and throttle.resource in (None, request.resource) \
                    and throttle.action in (None, request.action):
                throttle.times -= 1
                # apiserver/pkg/server/filters/priority-and-fairness.go answers with tooManyRequests: 429, Retry-After.
                body = status_body(429, "Too many requests, please try again later.")
                body["reason"] = "TooManyRequests"
                return aiohttp.web.json_response(body, status=429, headers={"Retry-After": throttle.retry_after})
        return None

    # -- the watch history ---------------------------------------------------------------------

    def record(self, event_type: str, resource: Any, namespace: str | None, raw: dict[str, Any]) -> None:
        """Remember a change for watches; a DELETED object gets a resourceVersion of its own, as etcd gives it."""
        obj = copy.deepcopy(raw)
        metadata = obj.setdefault("metadata", {})
        if event_type == "DELETED" or "resourceVersion" not in metadata:
            metadata["resourceVersion"] = self.next_resource_version()
        self.history.append(Change(int(metadata["resourceVersion"]), resource, namespace,
                                   {"type": event_type, "object": obj}))
        self._changed.set()
        self._changed = asyncio.Event()

    def compact(self) -> None:
        """Forget the history so far, as etcd compaction does (every 5 minutes in a real cluster)."""
        self.compacted_through = self.last_resource_version
        self.history.clear()

    def _record_write(self, request: Any) -> None:
        data = request.data if isinstance(request.data, dict) else {}
        namespace = request.namespace or (data.get("metadata") or {}).get("namespace")
        name = request.name or (data.get("metadata") or {}).get("name")
        key = (request.resource, namespace, name)
        if key not in self._objects:
            return
        stored = self._objects[key]
        if stored.deleted:
            self.record("DELETED", request.resource, namespace, stored.last.raw)
        else:
            self.record("ADDED" if request.action == kmock.action.CREATE else "MODIFIED", request.resource,
                        namespace, stored.raw)

    # -- lists in pages, watches ----------------------------------------------------------------

    def _known(self, resource: Any) -> bool:
        return any(known == resource for known in self._get_resources())

    async def _serve_list(self, request: Any) -> Any:
        """A page of the objects in key order, with a continue token while more remain."""
        if not self._known(request.resource):
            raise k8s.KubernetesResourceNotFoundError()
        list_version, start = self.last_resource_version, ("", "")
        token = request.params.get("continue")
        if token:
            list_version, start = _read_continue_token(token)
            if list_version <= self.compacted_through:
                # storage/etcd3 store.go: "The provided continue parameter is too old to display a consistent
                # list result. You can start a new list without the continue parameter..."
                raise Expired(message="The provided continue parameter is too old to display a consistent list result. "
                              "You can start a new list without the continue parameter.")
        # kmock's lists ignore selectors; a real API server does not (bot.demo.cluster.selected).
        fields, labels = request.params.get("fieldSelector", ""), request.params.get("labelSelector", "")
        matching = sorted(
            ((namespace or "", name), obj.raw) for (resource, namespace, name), obj in self._objects.items()
            if resource == request.resource and not obj.deleted
            and (request.namespace is None or namespace == request.namespace)
            and (namespace or "", name) > start and selected(obj.raw, fields, labels))
        limit = int(request.params.get("limit") or 0)
        page = matching[:limit] if limit else matching
        metadata: dict[str, Any] = {"resourceVersion": str(list_version)}
        if limit and len(matching) > limit:
            metadata["continue"] = _continue_token(list_version, *page[-1][0])
            metadata["remainingItemCount"] = len(matching) - limit
        return {"apiVersion": "v1", "kind": "List", "metadata": metadata, "items": [raw for _, raw in page]}

    async def _serve_watch(self, request: Any) -> Any:
        """Changes after ``resourceVersion``, then new ones as they happen, with bookmarks, until timeoutSeconds."""
        yield b""  # the headers go out now, as a real API server's do
        since = int(request.params.get("resourceVersion") or self.last_resource_version)
        deadline = time.monotonic() + float(request.params.get("timeoutSeconds") or 1800)
        bookmarks = request.params.get("allowWatchBookmarks") == "true"
        fields, labels = request.params.get("fieldSelector", ""), request.params.get("labelSelector", "")
        while not self.shutting_down:
            if since < self.compacted_through:
                # A too old resourceVersion is an ERROR event in the stream (apiserver/pkg/storage/cacher: "too old
                # resource version"); so is history a running watch had not yet sent (etcd's ErrCompacted).
                yield {"type": "ERROR", "object": status_body(410, f"too old resource version: {since} "
                                                                   f"({self.compacted_through})") | {"reason": "Expired"}}
                return
            for change in [c for c in self.history if c.resource_version > since]:
                since = change.resource_version
                if change.resource == request.resource and request.namespace in (None, change.namespace) \
                        and selected(change.event["object"], fields, labels):
                    yield change.event
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            changed = self._changed
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(changed.wait(), min(BOOKMARK_SECONDS, remaining))
            if bookmarks and not changed.is_set():
                since = max(since, self.last_resource_version)
                yield {"type": "BOOKMARK", "object": {"kind": "Status", "apiVersion": "v1",
                                                      "metadata": {"resourceVersion": str(since)}}}

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

    # -- seeding -------------------------------------------------------------------------

    def add(self, *objects: Mapping[str, Any]) -> None:
        """Store objects as if created (or changed) by someone else; watches see them as ADDED or MODIFIED."""
        self.loop.call(lambda: [self._store(obj) for obj in objects])

    def _store(self, obj: Mapping[str, Any]) -> None:
        info = KINDS[obj["kind"]]
        meta = obj["metadata"]
        key = (resource_of(info), meta.get("namespace") if info.namespaced else None, meta["name"])
        stored = copy.deepcopy(dict(obj))
        stored["metadata"].setdefault("resourceVersion", self.emulator.next_resource_version())
        existed = key in self.emulator.objects and not self.emulator.objects[key].deleted
        self.emulator.objects[key] = stored
        self.emulator.record("MODIFIED" if existed else "ADDED", key[0], key[1], stored)

    def seed(self, objects: Iterable[dict[str, Any]]) -> None:
        """Store objects created before anyone watched (no watch history), taking them over without a copy:
        for benchmarks that seed tens of thousands."""
        def store(batch: list[dict[str, Any]]) -> None:
            for obj in batch:
                info = KINDS[obj["kind"]]
                meta = obj["metadata"]
                meta.setdefault("resourceVersion", self.emulator.next_resource_version())
                key = (resource_of(info), meta.get("namespace") if info.namespaced else None, meta["name"])
                self.emulator.objects[key] = obj

        # Built here, stored on the loop a batch at a time: the loop keeps serving meanwhile.
        batch: list[dict[str, Any]] = []
        for obj in objects:
            batch.append(obj)
            if len(batch) == 200:
                self.loop.call(lambda done=batch: store(done))
                batch = []
        self.loop.call(lambda: store(batch))

    def remove(self, kind: str, namespace: str | None, name: str) -> None:
        """Delete an object as someone else would; watches see DELETED."""
        def delete() -> None:
            key = (resource_of(kind), namespace, name)
            raw = copy.deepcopy(self.emulator.objects[key].raw)
            self.emulator.objects[key].delete()
            self.emulator.record("DELETED", key[0], namespace, raw)
        self.loop.call(delete)

    def compact(self) -> None:
        """etcd compaction: older continue tokens and watch resourceVersions are answered 410 Gone from now on."""
        self.loop.call(self.emulator.compact)

    def throttle(self, times: int, *, kind: str | None = None, verb: str | None = None,
                 retry_after: str = "1") -> None:
        """Answer the next ``times`` requests (for ``kind`` and ``verb``, or any) with 429 and this Retry-After."""
        resource = resource_of(kind) if kind else None
        action = {**_ACTIONS, "watch": kmock.action.WATCH}[verb] if verb else None
        self.loop.call(lambda: self.emulator.throttles.append(Throttle(resource, times, retry_after, action)))

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

    def slow(self, kind: str, seconds: float, *, verb: str = "list", namespace: str | None = None,
             subresource: str | None = None) -> None:
        """Answer matching requests only after ``seconds`` (cut short at teardown)."""
        release = self._release

        async def late_answer() -> dict[str, Any]:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(release.wait(), seconds)
            return {"metadata": {}, "items": []}

        view = self._view(kind, verb, namespace, None, subresource)
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
        emulator.shutting_down = True  # watches end at their next bookmark tick instead of holding the server open
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
