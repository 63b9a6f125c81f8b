"""Leader election with a ``coordination.k8s.io/v1`` Lease, the way client-go's leaderelection does it.

Each replica calls ``tick()`` every few seconds: the holder renews, the others
wait, and when the holder has not renewed for ``duration`` someone takes over
(``leaseTransitions`` + 1).  "Has not renewed" is judged as client-go's
``tryAcquireOrRenew`` judges it: by how long *this* replica has observed the
record unchanged on its own monotonic clock (``observedTime`` in
k8s.io/client-go/tools/leaderelection/leaderelection.go), never by comparing its
wall clock with the holder's ``renewTime`` — with one replica 5 minutes ahead,
that comparison let it take a live Lease, and kept a dead holder's Lease for 5
minutes.  A newcomer therefore waits one ``duration`` after first seeing a held
Lease; a released one (no holder) is taken at once.  Writes carry the Lease's ``resourceVersion``, so
the API server lets only one of two racing replicas win; a replica that was
the leader but fails to renew steps down at once.  ``release()`` on shutdown
hands over without waiting for the lease to run out.

The holder may also keep small notes in the Lease's annotations (``annotate``),
which the next holder reads (``annotation``): state that must survive a
fail-over between replicas that do not share a database.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from commands.clients.kube import KubeClient
from commands.errors import Conflict, MeshbotError, NotFound
from commands.times import parse_rfc3339_or_none, rfc3339_micro

log = logging.getLogger(__name__)

DEFAULT_LEASE = "meshbot-scheduler"


@dataclass(frozen=True)
class LeaseView:
    holder: str | None
    renewed: datetime | None
    duration: timedelta
    transitions: int
    resource_version: str | None

    @classmethod
    def of(cls, lease: Mapping[str, Any]) -> LeaseView:
        spec = lease.get("spec") or {}
        return cls(holder=spec.get("holderIdentity") or None, renewed=parse_rfc3339_or_none(spec.get("renewTime")),
                   duration=timedelta(seconds=int(spec.get("leaseDurationSeconds") or 0)),
                   transitions=int(spec.get("leaseTransitions") or 0),
                   resource_version=(lease.get("metadata") or {}).get("resourceVersion"))

    @property
    def record(self) -> tuple[str | None, datetime | None, int]:
        """What a holder's renewal changes: any change proves it alive (client-go compares the whole record)."""
        return self.holder, self.renewed, self.transitions


