"""Parsing `/mesh` text into typed requests (pure), and the registry that says what each sub-command does.

Run as a module (``.venv/bin/python -m tests.test_slash``) it writes the generated table into
docs/mesh-commands.md; ``test_the_docs_table_of_mesh_commands_is_current`` fails until that is done.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import pytest

from bot.incidents.commands import IncidentOp, IncidentRequest
from bot.slack.roles import Permission
from bot.slack.slash import DiagnoseRequest, HelpRequest, SlashCommands, UsageError, add_diagnoses
from commands.catalog import default_checks
from tests.support.bot import built_bot

DOCS_PAGE = Path(__file__).resolve().parents[1] / "docs" / "mesh-commands.md"
START, END = "<!-- mesh-commands:start -->", "<!-- mesh-commands:end -->"


def answer_nothing(who, request) -> None:
    """A handler for parsing tests, which never run one."""


COMMANDS = SlashCommands()
add_diagnoses(COMMANDS, default_checks(), answer_nothing)
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


@pytest.mark.parametrize("text, suggestion", [
    ("diagnos prod", "Did you mean `diagnose`?"),
    ("stauts", "Did you mean `status`?"),
    ("cert prod", "Did you mean `certs`?"),
])
def test_a_mistyped_subcommand_suggests_the_closest_registered_ones(text, suggestion):
    with pytest.raises(UsageError, match=f"unknown subcommand .*{suggestion.replace('?', '[?]')}"):
        parse(text)


def test_help_lists_every_subcommand():
    text = help_text()
    for name in ("status", "proxy-status", "certs", "envoy", "analyze", "diagnose"):
        assert f"/mesh {name} [NAMESPACE]" in text


def test_a_subcommand_is_refused_without_a_handler():
    with pytest.raises(ValueError, match="/mesh gateways needs a handler"):
        SlashCommands().add("gateways", usage="gateways", summary="s", parse=lambda words, rest: None, handle=None)


def test_a_subcommand_name_cannot_be_registered_twice():
    commands = SlashCommands()
    commands.add("gateways", usage="gateways", summary="s", parse=lambda words, rest: None, handle=answer_nothing)
    with pytest.raises(ValueError, match="registered twice"):
        commands.add("gateways", usage="gateways", summary="s", parse=lambda words, rest: None,
                     handle=answer_nothing)


def test_the_command_carries_its_subcommand_with_the_request():
    command = COMMANDS.command("certs prod")
    assert command.subcommand.name == "certs"
    assert command.subcommand.handle.__wrapped__ is answer_nothing, "behind the registry's namespace check"
    assert command.request == DiagnoseRequest("certs", ("certs",), "prod")
    assert command.permission is Permission.DIAGNOSE and not command.subcommand.background


def test_built_bot_needs_request_for_actions_and_resolve_only_for_resolving_an_incident(tmp_path):
    with built_bot(tmp_path) as meshbot:
        commands = meshbot.services.slash
        assert commands.command("restart istiod").permission is Permission.REQUEST
        assert commands.command("bypass namespace prod").permission is Permission.REQUEST
        assert commands.command("incident resolve 3").permission is Permission.RESOLVE
        assert commands.command("incident note 3 looking").permission is Permission.DIAGNOSE
        assert commands.command("incident list").request == IncidentRequest(IncidentOp.LIST)
        assert commands.command("diagnose prod").permission is Permission.DIAGNOSE


def test_built_bot_runs_cluster_work_on_the_worker_pool_and_answers_from_the_messenger_pool(tmp_path):
    with built_bot(tmp_path) as meshbot:
        background = {spec.name: spec.background for spec in meshbot.services.slash if spec.handle}
    assert background["reminders"]
    # diagnoses post "Running…" from the messenger pool and hand the checks to the workers themselves; action
    # requests hand their planning to the approvals' own pool (tests/test_approval_executor.py)
    assert not background["diagnose"] and not background["incident"] and not background["restart"]


def test_every_check_shares_one_row_of_the_docs_table_so_adding_a_check_leaves_it_unchanged():
    table = COMMANDS.markdown_table()
    assert table.count("`/mesh CHECK [NAMESPACE]`") == 1
    assert "`/mesh status" not in table and "`/mesh diagnose [NAMESPACE]`" in table


def generated_table() -> str:
    with tempfile.TemporaryDirectory() as tmp, built_bot(Path(tmp)) as meshbot:
        return meshbot.services.slash.markdown_table()


def test_the_docs_table_of_mesh_commands_is_current():
    text = DOCS_PAGE.read_text()
    block = text.split(START, 1)[1].split(END, 1)[0].strip()
    assert block == generated_table(), "run `.venv/bin/python -m tests.test_slash` to regenerate docs/mesh-commands.md"


def write_docs_table() -> None:
    text = DOCS_PAGE.read_text()
    before, rest = text.split(START, 1)
    after = rest.split(END, 1)[1]
    DOCS_PAGE.write_text(f"{before}{START}\n{generated_table()}\n{END}{after}")


if __name__ == "__main__":
    write_docs_table()
    sys.exit(0)
