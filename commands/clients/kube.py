"""The one module that talks to the Kubernetes API (the only importer of ``kubernetes``).

``KubeClient`` answers with plain dicts (no model deserialization) and raises only
meshbot errors, mapped in ``_raise_for_status``/``_transport_error``.  It reads like a
controller does: lists in pages of ``limit``/``continue`` (an expired continue token
starts the list again), watches from a resourceVersion with bookmarks, and waits out a
429 for as long as its Retry-After says (API Priority and Fairness).
``KubePortForwarder`` opens ``kubectl port-forward``-style tunnels to pod ports.
Longer than 450 lines because it is the one module import-linter lets import ``kubernetes``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

import urllib3
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from kubernetes.stream import portforward

from commands.errors import AccessDenied, ClusterError, Conflict, MeshbotError, NotFound, TransientError, UserError
from commands.resources.kinds import KindInfo, kind_info
from commands.resources.references import PodRef
from commands.validation import validate_dns1123_label, validate_dns1123_subdomain

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 10.0
IN_CLUSTER_ENV = "KUBERNETES_SERVICE_HOST"
_PODS = kind_info("Pod")

PAGE_SIZE = 500
"""Objects per LIST page: client-go's pager default (k8s.io/client-go/tools/pager/pager.go defaultPageSize) and
kubectl's --chunk-size.  One page of raw JSON is what a list holds in memory beyond the objects it keeps."""
THROTTLE_RETRIES = 5
"""429s waited out per call before giving up (client-go retries up to 10: k8s.io/client-go/rest/request.go)."""
LONGEST_RETRY_AFTER = 10.0
"""A Retry-After longer than this is cut to it: a diagnosis that waits a minute for one list is no answer."""
WATCH_SECONDS = 300
"""Server-side timeoutSeconds of one watch; the informer then watches again from its last resourceVersion."""

Keep = Callable[[dict[str, Any]], "dict[str, Any] | None"]
"""Applied to each listed object as its page arrives: the part worth keeping, or None to drop it."""
# Named outside KubeClient, whose own `list` method would shadow the builtin in annotations inside the class.
QueryParams = list[tuple[str, str | None]]
JsonPatchOperations = list[Any]


class ResourceExpired(ClusterError):
    """410 Gone: the resourceVersion or continue token is older than the API server's history; list again."""


@dataclass
class Listing:
    """The objects of one LIST (every page), and the resourceVersion a watch continues from."""

    items: list[dict[str, Any]] = field(default_factory=list)
    resource_version: str = ""
    pages: int = 0


@dataclass(frozen=True)
class WatchEvent:
    """One line of a watch stream: ADDED, MODIFIED, DELETED or BOOKMARK (only a resourceVersion)."""

    type: str
    object: dict[str, Any]

    @property
    def resource_version(self) -> str:
        return str((self.object.get("metadata") or {}).get("resourceVersion") or "")


class PatchStrategy(StrEnum):
    """The patch flavours the API server accepts, as their Content-Type."""

    MERGE = "application/merge-patch+json"
    STRATEGIC = "application/strategic-merge-patch+json"
    """Merges lists by key (containers by name); built-in kinds only, CRDs reject it."""
    JSON = "application/json-patch+json"


@dataclass(frozen=True)
class ApiCall:
    """One API request, named the way people and RBAC rules name it."""

    verb: str
    """The RBAC verb: list, get, create, patch, delete."""
    kind: KindInfo
    namespace: str | None = None
    name: str | None = None
    subresource: str | None = None

    @property
    def resource(self) -> str:
        """``pods``, ``pods/portforward``, ``gateways.networking.istio.io``."""
        return f"{self.kind.resource}/{self.subresource}" if self.subresource else self.kind.resource

    @property
    def scope(self) -> str:
        """`` cluster-wide``, `` in namespace prod``, `` prod/payment-1`` — appended to the resource."""
        if self.name:
            return f" {self.namespace}/{self.name}" if self.namespace else f" {self.name}"
        return f" in namespace {self.namespace}" if self.namespace else " cluster-wide"

    @property
    def path(self) -> str:
        kind = self.kind
        parts = ["/api", kind.version] if not kind.group else ["/apis", kind.group, kind.version]
        if self.namespace and kind.namespaced:
            parts += ["namespaces", self.namespace]
        parts.append(kind.plural)
        if self.name and (self.verb != "create" or self.subresource):  # pods/NAME/portforward is a create
            parts.append(self.name)
        if self.subresource:
            parts.append(self.subresource)
        return "/".join(parts)

    def failed(self, error_type: type[ClusterError] | type[TransientError], reason: str, *,
               status: int | None = None) -> MeshbotError:
        """The error for this call; ``reason`` is also kept on the error for callers that word their own text."""
        message = f"cannot {self.verb} {self.resource}{self.scope}: {reason}"
        if error_type is AccessDenied:
            message += f" (needs RBAC {self.verb} on {self.resource})"
        return error_type(message, status=status, endpoint=self.path, reason=reason)


