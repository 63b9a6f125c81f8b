"""Carrying out a plan against the API server: dry-run, apply, verify.

Applying is idempotent and refuses drift: before writing anything, every object
is read; a change already in place is skipped, a change whose object no longer
looks the way the plan saw it stops the whole plan before the first write.
When a write fails mid-way, ``applied`` says how many leading changes may be in
place (a timed-out write counts: it may have landed), which is exactly what the
rollback plan undoes.  ``before_write`` is asked before every write: the approval desk's fencing check
(is this executor's claim still current?), which stops a stale executor by raising.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from commands.actions.plan import Change, Op, Plan, value_at
from commands.clients.kube import KubeClient
from commands.errors import Conflict, MeshbotError, NotFound, TransientError


class StepState(StrEnum):
    DONE = "done"
    ALREADY = "already in place"
    FAILED = "failed"
    NOT_RUN = "not run"


@dataclass(frozen=True)
class Step:
    origin: str
    op: str
    state: StepState
    detail: str = ""


@dataclass(frozen=True)
class Outcome:
    ok: bool
    steps: tuple[Step, ...]
    applied: int
    """Leading changes that are (or may be) in place; a rollback undoes exactly these."""
    error: str | None = None

    @classmethod
    def failed(cls, error: str, *, applied: int = 0) -> Outcome:
        """Nothing ran (``applied`` 0), or an unknown part did: then every change counts as possibly in place."""
        return cls(ok=False, steps=(), applied=applied, error=error)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "applied": self.applied, "error": self.error,
                "steps": [{"origin": s.origin, "op": s.op, "state": str(s.state), "detail": s.detail}
                          for s in self.steps]}


@dataclass(frozen=True)
class Verification:
    ok: bool
    lines: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "lines": list(self.lines)}


def read(client: KubeClient, change: Change) -> dict[str, Any] | None:
    try:
        return client.get(change.kind, change.namespace, change.name)
    except NotFound:
        return None


def in_state(change: Change, obj: Mapping[str, Any] | None, *, after: bool) -> bool:
    """Whether ``obj`` looks as the change expects it before (or leaves it after) running."""
    if change.op == Op.CREATE:
        return (obj is not None) if after else (obj is None)
    if change.op == Op.DELETE:
        return (obj is None) if after else (obj is not None)
    if obj is None:
        return False
    values = change.after if after else change.before
    return all(value_at(obj, path) == value for path, value in values)


def _write(client: KubeClient, change: Change, *, dry_run: bool, resource_version: str | None = None) -> None:
    if change.op == Op.CREATE:
        client.create(change.kind, change.body or {}, namespace=change.namespace, dry_run=dry_run)
    elif change.op == Op.DELETE:
        client.delete(change.kind, change.namespace, change.name, dry_run=dry_run)
    else:
        client.patch(change.kind, change.namespace, change.name,
                     _locked(change.merge_patch(), resource_version), dry_run=dry_run)


def _locked(patch: dict[str, Any], resource_version: str | None) -> dict[str, Any]:
    """The patch applies only to the object as read (optimistic concurrency, like kubectl and kopf): a write
    that landed in between makes the API server answer 409 Conflict instead of merging onto it."""
    if not resource_version:
        return patch
    return {**patch, "metadata": {**(patch.get("metadata") or {}), "resourceVersion": resource_version}}


def _resource_version(obj: Mapping[str, Any] | None) -> str | None:
    return (obj or {}).get("metadata", {}).get("resourceVersion") if obj else None


def _write_reread_on_conflict(client: KubeClient, change: Change, *, dry_run: bool,
                              resource_version: str | None) -> StepState:
    """Write once; on 409 re-read: done by the other writer -> ALREADY, still as expected -> write again on the
    fresh version, anything else -> a Conflict saying nothing of this change was written."""
    try:
        _write(client, change, dry_run=dry_run, resource_version=resource_version)
        return StepState.DONE
    except Conflict:
        if change.op != Op.PATCH:
            raise  # create: someone created it first; a delete carries no version and cannot conflict
    current = read(client, change)
    if in_state(change, current, after=True):
        return StepState.ALREADY
    refusal = next((why for path, why in change.refuse_if if value_at(current, path)), None)
    if refusal:  # e.g. the Deployment was paused by the other writer: the same refusal as before the plan ran
        raise Conflict(f"{change.origin} {refusal} (changed by another writer during the write); "
                       "nothing of this change was written", status=409)
    if not in_state(change, current, after=False):
        raise Conflict(f"{change.origin} was changed by another writer between the check and the write "
                       "(HTTP 409); nothing of this change was written; ask for the action again", status=409)
    _write(client, change, dry_run=dry_run, resource_version=_resource_version(current))
    return StepState.DONE


def _drift(change: Change) -> str:
    if change.op == Op.CREATE:
        return f"{change.origin} already exists (it did not when the plan was made)"
    if change.op == Op.DELETE:
        return f"{change.origin} is gone (it existed when the plan was made)"
    return f"{change.origin} changed since the plan was made; ask for the action again"


def _preflight(client: KubeClient, plan: Plan,
               versions: list[str | None] | None = None) -> tuple[list[bool], str | None]:
    """Which changes still need writing; an error when any object drifted from the plan.  ``versions`` gets
    each object's resourceVersion as read, so the write can insist on it."""
    pending: list[bool] = []
    for change in plan.changes:
        obj = read(client, change)
        if versions is not None:
            versions.append(_resource_version(obj))
        refusal = next((why for path, why in change.refuse_if if value_at(obj, path)), None)
        if refusal:
            return pending, f"{change.origin} {refusal}"
        if in_state(change, obj, after=True):
            pending.append(False)
        elif in_state(change, obj, after=False):
            pending.append(True)
        else:
            return pending, _drift(change)
    return pending, None


