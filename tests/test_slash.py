"""Parsing `/mesh` text into typed requests (pure)."""

from __future__ import annotations

import pytest

from bot.slack.slash import DiagnoseRequest, HelpRequest, SlashCommands, UsageError, add_diagnoses
from commands.catalog import default_checks

COMMANDS = SlashCommands()
add_diagnoses(COMMANDS, default_checks())
parse, help_text = COMMANDS.parse, COMMANDS.help_text


@pytest.mark.parametrize("text, expected", [
    ("", HelpRequest()),
    ("help", HelpRequest()),
    ("diagnose", DiagnoseRequest("diagnose", ("all",), None)),
    ("diagnose prod", DiagnoseRequest("diagnose", ("all",), "prod")),
    ("  STATUS   payments  ", DiagnoseRequest("status", ("status",), "payments")),
    ("proxy-status istio-system", DiagnoseRequest("proxy-status", ("proxy-status",), "istio-system")),
    ("certs", DiagnoseRequest("certs", ("certs",), None)),
    ("analyze prod", DiagnoseRequest("analyze", ("analyze",), "prod")),
    ("envoy prod", DiagnoseRequest("envoy", ("envoy",), "prod")),
])
def test_valid_commands_become_typed_requests(text, expected):
    assert parse(text) == expected


@pytest.mark.parametrize("text, complaint", [
    ("frobnicate", "unknown subcommand"),
    ("status Prod", "not a valid namespace"),
    ("status prod;rm", "not a valid namespace"),
    ("status prod;rm -rf", "too many arguments"),
    ("certs " + "a" * 64, "not a valid namespace"),
    ("diagnose prod dev", "too many arguments"),
])
def test_bad_text_is_a_usage_error_saying_why(text, complaint):
    with pytest.raises(UsageError, match=complaint):
        parse(text)


def test_help_lists_every_subcommand():
    text = help_text()
    for name in ("status", "proxy-status", "certs", "envoy", "analyze", "diagnose"):
        assert f"/mesh {name} [NAMESPACE]" in text