def failure_reason(error: BaseException) -> str:
    """The bare cause of a failed call (``forbidden``, ``no answer within 10s``), without the call's name."""
    return str(getattr(error, "reason", None) or error)


def _status_message(data: bytes) -> str:
    """The ``message`` of a Kubernetes Status answer, if there is one."""
    try:
        body = json.loads(data)
    except ValueError:
        return ""
    return str(body.get("message") or "")[:300] if isinstance(body, dict) else ""


def _raise_for_status(call: ApiCall, status: int, data: bytes) -> None:
    if status < 400:
        return
    if status == 401:
        raise call.failed(AccessDenied, "unauthorized (credentials missing, rejected or expired)", status=status)
    if status == 403:
        raise call.failed(AccessDenied, "forbidden", status=status)
    if status == 404:
        reason = "not found" if call.name else "the API server does not serve this resource"
        raise call.failed(NotFound, reason, status=status)
    if status == 409:
        raise call.failed(Conflict, f"conflict ({_status_message(data) or 'changed or already exists'})",
                          status=status)
    if status == 410:
        # A continue token or watch resourceVersion older than etcd's compaction (apimachinery's
        # NewResourceExpired; client-go's pager and reflector re-list on it).
        raise call.failed(ResourceExpired, "expired (" + (_status_message(data) or "resourceVersion too old") + ")",
                          status=status)
    if status == 429:
        raise call.failed(TransientError, "the API server is throttling requests (HTTP 429)", status=status)
    if status >= 500:
        raise call.failed(TransientError, f"the API server answered HTTP {status}", status=status)
    message = _status_message(data)
    raise call.failed(ClusterError, f"HTTP {status}" + (f" ({message})" if message else ""), status=status)


def _transport_error(call: ApiCall, exc: Exception, timeout: float) -> MeshbotError:
    # Deliberately not str(exc): keep the text short and free of anything the transport echoes.
    # NewConnectionError first: urllib3 makes it a subclass of its TimeoutError.
    if isinstance(exc, (urllib3.exceptions.NewConnectionError, ConnectionRefusedError)):
        return call.failed(TransientError, "connection refused")
    if isinstance(exc, (urllib3.exceptions.TimeoutError, TimeoutError)):
        return call.failed(TransientError, f"no answer within {timeout:g}s")
    return call.failed(TransientError, f"connection failed ({type(exc).__name__})")


def _without_empty(params: Sequence[tuple[str, str | None]]) -> list[tuple[str, str]]:
    return [(k, v) for k, v in params if v]


