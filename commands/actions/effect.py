"""Verification by effect: did the change reach the proxies, and did the failing traffic recover?

Re-reading the objects from the API server (``execute.verify``) only proves the write landed.  A mesh change
works when (a) the proxies in scope *acknowledged* the push that carries it and (b) the failing edges' error
share fell.  (a) comes from istiod's ``/debug/syncz``: each push to a proxy carries a new nonce, and Envoy
acknowledges it by echoing the nonce once it has applied the config (xDS protocol, "ACK/NACK and versioning",
https://www.envoyproxy.io/docs/envoy/latest/api-docs/xds_protocol#ack-and-nack-semantics; istiod records
``sent``/``acked`` per type in pilot/pkg/xds/debug.go SyncStatus).  A proxy whose acked nonce moved since the
baseline and equals the sent one has the new config.  (b) comes from Prometheus when one is configured: Istio's
``istio_requests_total`` per workload edge, the share in the 5 minutes before the write against the share of the
requests made since (``commands.telemetry.recovery``).  Without a Prometheus, or when it fails, from Envoy's
counters (``upstream_rq_total``, ``upstream_rq_5xx``/``503``, https://www.envoyproxy.io/docs/envoy/latest/
configuration/upstream/cluster_manager/cluster_stats): the share before is the cumulative one at the baseline,
the share after is the delta since.  The report says which source it used.

``observe`` reads (I/O through the endpoint resolver); ``judge`` is pure: two observations and the action's
effect in, an outcome and sentences for the thread out.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from commands.checks.envoy.stats import parse_stats
from commands.checks.syncz import SYNCZ_PATH, parse_syncz
from commands.cluster.endpoints import EndpointResolver
from commands.cluster.snapshot import Snapshot
from commands.errors import MeshbotError
from commands.preconditions import Effect
from commands.telemetry.recovery import BEFORE
from commands.times import human_duration, parse_rfc3339, rfc3339

RECOVERED_SHARE = 0.05
"""An edge at or under 5 % errors counts as recovered: Istio's Mesh Dashboard colours a success rate under 95 %
as failing (manifests/addons/dashboards/istio-mesh-dashboard, the success-rate thresholds)."""
FELL_BY = 0.5
"""At least halved but still over 5 %: a partial recovery, shown as such ("partly seen"), never as "verified"."""
FOLLOW_UP = timedelta(minutes=3)
"""The second look: a push reaches every proxy within seconds when istiod is healthy (pilot's debounce is
100 ms to 10 s, PILOT_DEBOUNCE_AFTER/MAX in pilot/pkg/features), and traffic needs a few minutes of requests."""


class Outcome(StrEnum):
    SEEN = "seen"
    PARTLY = "partly seen"
    NOT_SEEN = "not seen"
    UNMEASURED = "not measured"


@dataclass(frozen=True)
class Edge:
    """Requests one Envoy sent to one upstream cluster, cumulative."""

    requests: int
    errors: int

    @property
    def share(self) -> float | None:
        return self.errors / self.requests if self.requests else None


@dataclass(frozen=True)
class Observation:
    at: datetime
    proxies: Mapping[str, Mapping[str, tuple[str | None, str | None]]] | None = None
    """``pod.namespace`` -> xDS type -> (sent nonce, acked nonce); None when no istiod answered."""
    istiod_error: str | None = None
    edges: Mapping[str, Edge] = field(default_factory=dict)
    """Envoy's counters: ``namespace/pod -> service:port`` -> cumulative counts."""
    windowed: Mapping[str, Edge] | None = None
    """Prometheus: ``ns/source -> ns/destination`` workload edge -> requests and failures in the window ending at
    ``at`` (before the write: ``BEFORE``; after it: since the baseline); None when Prometheus was not asked or
    failed."""
    prometheus: str | None = None
    """The Prometheus asked (its URL); None when none is configured."""
    prometheus_error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"at": rfc3339(self.at), "istiod_error": self.istiod_error,
                "proxies": None if self.proxies is None else {p: {t: list(v) for t, v in types.items()}
                                                              for p, types in self.proxies.items()},
                "edges": {k: [e.requests, e.errors] for k, e in self.edges.items()},
                "windowed": None if self.windowed is None else {k: [e.requests, e.errors]
                                                                for k, e in self.windowed.items()},
                "prometheus": self.prometheus, "prometheus_error": self.prometheus_error}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Observation:
        proxies = data.get("proxies")
        windowed = data.get("windowed")
        return cls(at=parse_rfc3339(data["at"]), istiod_error=data.get("istiod_error"),
                   proxies=None if proxies is None else {p: {t: (v[0], v[1]) for t, v in types.items()}
                                                         for p, types in proxies.items()},
                   edges={k: Edge(v[0], v[1]) for k, v in (data.get("edges") or {}).items()},
                   windowed=None if windowed is None else {k: Edge(v[0], v[1]) for k, v in windowed.items()},
                   prometheus=data.get("prometheus"), prometheus_error=data.get("prometheus_error"))


