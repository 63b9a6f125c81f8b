"""What a remediation will change, as data: object-level changes, their inverse, a diff and a hash.

A plan is computed from the cluster once, when someone asks for an action, and
stored; approvers approve exactly that plan (bound to its hash), and the
rollback is derived from it, never re-computed from a cluster that has moved on.
Every change records the state it expects to find ("before") and the state it
leaves ("after"), which makes applying idempotent and drift detectable.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import yaml

Path = tuple[str, ...]
SERVER_FIELDS = ("resourceVersion", "uid", "creationTimestamp", "generation", "managedFields", "selfLink")


class Op(StrEnum):
    CREATE = "create"
    PATCH = "patch"
    DELETE = "delete"


@dataclass(frozen=True)
class Change:
    """One write to one object.

    CREATE carries the whole ``body``; DELETE carries the ``body`` it removes (so it can be restored);
    PATCH carries ``after`` values at paths and the ``before`` values it expects there (None: absent).
    ``refuse_if`` names fields that must not be set when the change is applied (a paused
    Deployment would not roll), each with the reason; it is checked, never written.
    """

    op: Op
    kind: str
    namespace: str | None
    name: str
    body: Mapping[str, Any] | None = None
    before: tuple[tuple[Path, Any], ...] = ()
    after: tuple[tuple[Path, Any], ...] = ()
    refuse_if: tuple[tuple[Path, str], ...] = ()

    @property
    def origin(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}" if self.namespace else f"{self.kind} {self.name}"

    def merge_patch(self) -> dict[str, Any]:
        """The JSON merge patch that sets ``after`` (None removes a key)."""
        patch: dict[str, Any] = {}
        for path, value in self.after:
            node = patch
            for key in path[:-1]:
                node = node.setdefault(key, {})
            node[path[-1]] = value
        return patch

    def inverse(self) -> Change:
        if self.op == Op.CREATE:
            return Change(Op.DELETE, self.kind, self.namespace, self.name, body=self.body)
        if self.op == Op.DELETE:
            return Change(Op.CREATE, self.kind, self.namespace, self.name, body=self.body)
        return Change(Op.PATCH, self.kind, self.namespace, self.name, before=self.after, after=self.before)

    def to_dict(self) -> dict[str, Any]:
        data = {"op": str(self.op), "kind": self.kind, "namespace": self.namespace, "name": self.name,
                "body": self.body, "before": [[list(p), v] for p, v in self.before],
                "after": [[list(p), v] for p, v in self.after]}
        if self.refuse_if:  # only when set, so plans stored before the field existed keep their hash
            data["refuse_if"] = [[list(p), why] for p, why in self.refuse_if]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Change:
        return cls(Op(data["op"]), data["kind"], data.get("namespace"), data["name"], body=data.get("body"),
                   before=tuple((tuple(p), v) for p, v in data.get("before") or ()),
                   after=tuple((tuple(p), v) for p, v in data.get("after") or ()),
                   refuse_if=tuple((tuple(p), why) for p, why in data.get("refuse_if") or ()))


@dataclass(frozen=True)
class Plan:
    action: str
    """The action as a person would type it: ``permissive-mtls payments``."""
    summary: str
    changes: tuple[Change, ...]
    notes: tuple[str, ...] = ()
    """What a reviewer must know: objects that keep overriding the change, skipped workloads."""
    reversible: bool = True
    rollback_of: str | None = None
    """For a rollback plan: the hash of the plan it undoes."""
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action, "summary": self.summary, "changes": [c.to_dict() for c in self.changes],
                "notes": list(self.notes), "reversible": self.reversible, "rollback_of": self.rollback_of,
                "extra": dict(self.extra)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Plan:
        return cls(data["action"], data["summary"], tuple(Change.from_dict(c) for c in data["changes"]),
                   tuple(data.get("notes") or ()), bool(data.get("reversible", True)), data.get("rollback_of"),
                   dict(data.get("extra") or {}))

    def canonical_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @property
    def hash(self) -> str:
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()


MUST_NOT_BE_PAUSED = ((("spec", "paused"),
                       "is paused now, so its pods would not roll; `kubectl rollout resume` it and ask again"),)
"""A paused Deployment does not roll a changed template (kubernetes.io/docs/concepts/workloads/controllers/
deployment/#pausing-and-resuming-a-deployment): every change meant to roll pods refuses it."""
ROLLOUT_TRIGGER = ("spec", "template", "metadata", "annotations", "kubectl.kubernetes.io/restartedAt")


def rolls_pods(change: Change) -> bool:
    """A change that only re-stamps a pod template: it exists to roll pods under the other changes."""
    return change.op == Op.PATCH and bool(change.after) and all(path == ROLLOUT_TRIGGER for path, _ in change.after)


def rollback_plan(plan: Plan, applied: int | None = None) -> Plan:
    """The plan that undoes the first ``applied`` changes of ``plan`` (all by default).

    Newest first, except that pod rolls go last: pods must be recreated after what
    they pick up is restored (``bypass namespace``: the injection label first, then
    the Deployments roll and get their sidecars back).
    """
    done = plan.changes if applied is None else plan.changes[:applied]
    undo = sorted((c.inverse() for c in reversed(done)), key=rolls_pods)
    return Plan(action=f"rollback of {plan.action}", summary=f"Undo: {plan.summary}",
                changes=tuple(undo), reversible=False, rollback_of=plan.hash)


# -- reading values out of objects -------------------------------------------------------------


def value_at(obj: Mapping[str, Any] | None, path: Path) -> Any:
    node: Any = obj
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    return node


def clean_body(obj: Mapping[str, Any]) -> dict[str, Any]:
    """An object as it can be created again: no status, no server-managed metadata."""
    body = copy.deepcopy(dict(obj))
    body.pop("status", None)
    metadata = body.get("metadata") or {}
    for key in SERVER_FIELDS:
        metadata.pop(key, None)
    annotations = metadata.get("annotations") or {}
    annotations.pop("kubectl.kubernetes.io/last-applied-configuration", None)
    if not annotations:
        metadata.pop("annotations", None)
    return body


# -- showing a plan ----------------------------------------------------------------------------


def _yaml(obj: Any) -> list[str]:
    return yaml.safe_dump(obj, sort_keys=False, default_flow_style=False).splitlines() if obj is not None else []


def change_diff(change: Change) -> str:
    """A unified diff of what the change does, as a reviewer reads it."""
    if change.op == Op.CREATE:
        before, after = [], _yaml(change.body)
    elif change.op == Op.DELETE:
        before, after = _yaml(change.body), []
    else:
        before = [line for path, value in change.before for line in _path_lines(path, value)]
        after = [line for path, value in change.after for line in _path_lines(path, value)]
    lines = difflib.unified_diff(before, after, fromfile=f"{change.origin} (now)",
                                 tofile=f"{change.origin} ({change.op})", lineterm="", n=2)
    return "\n".join(lines)


def _path_lines(path: Path, value: Any) -> list[str]:
    """``a.b: "x"`` for a scalar; a structured value (a containers list) as YAML under its path, so the diff
    marks the one line that changes instead of one long JSON line."""
    if isinstance(value, (Mapping, list)):
        return [f"{'.'.join(path)}:", *(f"  {line}" for line in _yaml(value))]
    return [f"{'.'.join(path)}: {json.dumps(value) if value is not None else '(absent)'}"]


# -- what a change sets, as flat lines a reviewer cannot miss ----------------------------------------

_IDENTITY = {("apiVersion",), ("kind",), ("metadata", "name"), ("metadata", "namespace")}


def _leaves(value: Any, prefix: str = "") -> dict[str, Any]:
    """``{"spec.mtls.mode": "PERMISSIVE"}``; list items are keyed by their ``name`` when they have one."""
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_leaves(item, f"{prefix}.{key}" if prefix else str(key)))
        return out or {prefix: {}}
    if isinstance(value, list):
        out = {}
        for index, item in enumerate(value):
            label = item.get("name") if isinstance(item, Mapping) and item.get("name") else index
            out.update(_leaves(item, f"{prefix}[{label}]"))
        return out or {prefix: []}
    return {prefix: value}