class KubeClient:
    """Lists, reads and writes Kubernetes objects as plain dicts; every call has a timeout."""

    def __init__(self, configuration: k8s_client.Configuration, *, timeout: float = DEFAULT_TIMEOUT,
                 in_cluster: bool = False):
        self.is_in_cluster = in_cluster
        """True when authenticated as the pod's service account (pod IPs are then reachable)."""
        # urllib3 retries would multiply the timeout; callers decide whether to try again.
        configuration.retries = False
        self.api = k8s_client.ApiClient(configuration)
        self.timeout = timeout
        self.throttle_retries = THROTTLE_RETRIES

    # -- construction -----------------------------------------------------------

    @classmethod
    def connect(cls, kubeconfig: str | os.PathLike | None = None, context: str | None = None, *,
                timeout: float = DEFAULT_TIMEOUT, environ: Mapping[str, str] = os.environ) -> KubeClient:
        """An explicit kubeconfig/context wins; else the pod's service account when in a cluster; else ~/.kube/config."""
        if kubeconfig is None and context is None and environ.get(IN_CLUSTER_ENV):
            return cls.in_cluster(timeout=timeout)
        return cls.from_kubeconfig(kubeconfig, context, timeout=timeout)

    @classmethod
    def from_kubeconfig(cls, path: str | os.PathLike | None = None, context: str | None = None, *,
                        timeout: float = DEFAULT_TIMEOUT) -> KubeClient:
        configuration = k8s_client.Configuration()
        try:
            # persist_config=False: never rewrite the user's kubeconfig with refreshed tokens.
            k8s_config.load_kube_config(config_file=str(path) if path else None, context=context,
                                        client_configuration=configuration, persist_config=False)
        except (ConfigException, OSError) as exc:
            where = f" {path}" if path else ""
            raise UserError(f"cannot load kubeconfig{where}: {type(exc).__name__}: {exc}") from None
        return cls(configuration, timeout=timeout)

    @classmethod
    def in_cluster(cls, *, timeout: float = DEFAULT_TIMEOUT) -> KubeClient:
        configuration = k8s_client.Configuration()
        try:
            k8s_config.load_incluster_config(client_configuration=configuration)
        except ConfigException as exc:
            raise UserError(f"cannot use the in-cluster service account: {exc}") from None
        return cls(configuration, timeout=timeout, in_cluster=True)

    @classmethod
    def for_host(cls, url: str, *, token: str | None = None, timeout: float = DEFAULT_TIMEOUT,
                 ca_file: str | None = None, verify_ssl: bool = True) -> KubeClient:
        """A client for an API server URL (tests, or a proxy such as ``kubectl proxy``)."""
        configuration = k8s_client.Configuration()
        configuration.host = url.rstrip("/")
        configuration.verify_ssl = verify_ssl
        configuration.ssl_ca_cert = ca_file
        if token:
            configuration.api_key["authorization"] = token
            configuration.api_key_prefix["authorization"] = "Bearer"
        return cls(configuration, timeout=timeout)

    def close(self) -> None:
        self.api.close()

    # -- reads ------------------------------------------------------------------

    def list(self, kind: str | KindInfo, namespace: str | None = None, *, field_selector: str | None = None,
             label_selector: str | None = None, keep: Keep | None = None) -> list[dict[str, Any]]:
        """Every object of ``kind`` (cluster-wide unless ``namespace``), with ``kind``/``apiVersion`` filled in."""
        return self.read_list(kind, namespace, field_selector=field_selector, label_selector=label_selector,
                              keep=keep).items

    def read_list(self, kind: str | KindInfo, namespace: str | None = None, *, field_selector: str | None = None,
                  label_selector: str | None = None, keep: Keep | None = None,
                  page_size: int = PAGE_SIZE) -> Listing:
        """A LIST in pages of ``page_size``, each object passed through ``keep`` as its page arrives.

        When the continue token expires between pages (410), the list starts again once with no token, as
        client-go's pager does (pager.go, FullListIfExpired): the objects of the expired list are discarded
        rather than mixed with a newer one.
        """
        info = _kind(kind)
        call = ApiCall("list", info, _namespace(namespace))
        selectors = [("fieldSelector", field_selector), ("labelSelector", label_selector)]
        try:
            return self._list_pages(call, selectors, keep, page_size)
        except ResourceExpired:
            log.info("%s: continue token expired between pages; listing again", call.path)
            return self._list_pages(call, selectors, keep, page_size)

    def _list_pages(self, call: ApiCall, selectors: QueryParams, keep: Keep | None,
                    page_size: int) -> Listing:
        listing = Listing()
        token: str | None = None
        while True:
            page = self._request(call, "GET", [*selectors, ("limit", str(page_size) if page_size else None),
                                               ("continue", token)])
            listing.pages += 1
            for item in page.get("items") or []:
                # List items from built-in APIs carry no kind/apiVersion of their own.
                item.setdefault("kind", call.kind.kind)
                item.setdefault("apiVersion", call.kind.api_version)
                kept = keep(item) if keep else item
                if kept is not None:
                    listing.items.append(kept)
            metadata = page.get("metadata") or {}
            listing.resource_version = str(metadata.get("resourceVersion") or listing.resource_version)
            token = metadata.get("continue") or None
            if not token:
                return listing

    def watch(self, kind: str | KindInfo, namespace: str | None = None, *, resource_version: str,
              field_selector: str | None = None, label_selector: str | None = None,
              timeout_seconds: int = WATCH_SECONDS,
              on_open: Callable[[Closable], None] | None = None) -> Iterator[WatchEvent]:
        """Changes after ``resource_version`` until the server ends the watch; raises ResourceExpired on 410.

        Bookmarks are asked for (allowWatchBookmarks) so an idle watch still moves its resourceVersion on, and a
        watch started again after a quiet hour does not start from a compacted version (KEP-956).
        """
        info = _kind(kind)
        call = ApiCall("watch", info, _namespace(namespace))
        query = [("watch", "true"), ("resourceVersion", resource_version), ("allowWatchBookmarks", "true"),
                 ("timeoutSeconds", str(timeout_seconds)), ("fieldSelector", field_selector),
                 ("labelSelector", label_selector)]
        response = self._send(call, "GET", query, read_timeout=timeout_seconds + self.timeout)
        if on_open is not None:
            # The caller may end the watch from another thread (at shutdown) by shutting the stream down.
            on_open(response)
        try:
            for line in _lines(response, call, self.timeout):
                event = _watch_event(call, line)
                if event is not None:
                    yield event
        finally:
            response.close()  # a watch left early must not hand a half-read stream back to the pool
    def get(self, kind: str | KindInfo, namespace: str | None, name: str) -> dict[str, Any]:
        return self._request(ApiCall("get", _kind(kind), _namespace(namespace), _name(name)), "GET")

    # -- writes (remediation actions) --------------------------------------------

    def create(self, kind: str | KindInfo, body: Mapping[str, Any], *, namespace: str | None = None,
               dry_run: bool = False) -> dict[str, Any]:
        metadata = body.get("metadata") or {}
        call = ApiCall("create", _kind(kind), _namespace(namespace or metadata.get("namespace")),
                       _name(metadata["name"]) if metadata.get("name") else None)
        return self._request(call, "POST", _dry_run(dry_run), body=dict(body))

    def patch(self, kind: str | KindInfo, namespace: str | None, name: str, patch: Mapping[str, Any] | JsonPatchOperations, *,
              strategy: PatchStrategy = PatchStrategy.MERGE, dry_run: bool = False) -> dict[str, Any]:
        call = ApiCall("patch", _kind(kind), _namespace(namespace), _name(name))
        body = list(patch) if isinstance(patch, list) else dict(patch)
        return self._request(call, "PATCH", _dry_run(dry_run), body=body, content_type=strategy.value)

    def delete(self, kind: str | KindInfo, namespace: str | None, name: str, *,
               dry_run: bool = False) -> dict[str, Any]:
        call = ApiCall("delete", _kind(kind), _namespace(namespace), _name(name))
        return self._request(call, "DELETE", _dry_run(dry_run))

    # -- the one place that calls out ----------------------------------------------

    def _request(self, call: ApiCall, method: str, query: Sequence[tuple[str, str | None]] = (), *,
                 body: Any = None, content_type: str = "application/json") -> dict[str, Any]:
        response = self._send(call, method, query, body=body, content_type=content_type)
        try:
            data = response.data
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise _transport_error(call, exc, self.timeout) from None
        try:
            answer = json.loads(data) if data else {}
        except ValueError:
            raise call.failed(TransientError, "the API server's answer is not JSON") from None
        if not isinstance(answer, dict):
            raise call.failed(TransientError, "the API server's answer is not a JSON object")
        return answer

    def _send(self, call: ApiCall, method: str, query: Sequence[tuple[str, str | None]] = (), *, body: Any = None,
              content_type: str = "application/json", read_timeout: float | None = None) -> Any:
        """The urllib3 response of one call, its body not yet read; a 429 is waited out as Retry-After asks.

        API Priority and Fairness answers a request it will not queue with 429 and Retry-After; the request did
        not run, so asking again after the wait is safe for every verb (apiserver filters/priority-and-fairness.go,
        client-go rest/request.go checkWait).
        """
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        method, url, headers, body, _ = self.api.param_serialize(
            method, call.path, query_params=_without_empty(query), header_params=headers, body=body,
            auth_settings=["BearerToken"])
        timeout: Any = self.timeout if read_timeout is None else (self.timeout, read_timeout)
        for attempt in range(self.throttle_retries + 1):
            try:
                response = self.api.call_api(method, url, headers, body, _request_timeout=timeout).response
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                raise _transport_error(call, exc, self.timeout) from None
            if response.status != 429 or attempt == self.throttle_retries:
                break
            wait = _retry_after(response.headers.get("Retry-After"))
            response.drain_conn()
            log.info("%s: throttled by the API server (429); trying again in %gs", call.path, wait)
            time.sleep(wait)
        if response.status >= 400:
            try:
                data = response.data
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                raise _transport_error(call, exc, self.timeout) from None
            _raise_for_status(call, response.status, data)
        return response