@dataclass(frozen=True)
class EffectReport:
    outcome: Outcome
    lines: tuple[str, ...]

    @property
    def verified(self) -> bool:
        return self.outcome == Outcome.SEEN

    def to_dict(self) -> dict[str, Any]:
        return {"outcome": str(self.outcome), "lines": list(self.lines)}


# -- reading --------------------------------------------------------------------------------------------------


def _in_scope(proxy: str, namespace: str | None) -> bool:
    return namespace is None or proxy.rsplit(".", 1)[-1] == namespace


def observe(endpoints: EndpointResolver, snapshot: Snapshot, namespace: str | None, now: datetime, *,
            traffic: bool = True) -> Observation:
    """istiod's per-proxy nonces and (with ``traffic``) the Envoy counters of the proxies in ``namespace`` (None:
    the mesh).  Without ``traffic`` only istiod is asked: a cheap look while waiting for a push to be acked."""
    proxies: dict[str, dict[str, tuple[str | None, str | None]]] = {}
    errors: list[str] = []
    targets = endpoints.istiod_targets(snapshot)
    for target in targets:
        name = target if isinstance(target, str) else target.qualified_name
        try:
            with endpoints.open_istiod(target) as endpoint:
                for proxy in parse_syncz(endpoint.get_json(SYNCZ_PATH), name):
                    if _in_scope(proxy.proxy, namespace):
                        proxies[proxy.proxy] = {t: (s.sent, s.acked) for t, s in proxy.types.items()}
        except MeshbotError as exc:
            errors.append(f"{name}: {exc}")
    answered = bool(targets) and len(errors) < len(targets)
    istiod_error = None if answered else ("; ".join(errors) or f"no istiod pod runs in {snapshot.istio_namespace}")
    return Observation(at=now, proxies=proxies if answered else None, istiod_error=istiod_error,
                       edges=_edges(endpoints, snapshot, namespace) if traffic else {})


def _edges(endpoints: EndpointResolver, snapshot: Snapshot, namespace: str | None) -> dict[str, Edge]:
    edges: dict[str, Edge] = {}
    for pod in endpoints.envoy_targets(snapshot, namespace):
        try:
            with endpoints.open_envoy(pod, snapshot) as endpoint:
                stats = parse_stats(endpoint.get_text("/stats"))
        except MeshbotError:
            continue  # a pod that cannot be read now counts as unmeasured, not as recovered
        for cluster in stats.service_clusters:
            edges[f"{pod.namespace}/{pod.name} -> {cluster.cluster.service}"] = Edge(cluster.requests,
                                                                                    cluster.errors_5xx)
    return edges


# -- judging --------------------------------------------------------------------------------------------------


def _percent(share: float) -> str:
    return f"{share * 100:.0f}%"


def _acknowledged(before: Observation, after: Observation) -> tuple[list[str], list[str]]:
    """Proxies that acknowledged a push since ``before`` (or newly connected and synced), and those that did not."""
    got: list[str] = []
    missing: list[str] = []
    for proxy, types in sorted((after.proxies or {}).items()):
        old = (before.proxies or {}).get(proxy)
        synced = all(sent == acked for sent, acked in types.values() if sent)
        moved = old is None or any(acked and acked != (old.get(t) or (None, None))[1]
                                   for t, (_, acked) in types.items())
        (got if synced and moved else missing).append(proxy)
    return got, missing


def _config_lines(before: Observation, after: Observation) -> tuple[float | None, list[str]]:
    """How much of the scope has the new config (1: all, 0: none, between: some), and the sentence."""
    if after.proxies is None:
        return 0.0, [f"no proxy has the new config: istiod is not pushing ({after.istiod_error})"]
    got, missing = _acknowledged(before, after)
    if not got and not missing:
        return None, ["no proxy in scope is connected to istiod, so none could take the change"]
    if not missing:
        return 1.0, [f"all {len(got)} proxies in scope acknowledged the new config (istiod /debug/syncz)"]
    if not got:
        return 0.0, [f"none of the {len(missing)} proxies in scope acknowledged a push since the change "
                       f"(e.g. {missing[0]}): istiod has not pushed it or they have not applied it"]
    return len(got) / (len(got) + len(missing)), [f"{len(got)} of {len(got) + len(missing)} proxies acknowledged the new config; not yet: "
                   + ", ".join(missing[:5]) + (" \u2026" if len(missing) > 5 else "")]


def _recovery(was: float, now: float) -> float:
    """How much of a recovery an edge shows: 1 recovered (at most 5 %), 0.5 at least halved, 0 did not fall."""
    if now <= RECOVERED_SHARE:
        return 1.0
    return 0.5 if now <= was * FELL_BY else 0.0