@dataclass
class LeaderElector:
    client: KubeClient
    namespace: str
    identity: str
    name: str = DEFAULT_LEASE
    duration: timedelta = timedelta(seconds=15)
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(timezone.utc))
    """The wall clock: what ``acquireTime``/``renewTime`` say, for people and tools; it decides nothing here."""
    elapsed: Callable[[], float] = time.monotonic
    """This replica's own monotonic seconds: how long it has seen the record unchanged decides expiry."""
    is_leader: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _annotations: dict[str, str] = field(default_factory=dict, repr=False)
    """The Lease's annotations as last read."""
    last_error: str | None = None
    """Why the latest tick could not reach the Lease (403, timeout…); None when it could."""
    last_tick: datetime | None = None
    _observed: tuple[str | None, datetime | None, int] | None = field(default=None, repr=False)
    """The Lease record as this replica last saw it, and (``_observed_at``) when it first saw it so."""
    _observed_at: float = field(default=0.0, repr=False)

    def tick(self) -> bool:
        """Acquire, renew or wait; True while this replica is the leader.  API errors mean 'not leader'.

        Serialised: the renewal job and a scan both tick, and two ticks racing to create the Lease would
        make this replica lose its own race."""
        with self._lock:
            return self._tick_locked()

    def _tick_locked(self) -> bool:
        self.last_tick = self.clock()
        try:
            leading = self._tick()
            self.last_error = None
        except MeshbotError as exc:
            log.warning("leader election: %s; acting as a follower until the next try", exc)
            self.last_error = str(exc)
            leading = False
        except Exception as exc:  # a bug or a client library's own error: still no proof of leadership
            log.exception("leader election: the renewal failed unexpectedly; acting as a follower until the next try")
            self.last_error = f"{type(exc).__name__}: {exc}"
            leading = False
        if leading != self.is_leader:
            log.info("leader election: %s %s the leader of Lease %s/%s", self.identity,
                     "is now" if leading else "is no longer", self.namespace, self.name)
        self.is_leader = leading
        return leading

    def _tick(self) -> bool:
        now = self.clock()
        try:
            lease = self._read()
        except NotFound:
            return self._create(now)
        view = LeaseView.of(lease)
        if view.holder == self.identity:
            return self._write(view, {"renewTime": rfc3339_micro(now)})
        if view.holder is not None and not self._unchanged_for(view.duration or self.duration):
            return False
        return self._write(view, {"holderIdentity": self.identity, "acquireTime": rfc3339_micro(now),
                                  "renewTime": rfc3339_micro(now), "leaseDurationSeconds": self._seconds,
                                  "leaseTransitions": view.transitions + 1})

    def _observe(self, view: LeaseView) -> None:
        if view.record != self._observed:
            self._observed, self._observed_at = view.record, self.elapsed()

    def _unchanged_for(self, duration: timedelta) -> bool:
        """Whether this replica has seen the same record for ``duration`` by its own clock (the holder's is not
        trusted: client-go's ``observedTime.Add(LeaseDuration).After(now)``)."""
        return self.elapsed() - self._observed_at >= duration.total_seconds()

    @property
    def _seconds(self) -> int:
        return max(int(self.duration.total_seconds()), 1)

    def _create(self, now: datetime) -> bool:
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": {"holderIdentity": self.identity, "leaseDurationSeconds": self._seconds,
                         "acquireTime": rfc3339_micro(now), "renewTime": rfc3339_micro(now), "leaseTransitions": 0}}
        try:
            self.client.create("Lease", body, namespace=self.namespace)
        except Conflict:
            return False  # another replica created it first
        self._annotations = {}
        return True

    def _read(self) -> dict[str, Any]:
        lease = self.client.get("Lease", self.namespace, self.name)
        self._annotations = dict((lease.get("metadata") or {}).get("annotations") or {})
        self._observe(LeaseView.of(lease))  # every read counts as seeing the record, whoever asked for it
        return lease

    def _write(self, view: LeaseView, spec: dict[str, Any]) -> bool:
        patch: dict[str, Any] = {"spec": spec}
        if view.resource_version:
            patch["metadata"] = {"resourceVersion": view.resource_version}
        try:
            self.client.patch("Lease", self.namespace, self.name, patch)
        except (Conflict, NotFound):
            return False  # someone else wrote it since we read it
        return LeaseView.of(self._read()).holder == self.identity

    def annotation(self, name: str) -> str | None:
        """An annotation of the Lease as this replica last read it (at its latest ``tick``)."""
        with self._lock:
            return self._annotations.get(name)

    def annotate(self, name: str, value: str) -> bool:
        """Set an annotation on the Lease while this replica holds it; False (logged) when it could not."""
        with self._lock:
            try:
                lease = self._read()
                view = LeaseView.of(lease)
                if view.holder != self.identity:
                    return False
                self.client.patch("Lease", self.namespace, self.name, {"metadata": {
                    "resourceVersion": view.resource_version, "annotations": {name: value}}})
                self._annotations[name] = value
                return True
            except MeshbotError as exc:  # Conflict included: a renewal cannot race us, so someone else wrote
                log.warning("leader election: could not write %s on Lease %s/%s (%s)", name, self.namespace,
                            self.name, exc)
                return False

    def release(self) -> None:
        """Give the lease up (on shutdown) so another replica takes over at its next tick."""
        with self._lock:
            self._release_locked()

    def _release_locked(self) -> None:
        if not self.is_leader:
            return
        self.is_leader = False
        try:
            view = LeaseView.of(self._read())
            if view.holder != self.identity:
                return
            # With the resourceVersion just read: if our lease ran out and another replica took it over in
            # between, the API server answers 409 instead of letting us clear the new holder's claim.
            self.client.patch("Lease", self.namespace, self.name, {
                "metadata": {"resourceVersion": view.resource_version},
                "spec": {"holderIdentity": None, "renewTime": None}})
        except Conflict:
            log.info("leader election: Lease %s/%s changed hands before release; left to its new holder",
                     self.namespace, self.name)
        except MeshbotError as exc:
            log.warning("leader election: could not release the lease (%s); it expires on its own", exc)