def _retry_after(header: str | None) -> float:
    """Seconds to wait from a Retry-After header (the API server sends whole seconds); 1 s when absent or odd."""
    try:
        seconds = float(header) if header else 1.0
    except ValueError:
        seconds = 1.0
    return min(max(seconds, 0.0), LONGEST_RETRY_AFTER)


def _lines(response: Any, call: ApiCall, timeout: float) -> Iterator[bytes]:
    """The newline-separated JSON of a watch stream as it arrives."""
    pending = b""
    try:
        for chunk in response.stream(65536, decode_content=True):
            pending += chunk
            *complete, pending = pending.split(b"\n")
            yield from (line for line in complete if line.strip())
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise _transport_error(call, exc, timeout) from None
    if pending.strip():
        yield pending


def _watch_event(call: ApiCall, line: bytes) -> WatchEvent | None:
    """One decoded watch line; an ERROR event raises its Status (410 for a too old resourceVersion)."""
    try:
        event = json.loads(line)
    except ValueError:
        raise call.failed(TransientError, "a watch event is not JSON") from None
    if not isinstance(event, dict) or not isinstance(event.get("object"), dict):
        return None
    obj = event["object"]
    if event.get("type") == "ERROR":
        status = int(obj.get("code") or 500)
        _raise_for_status(call, status, json.dumps(obj).encode())
        return None
    obj.setdefault("kind", call.kind.kind)
    obj.setdefault("apiVersion", call.kind.api_version)
    return WatchEvent(str(event.get("type") or ""), obj)