def _verb(recovered: float) -> str:
    return {1.0: "", 0.5: " \u2014 fell, but not under 5%"}.get(recovered, " \u2014 did not fall")


def _traffic_lines(before: Observation, after: Observation) -> tuple[list[float], list[str]]:
    """Per failing edge at the baseline: how much its error share fell, and the sentences, the last one saying
    which source measured the traffic."""
    if before.windowed is not None and after.windowed is not None:
        results, lines = _prometheus_lines(before, after)
        source = (f"traffic measured by Prometheus {after.prometheus} (istio_requests_total, the "
                  f"{human_duration(BEFORE)} before the change against the requests since)")
    else:
        results, lines = _counter_lines(before, after)
        error = after.prometheus_error or before.prometheus_error
        if after.prometheus is None:
            source = "traffic measured by Envoy's counters (no Prometheus is configured: MESHBOT_PROMETHEUS_URL)"
        else:
            source = f"traffic measured by Envoy's counters: Prometheus {after.prometheus} failed ({error})"
    if lines or after.prometheus_error:
        lines.append(source)
    return results, lines


def _prometheus_lines(before: Observation, after: Observation) -> tuple[list[float], list[str]]:
    # Prometheus counts the requests since the change itself; an edge it does not list had none.
    def since(key: str, was: Edge) -> Edge:
        return (after.windowed or {}).get(key) or Edge(0, 0)

    return _recovery_lines(before.windowed or {}, since, "error", human_duration(after.at - before.at))


def _counter_lines(before: Observation, after: Observation) -> tuple[list[float], list[str]]:
    def since(key: str, was: Edge) -> Edge | str:
        now = after.edges.get(key)
        if now is None:
            return "no counters now (pod replaced or unreachable)"
        if now.requests < was.requests:  # Envoy restarted (a new pod): its counters start over
            return now
        return Edge(max(now.requests - was.requests, 0), max(now.errors - was.errors, 0))

    return _recovery_lines(before.edges, since, "5xx", human_duration(after.at - before.at))


def _recovery_lines(baseline: Mapping[str, Edge], since: Callable[[str, Edge], Edge | str], measure: str,
                    took: str) -> tuple[list[float], list[str]]:
    """Per edge failing at the baseline, how much its ``measure`` share fell and a sentence saying so; ``since``
    gives the edge's requests since the change, or why they cannot be counted."""
    results: list[float] = []
    lines: list[str] = []
    for key, was in sorted(baseline.items()):
        if not was.errors or was.share is None:
            continue  # only the edges that were failing say whether the remedy worked
        now = since(key, was)
        if isinstance(now, str):
            lines.append(f"{key}: {now}; error share was {_percent(was.share)}")
            continue
        if now.share is None:
            lines.append(f"{key}: no requests since the change, so recovery is not measured yet "
                         f"(error share was {_percent(was.share)})")
            continue
        results.append(_recovery(was.share, now.share))
        lines.append(f"{key}: {measure} share {_percent(was.share)} \u2192 {_percent(now.share)} in {took}"
                     f"{_verb(results[-1])}")
    return results, lines


def judge(effect: Effect, before: Observation, after: Observation) -> EffectReport:
    """Whether the effect the action exists for is seen, from two observations."""
    signals: list[float] = []
    """Per signal, how much of the effect it shows: 1 all of it, 0 none."""
    lines: list[str] = []
    if effect == Effect.CONFIG:
        acked, config_lines = _config_lines(before, after)
        lines += config_lines
        if acked is not None:
            signals.append(acked)
    elif effect == Effect.CONTROL_PLANE:
        serving = after.proxies is not None
        signals.append(1.0 if serving else 0.0)
        if serving:
            synced = sum(1 for types in (after.proxies or {}).values()
                         if all(sent == acked for sent, acked in types.values() if sent))
            lines.append(f"istiod answers again and pushes: {synced} of {len(after.proxies or {})} proxies in sync"
                         if before.proxies is None else
                         f"istiod answers: {synced} of {len(after.proxies or {})} proxies in sync")
        else:
            lines.append(f"istiod still does not answer ({after.istiod_error})")
    traffic, traffic_lines = _traffic_lines(before, after)
    if effect == Effect.CONTROL_PLANE:
        # istiod serving again is the whole effect of an istiod fix; traffic that still fails has another cause
        # (an expired root, a policy) whose own remedy is next, so it is shown but does not judge this one.
        lines += [f"{line} (another cause remains)" if line.endswith(("did not fall", "not under 5%")) else line
                  for line in traffic_lines]
    else:
        signals += traffic
        lines += traffic_lines
    if not signals:
        return EffectReport(Outcome.UNMEASURED, tuple(lines or ["no proxy or traffic in scope could be read"]))
    if all(s == 1.0 for s in signals):
        return EffectReport(Outcome.SEEN, tuple(lines))
    return EffectReport(Outcome.PARTLY if any(signals) else Outcome.NOT_SEEN, tuple(lines))
