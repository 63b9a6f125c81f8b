"""The remediation actions as people type them, parsed and validated.  Pure: no cluster.

    permissive-mtls NAMESPACE|--mesh [--plaintext-clients|--servers-only]   (--mesh-wide = --mesh)
    bypass DEPLOYMENT -n NAMESPACE | bypass DEPLOYMENT NAMESPACE | bypass namespace NAMESPACE
    restart istiod [-n NAMESPACE] | restart DEPLOYMENT -n NAMESPACE | restart DEPLOYMENT NAMESPACE

This is meshbot's one action grammar: ``/mesh``, the buttons under a playbook's
suggestions, playbook validation at load and the CLI all parse through ``parse_action``,
and ``ActionTarget.command`` writes it back in canonical form.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from commands.errors import UserError
from commands.validation import is_dns1123_label, is_dns1123_subdomain


class ActionName(StrEnum):
    PERMISSIVE_MTLS = "permissive-mtls"
    BYPASS = "bypass"
    RESTART = "restart"


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

    @property
    def command(self) -> str:
        if self.action == ActionName.PERMISSIVE_MTLS:
            where = "--mesh" if self.scope == Scope.MESH else self.namespace
            flag = next((f" {flag}" for flag, mode in _CLIENT_FLAGS.items() if mode == self.clients), "")
            return f"{self.action} {where}{flag}"
        if self.scope == Scope.NAMESPACE:
            return f"{self.action} namespace {self.namespace}"
        return f"{self.action} {self.name or 'istiod'} -n {self.namespace}"


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
    positional, namespace = _split_namespace_flag(rest, action)
    if action == ActionName.BYPASS and namespace is None and len(positional) == 2 \
            and positional[0].lower() == "namespace":
        return ActionTarget(action, Scope.NAMESPACE, _namespace(positional[1], action))
    if action == ActionName.RESTART and positional == ["istiod"]:
        return ActionTarget(action, Scope.ISTIOD, _namespace(namespace or istio_namespace, action))
    if len(positional) == 2 and namespace is None:
        positional, namespace = positional[:1], positional[1]
    if len(positional) != 1 or namespace is None:
        raise ActionUsageError(f"usage: `{USAGE[action]}`")
    return ActionTarget(action, Scope.DEPLOYMENT, _namespace(namespace, action), _deployment(positional[0], action))