def _kind(kind: str | KindInfo) -> KindInfo:
    if isinstance(kind, KindInfo):
        return kind
    try:
        return kind_info(kind)
    except KeyError:
        raise UserError(f"unknown kind {kind!r}") from None


# Names end up in URL paths: validate them so a crafted name cannot change the path.
def _namespace(namespace: str | None) -> str | None:
    return validate_dns1123_label(namespace, what="namespace") if namespace else None


def _name(name: str) -> str:
    return validate_dns1123_subdomain(name, what="object name")


def _dry_run(dry_run: bool) -> list[tuple[str, str | None]]:
    return [("dryRun", "All" if dry_run else None)]


# -- port-forward ------------------------------------------------------------------


class Closable(Protocol):
    """An open watch stream (urllib3's response): ``shutdown`` unblocks a read in another thread."""

    def shutdown(self) -> None: ...


class StreamSocket(Protocol):
    """What the bridge needs from the far end: a blocking, selectable byte stream."""

    def recv(self, size: int, /) -> bytes: ...

    def sendall(self, data: bytes, /) -> None: ...

    def fileno(self) -> int: ...

    def close(self) -> None: ...


class LocalBridge:
    """A 127.0.0.1 listener on an ephemeral port; each accepted connection is piped to a fresh ``connect()``.

    Lets plain HTTP clients (httpx) talk through any socket-like tunnel, such as a
    Kubernetes port-forward stream.
    """

    POLL_SECONDS = 0.05
    """How often idle threads check whether the bridge is closing."""

    def __init__(self, connect: Callable[[], StreamSocket]):
        self._connect = connect
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._stopping = threading.Event()
        self._acceptor = threading.Thread(target=self._accept_loop, name=f"bridge-{self.port}", daemon=True)
        self._pipes: list[threading.Thread] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LocalBridge:
        self._acceptor.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._stopping.set()
        if self._acceptor.is_alive():
            self._acceptor.join()  # after this no new pipe can start
        for pipe in self._pipes:
            pipe.join(timeout=2)
        self._listener.close()

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            readable, _, _ = select.select([self._listener], [], [], self.POLL_SECONDS)
            if not readable:
                continue
            local, _ = self._listener.accept()
            try:
                remote = self._connect()
            except MeshbotError as exc:
                log.warning("port-forward bridge: %s", exc)
                local.close()
                continue
            pipe = threading.Thread(target=self._pipe, args=(local, remote), name=f"bridge-{self.port}-pipe",
                                    daemon=True)
            self._pipes.append(pipe)
            pipe.start()

    def _pipe(self, local: socket.socket, remote: StreamSocket) -> None:
        """Copy bytes both ways until either side closes or the bridge stops."""
        try:
            while not self._stopping.is_set():
                readable, _, _ = select.select([local, remote], [], [], self.POLL_SECONDS)
                for source in readable:
                    data = source.recv(65536)
                    if not data:
                        return
                    (remote if source is local else local).sendall(data)
        except OSError:
            return
        finally:
            local.close()
            remote.close()


