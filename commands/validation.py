"""Validation of names that come from people (Slack text, CLI flags) before they reach the API."""

from __future__ import annotations

import re

from commands.errors import UserError

# Used with fullmatch only: no anchors, so a trailing newline can never slip through.
_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
NAMESPACE_RULE = "lower-case letters, digits and '-', at most 63 characters, starting and ending with a letter or digit"


def is_dns1123_label(value: str) -> bool:
    return len(value) <= 63 and bool(_DNS1123_LABEL.fullmatch(value))


def is_dns1123_subdomain(value: str) -> bool:
    return len(value) <= 253 and bool(_DNS1123_SUBDOMAIN.fullmatch(value))


def namespace_problem(value: str) -> str | None:
    """Why ``value`` cannot be a namespace name (DNS-1123 label), or None when it can.

    The one namespace rule: slash commands, actions, playbooks and settings each raise their own error
    type with this text."""
    if is_dns1123_label(value):
        return None
    return f"`{value[:80]}` is not a valid namespace name ({NAMESPACE_RULE})"


def object_name_problem(value: str, what: str) -> str | None:
    """Why ``value`` cannot be the name of a ``what`` (DNS-1123 subdomain), or None when it can."""
    if is_dns1123_subdomain(value) and not value.startswith("-"):
        return None
    return f"`{value[:80]}` is not a valid {what} name (DNS-1123: lower-case letters, digits, '-' and '.')"


def validate_dns1123_label(value: str, *, what: str = "name") -> str:
    """Return ``value`` if it is a valid namespace-style name, else raise a UserError saying why."""
    if not is_dns1123_label(value):
        raise UserError(f"{what} {value!r} is not a valid DNS-1123 label "
                        "(lower-case letters, digits and '-', at most 63 characters, "
                        "starting and ending with a letter or digit)")
    return value


def validate_dns1123_subdomain(value: str, *, what: str = "name") -> str:
    """Object names (Deployments, Secrets) may contain dots; same rule otherwise."""
    if not is_dns1123_subdomain(value):
        raise UserError(f"{what} {value!r} is not a valid Kubernetes object name (DNS-1123 subdomain)")
    return value
