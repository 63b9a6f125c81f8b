"""The remediation actions as people type them, parsed and validated.  Pure: no cluster.

    permissive-mtls NAMESPACE|--mesh [--plaintext-clients|--servers-only]   (--mesh-wide = --mesh)
    bypass DEPLOYMENT -n NAMESPACE | bypass DEPLOYMENT NAMESPACE | bypass namespace NAMESPACE
    restart istiod [-n NAMESPACE] | restart DEPLOYMENT -n NAMESPACE | restart DEPLOYMENT NAMESPACE
    memory istiod [-n NAMESPACE] --limit 4Gi [--request 2Gi] [--container NAME]
    memory DEPLOYMENT -n NAMESPACE --limit 4Gi [--request 2Gi] [--container NAME]

This is meshbot's one action grammar: ``/mesh``, the buttons under a playbook's
suggestions, playbook validation at load and the CLI all parse through ``parse_action``,
and ``ActionTarget.command`` writes it back in canonical form.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from commands.cluster.quantity import parse_bytes
from commands.errors import UserError
from commands.validation import is_dns1123_label, is_dns1123_subdomain


class ActionName(StrEnum):
    PERMISSIVE_MTLS = "permissive-mtls"
    BYPASS = "bypass"
    RESTART = "restart"
    MEMORY = "memory"


class ClientMode(StrEnum):
    """Whether ``permissive-mtls`` also tells client sidecars to send plaintext (a DestinationRule).

    With auto mTLS, client sidecars keep originating mTLS to every workload with a sidecar, so when
    the certificates are what is broken, PERMISSIVE servers alone restore nothing between meshed
    workloads (https://istio.io/latest/docs/tasks/security/authentication/authn-policy/#auto-mutual-tls).
    """

    AUTO = "auto"
    """Add the client half when the scope has workloads with sidecars (the planner looks)."""
    PLAINTEXT = "plaintext"
    """Always add it: ``--plaintext-clients``."""
    UNCHANGED = "unchanged"
    """Never: ``--servers-only``, for clients without sidecars calling STRICT servers."""


_CLIENT_FLAGS = {"--plaintext-clients": ClientMode.PLAINTEXT, "--servers-only": ClientMode.UNCHANGED}
_MESH_FLAGS = ("--mesh", "--mesh-wide")


class Scope(StrEnum):
    NAMESPACE = "namespace"
    MESH = "mesh"
    DEPLOYMENT = "deployment"
    ISTIOD = "istiod"


USAGE = {
    ActionName.PERMISSIVE_MTLS: "permissive-mtls NAMESPACE|--mesh [--plaintext-clients|--servers-only]",
    ActionName.BYPASS: "bypass DEPLOYMENT -n NAMESPACE | bypass namespace NAMESPACE",
    ActionName.RESTART: "restart istiod [-n NAMESPACE] | restart DEPLOYMENT -n NAMESPACE",
    ActionName.MEMORY: "memory istiod|DEPLOYMENT [-n NAMESPACE] --limit 4Gi [--request 2Gi] [--container NAME]",
}


class ActionUsageError(UserError):
    pass


@dataclass(frozen=True)
class ActionTarget:
    action: ActionName
    scope: Scope
    namespace: str
    """The namespace acted in (the Istio root namespace for ``--mesh`` and istiod)."""
    name: str | None = None
    """The Deployment, for DEPLOYMENT and ISTIOD scopes (None: find istiod's Deployment)."""
    clients: ClientMode = ClientMode.AUTO
    """permissive-mtls only: whether client sidecars are also told to send plaintext."""
    root_namespace: str = "istio-system"
    """The Istio root namespace (where mesh-wide policies live), as the action was parsed with."""
    memory: MemorySetting | None = None
    """memory only: the new limit and request, and which container (None: the Deployment's only or first)."""

    @property
    def command(self) -> str:
        if self.action == ActionName.PERMISSIVE_MTLS:
            where = "--mesh" if self.scope == Scope.MESH else self.namespace
            flag = next((f" {flag}" for flag, mode in _CLIENT_FLAGS.items() if mode == self.clients), "")
            return f"{self.action} {where}{flag}"
        if self.scope == Scope.NAMESPACE:
            return f"{self.action} namespace {self.namespace}"
        base = f"{self.action} {self.name or 'istiod'} -n {self.namespace}"
        return f"{base} {self.memory.flags}" if self.memory else base


@dataclass(frozen=True)
class MemorySetting:
    """``--limit``/``--request`` as typed (Kubernetes quantities) and ``--container``."""

    limit: str | None = None
    request: str | None = None
    container: str | None = None

    @property
    def flags(self) -> str:
        parts = [f"--{flag} {value}" for flag, value in (("limit", self.limit), ("request", self.request),
                                                          ("container", self.container)) if value]
        return " ".join(parts)


def _namespace(value: str, action: ActionName) -> str:
    if not is_dns1123_label(value):
        raise ActionUsageError(f"`{value[:80]}` is not a valid namespace name. Usage: `{USAGE[action]}`")
    return value


def _deployment(value: str, action: ActionName) -> str:
    if not is_dns1123_subdomain(value) or value.startswith("-"):
        raise ActionUsageError(f"`{value[:80]}` is not a valid Deployment name. Usage: `{USAGE[action]}`")
    return value


def _split_namespace_flag(words: Sequence[str], action: ActionName) -> tuple[list[str], str | None]:
    """Positional words and the value of ``-n``/``--namespace`` (None when absent)."""
    positional: list[str] = []
    namespace: str | None = None
    items = list(words)
    while items:
        word = items.pop(0)
        if word in ("-n", "--namespace"):
            if not items or namespace is not None:
                raise ActionUsageError(f"`{word}` needs one namespace. Usage: `{USAGE[action]}`")
            namespace = items.pop(0)
        elif word.startswith("--namespace="):
            namespace = word.split("=", 1)[1]
        else:
            positional.append(word)
    return positional, namespace


def _parse_permissive_mtls(rest: list[str], istio_namespace: str) -> ActionTarget:
    action = ActionName.PERMISSIVE_MTLS
    modes = [_CLIENT_FLAGS[w] for w in rest if w in _CLIENT_FLAGS]
    mesh = [w for w in rest if w in _MESH_FLAGS]
    positional = [w for w in rest if w not in _CLIENT_FLAGS and w not in _MESH_FLAGS]
    if len(modes) > 1:
        raise ActionUsageError(f"choose one of `--plaintext-clients` and `--servers-only`. Usage: `{USAGE[action]}`")
    clients = modes[0] if modes else ClientMode.AUTO
    if len(mesh) == 1 and not positional:
        return ActionTarget(action, Scope.MESH, istio_namespace, clients=clients, root_namespace=istio_namespace)
    if mesh or len(positional) != 1 or positional[0].startswith("-"):
        raise ActionUsageError(f"usage: `{USAGE[action]}`")
    return ActionTarget(action, Scope.NAMESPACE, _namespace(positional[0], action), clients=clients,
                        root_namespace=istio_namespace)


def parse_action(words: Sequence[str], *, istio_namespace: str = "istio-system") -> ActionTarget:
    """``["restart", "istiod"]`` -> ActionTarget; ActionUsageError says what is wrong and the usage."""
    if not words:
        raise ActionUsageError("which action? " + "; ".join(f"`{u}`" for u in USAGE.values()))
    try:
        action = ActionName(words[0].lower())
    except ValueError:
        raise ActionUsageError(f"unknown action `{words[0][:40]}`; meshbot can do "
                               + ", ".join(f"`{a}`" for a in ActionName)) from None
    rest = list(words[1:])
    if action == ActionName.PERMISSIVE_MTLS:
        return _parse_permissive_mtls(rest, istio_namespace)
    memory: MemorySetting | None = None
    if action == ActionName.MEMORY:
        rest, memory = _memory_flags(rest)
    positional, namespace = _split_namespace_flag(rest, action)
    if action == ActionName.BYPASS and namespace is None and len(positional) == 2 \
            and positional[0].lower() == "namespace":
        return ActionTarget(action, Scope.NAMESPACE, _namespace(positional[1], action))
    if action in (ActionName.RESTART, ActionName.MEMORY) and positional == ["istiod"]:
        return ActionTarget(action, Scope.ISTIOD, _namespace(namespace or istio_namespace, action), memory=memory)
    if len(positional) == 2 and namespace is None:
        positional, namespace = positional[:1], positional[1]
    if len(positional) != 1 or namespace is None:
        raise ActionUsageError(f"usage: `{USAGE[action]}`")
    return ActionTarget(action, Scope.DEPLOYMENT, _namespace(namespace, action), _deployment(positional[0], action),
                        memory=memory)


_MEMORY_FLAGS = ("--limit", "--request", "--container")


def _memory_flags(words: list[str]) -> tuple[list[str], MemorySetting]:
    """The words left once ``--limit``/``--request``/``--container`` (``--flag V`` or ``--flag=V``) are taken."""
    action = ActionName.MEMORY
    values: dict[str, str] = {}
    left: list[str] = []
    items = list(words)
    while items:
        word = items.pop(0)
        flag, eq, inline = word.partition("=")
        if flag not in _MEMORY_FLAGS:
            left.append(word)
            continue
        if flag in values:
            raise ActionUsageError(f"`{flag}` is given twice. Usage: `{USAGE[action]}`")
        if not eq and not items:
            raise ActionUsageError(f"`{flag}` needs a value. Usage: `{USAGE[action]}`")
        values[flag] = inline if eq else items.pop(0)
    for flag in ("--limit", "--request"):
        quantity = values.get(flag)
        if quantity is not None and not _memory_quantity(quantity):
            raise ActionUsageError(f"`{quantity[:40]}` is not a memory quantity (e.g. 4Gi, 2048Mi). "
                                   f"Usage: `{USAGE[action]}`")
    if "--limit" not in values and "--request" not in values:
        raise ActionUsageError(f"say the new memory with `--limit` (and/or `--request`). Usage: `{USAGE[action]}`")
    container = values.get("--container")
    if container is not None and not is_dns1123_label(container):
        raise ActionUsageError(f"`{container[:40]}` is not a valid container name. Usage: `{USAGE[action]}`")
    limit, request = values.get("--limit"), values.get("--request")
    if limit and request and (parse_bytes(request) or 0) > (parse_bytes(limit) or 0):
        # The API server refuses it anyway ("must be less than or equal to memory limit", k8s apis/core/validation).
        raise ActionUsageError(f"the request ({request}) cannot be larger than the limit ({limit})")
    return left, MemorySetting(limit, request, container)


def _memory_quantity(text: str) -> bool:
    """A whole number of bytes with a binary or decimal suffix, at least 64Mi: less is a typo, not a fix."""
    value = parse_bytes(text)
    return bool(re.fullmatch(r"[0-9]+(Ki|Mi|Gi|Ti|k|M|G|T)?", text)) and value is not None and value >= 64 * 2**20