def _not_run(plan: Plan, start: int) -> list[Step]:
    return [Step(c.origin, str(c.op), StepState.NOT_RUN) for c in plan.changes[start:]]


def _run(client: KubeClient, plan: Plan, *, dry_run: bool,
         before_write: Callable[[Change], None] | None = None) -> Outcome:
    versions: list[str | None] = []
    try:
        pending, drift = _preflight(client, plan, versions)
    except MeshbotError as exc:
        return Outcome(False, tuple(_not_run(plan, 0)), 0, f"reading the objects failed: {exc}")
    if drift:
        return Outcome(False, tuple(_not_run(plan, 0)), 0, drift)
    steps: list[Step] = []
    for index, change in enumerate(plan.changes):
        if not pending[index]:
            steps.append(Step(change.origin, str(change.op), StepState.ALREADY))
            continue
        if before_write is not None:
            before_write(change)  # not caught below: a stale executor stops here, with nothing more written
        try:
            state = _write_reread_on_conflict(client, change, dry_run=dry_run, resource_version=versions[index])
        except MeshbotError as exc:
            steps.append(Step(change.origin, str(change.op), StepState.FAILED, str(exc)))
            steps += _not_run(plan, index + 1)
            # A write that timed out or hit a 5xx may have landed: the rollback must cover it.
            maybe_applied = index + 1 if isinstance(exc, TransientError) else index
            return Outcome(False, tuple(steps), 0 if dry_run else maybe_applied, f"{change.op} {change.origin}: {exc}")
        steps.append(Step(change.origin, str(change.op), state))
    return Outcome(True, tuple(steps), 0 if dry_run else len(plan.changes))


def dry_run(client: KubeClient, plan: Plan) -> Outcome:
    """Every write sent with ``dryRun=All``: the API server validates and admits it but stores nothing."""
    return _run(client, plan, dry_run=True)


def apply(client: KubeClient, plan: Plan, *, before_write: Callable[[Change], None] | None = None) -> Outcome:
    return _run(client, plan, dry_run=False, before_write=before_write)


def verify(client: KubeClient, plan: Plan) -> Verification:
    """Re-read every object: is each change in place?  Deployments also report their rollout."""
    lines: list[str] = []
    ok = True
    for change in plan.changes:
        try:
            obj = read(client, change)
        except MeshbotError as exc:
            ok = False
            lines.append(f"\u2753 {change.origin}: could not read it back ({exc})")
            continue
        if in_state(change, obj, after=True):
            lines.append(f"\u2705 {change.origin}: {change.op} in place{_rollout(obj)}")
        else:
            ok = False
            lines.append(f"\u274c {change.origin}: {change.op} not in place")
    return Verification(ok, tuple(lines))


def _rollout(obj: Mapping[str, Any] | None) -> str:
    if not obj or obj.get("kind") != "Deployment":
        return ""
    status = obj.get("status") or {}
    generation = (obj.get("metadata") or {}).get("generation")
    observed = status.get("observedGeneration")
    wanted = (obj.get("spec") or {}).get("replicas", 1)
    updated = status.get("updatedReplicas", 0)
    if generation is not None and observed is not None and observed < generation:
        return f"; rollout not yet observed by the controller (generation {observed}/{generation})"
    return f"; rollout {updated}/{wanted} pods updated"