def _shown(value: Any) -> str:
    return "(absent)" if value is None else json.dumps(value)


def set_lines(change: Change) -> list[str]:
    """Every value the change sets or removes, one line each: ``spec.mtls.mode: "PERMISSIVE"``,
    ``...containers[discovery].resources.limits.memory: "2Gi" → "4Gi"``.  Never shortened: these are what
    approvers approve (modes, TLS settings, labels, annotations, resources)."""
    if change.op in (Op.CREATE, Op.DELETE):
        body = dict(change.body or {})
        leaves = {k: v for k, v in _leaves(body).items() if tuple(k.split(".")) not in _IDENTITY}
        verb = "" if change.op == Op.CREATE else "removed: "
        return [f"{verb}{path}: {_shown(value)}" for path, value in leaves.items()]
    lines: list[str] = []
    before = dict(change.before)
    for path, after_value in change.after:
        root = ".".join(path)
        old = _leaves(before.get(path), root) if before.get(path) is not None else {}
        new = _leaves(after_value, root) if after_value is not None else {}
        if not old and not new:
            continue
        if not isinstance(after_value, (Mapping, list)) and not isinstance(before.get(path), (Mapping, list)):
            lines.append(f"{root}: {_shown(before.get(path))} \u2192 {_shown(after_value)}")
            continue
        for key in [*old, *(k for k in new if k not in old)]:
            if old.get(key) != new.get(key):
                lines.append(f"{key}: {_shown(old.get(key))} \u2192 {_shown(new.get(key))}")
    return lines


def changed_lines(plan: Plan) -> list[tuple[str, list[str]]]:
    """(which objects, what is set on them) per distinct change: the same restart stamp on 30 Deployments is
    one entry naming the 30, so every distinct value stays visible."""
    grouped: dict[tuple[str, str, tuple[str, ...]], list[str]] = {}
    for change in plan.changes:
        key = (str(change.op), change.kind, tuple(set_lines(change)))
        grouped.setdefault(key, []).append(f"{change.namespace}/{change.name}" if change.namespace else change.name)
    return [(f"{op} {kind} {', '.join(names)}", list(lines)) for (op, kind, lines), names in grouped.items()]


def plan_diff(plan: Plan) -> str:
    return "\n".join(change_diff(c) for c in plan.changes)


def describe_changes(changes: Sequence[Change]) -> list[str]:
    return [f"{c.op} {c.origin}" for c in changes]