_HANDSHAKE_STATUS = re.compile(r"Handshake status (\d{3})")


class KubePortForwarder:
    """``commands.cluster.endpoints.PortForwarder`` over the API server's pods/portforward websocket."""

    def __init__(self, client: KubeClient):
        self.client = client

    @contextlib.contextmanager
    def forward(self, pod: PodRef, port: int) -> Iterator[str]:
        """Yield ``http://127.0.0.1:N`` reaching ``port`` on ``pod``; raises at once if the first tunnel fails."""
        # Each local connection needs its own tunnel; open the first now so errors surface here.
        opened = [self.open_stream(pod, port)]

        def connect() -> StreamSocket:
            return opened.pop() if opened else self.open_stream(pod, port)

        try:
            with LocalBridge(connect) as bridge:
                yield bridge.url
        finally:
            for stream in opened:
                stream.close()

    def open_stream(self, pod: PodRef, port: int) -> StreamSocket:
        """One port-forward tunnel to ``pod:port`` as a socket."""
        call = ApiCall("create", _PODS, _namespace(pod.namespace), _name(pod.name), subresource="portforward")
        # kubernetes.stream swaps call_api on the ApiClient it is given for the length of the handshake
        # (kubernetes/stream/stream.py _websocket_request): on the shared client, a list running meanwhile in
        # another diagnosis would be sent as a websocket.  Each tunnel gets an ApiClient of its own.
        api = k8s_client.CoreV1Api(k8s_client.ApiClient(self.client.api.configuration))
        result: dict[str, Any] = {}

        def open_tunnel() -> None:
            try:
                result["tunnel"] = portforward(api.connect_get_namespaced_pod_portforward, pod.name,
                                               pod.namespace, ports=str(port))
            except ApiException as exc:
                result["error"] = exc

        # The websocket handshake ignores _request_timeout, so bound it with a thread.
        opener = threading.Thread(target=open_tunnel, name=f"portforward-{pod}", daemon=True)
        opener.start()
        opener.join(self.client.timeout)
        if opener.is_alive():
            raise call.failed(TransientError, f"no answer within {self.client.timeout:g}s")
        if "error" in result:
            raise _port_forward_error(call, result["error"])
        return result["tunnel"].socket(port)


def _port_forward_error(call: ApiCall, exc: ApiException) -> MeshbotError:
    # The websocket layer reports HTTP answers only inside its message ("Handshake status 403 ...").
    match = _HANDSHAKE_STATUS.search(str(exc.reason or ""))
    status = int(match.group(1)) if match else exc.status
    if status and status >= 400:
        try:
            _raise_for_status(call, status, b"")
        except MeshbotError as error:
            return error
    if status:
        return call.failed(TransientError, f"the API server did not open a websocket (HTTP {status})")
    return call.failed(TransientError, "connection failed")
