"""Validation of names that come from people (Slack text, CLI flags) before they reach the API."""

from __future__ import annotations

import re

from commands.errors import UserError

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def is_dns1123_label(value: str) -> bool:
    return len(value) <= 63 and bool(_DNS1123_LABEL.fullmatch(value))


def is_dns1123_subdomain(value: str) -> bool:
    return len(value) <= 253 and bool(_DNS1123_SUBDOMAIN.fullmatch(value))


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
