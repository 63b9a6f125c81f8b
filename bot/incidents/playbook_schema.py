"""The playbook file format as a JSON Schema (``PLAYBOOK_SCHEMA``), with the checks a registry knows.

``bot.incidents.playbook_loader`` validates every file against it before reading its meaning; docs/incidents.md
(*Playbooks*) describes the same format in words.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jsonschema

from commands.catalog import default_checks
from commands.checks.registry import ALL, CheckRegistry

# -- the schema ---------------------------------------------------------------------------

_NAMESPACE = {"type": "string", "maxLength": 63, "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
              "description": "a namespace name (DNS-1123 label: lower-case letters, digits and '-')"}
_LABEL_NAME = {"type": "string", "pattern": r"^[a-zA-Z_][a-zA-Z0-9_]*$",
               "description": "an alert label name (letters, digits and '_', not starting with a digit)"}
_TEXT = {"type": "string", "pattern": r"\S", "description": "non-blank text"}

STEP_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        # The registry's check names (and ``all``) are put in as an enum when a set of playbooks is loaded.
        "check": {"type": "string"},
        "namespace": _NAMESPACE,
        "namespace_label": _LABEL_NAME,
        "pod_label": _LABEL_NAME,
    },
    "required": ["check"],
    "additionalProperties": False,
}

RULE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "codes": {"type": "array", "minItems": 1,
                  "items": {"type": "string", "pattern": r"^(MB|IST)[0-9]{4}$",
                            "description": "a finding code (MB#### or IST####)"}},
        "title": _TEXT,
        "action": _TEXT,
        "advice": _TEXT,
        "namespace": _NAMESPACE,
        "namespace_label": _LABEL_NAME,
        "pod_label": _LABEL_NAME,
        "message_pattern": _TEXT,
    },
    "required": ["codes", "title"],
    "additionalProperties": False,
}

PLAYBOOK_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "meshbot playbook",
    "type": "object",
    "properties": {
        "name": {**_NAMESPACE, "description": "a DNS-1123 label (lower-case letters, digits and '-')"},
        "description": _TEXT,
        "alertname": _TEXT,  # any text: Grafana and other senders allow spaces
        "fallback": {"type": "boolean"},
        "matchers": {"type": "array", "items": {"type": "string"}},
        "diagnostics": {"type": "array", "minItems": 1, "items": STEP_SCHEMA},
        "remediations": {"type": "array", "items": RULE_SCHEMA},
    },
    "required": ["name", "description", "diagnostics"],
    "additionalProperties": False,
}



def playbook_schema(check_names: Sequence[str]) -> dict[str, Any]:
    """``PLAYBOOK_SCHEMA`` with ``diagnostics[].check`` limited to ``check_names``, in report order."""
    step = {**STEP_SCHEMA, "properties": {**STEP_SCHEMA["properties"], "check": {"enum": list(check_names)}}}
    properties = {**PLAYBOOK_SCHEMA["properties"], "diagnostics": {**PLAYBOOK_SCHEMA["properties"]["diagnostics"],
                                                                   "items": step}}
    return {**PLAYBOOK_SCHEMA, "properties": properties}


@functools.lru_cache(maxsize=4)
def validator(check_names: tuple[str, ...]) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(playbook_schema(check_names))


def check_names(checks: CheckRegistry | None) -> tuple[str, ...]:
    return (*(checks or default_checks()).names(), ALL)
