"""Registries are objects wired in one place: checks, /mesh subcommands, handlers, migrations, error text."""

from __future__ import annotations

import sqlite3

import pytest

from bot.server.schema import MIGRATIONS, open_database
from bot.slack.app import Invocation, run_in_background
from bot.slack.slash import SlashCommands, add_diagnoses
from bot.storage.database import Database
from commands.catalog import default_checks
from commands.checks.registry import CheckRegistry
from commands.checks.status import status
from commands.errors import UserError

REPORT_ORDER = ("status", "proxy-status", "certs", "envoy", "analyze")
"""The shipped checks in the order they report.  A new check may go anywhere in the catalogue, so the tests
below pin these five's order among themselves, never the whole list (CONTRIBUTING's recipe edits no test)."""


def shipped(names) -> list[str]:
    return [name for name in names if name in REPORT_ORDER]


def test_default_checks_are_listed_in_report_order():
    assert shipped(default_checks().names()) == list(REPORT_ORDER)


def test_all_expands_to_every_check_once_in_report_order():
    names = default_checks().names()
    expanded = default_checks().resolve(["certs", "all"])
    assert expanded == ["certs", *(name for name in names if name != "certs")]
    assert shipped(expanded) == ["certs", "status", "proxy-status", "envoy", "analyze"]


def test_an_unknown_check_is_a_user_error_naming_the_valid_ones():
    choices = ", ".join(default_checks().names())
    with pytest.raises(UserError, match=f"unknown check 'mtls'; choose from: {choices}, all"):
        default_checks().resolve(["mtls"])


def test_a_registry_knows_only_the_checks_it_was_given():
    registry = CheckRegistry([status])
    assert registry.names() == ("status",)
    with pytest.raises(UserError, match="choose from: status, all"):
        registry.resolve(["certs"])


def test_a_check_name_cannot_be_registered_twice():
    with pytest.raises(ValueError, match="taken"):
        CheckRegistry([status, status])


def test_slash_help_has_one_subcommand_per_check_with_the_checks_summary():
    commands = SlashCommands()
    checks = default_checks()
    add_diagnoses(commands, checks, lambda who, request: None)
    assert commands.names() == ("help", *checks.names(), "diagnose")
    for spec in checks:
        assert f"`/mesh {spec.name} [NAMESPACE]` \u2014 {spec.summary}" in commands.help_text()


def test_the_schema_keeps_the_version_numbers_existing_databases_recorded():
    assert [(m.version, m.description) for m in MIGRATIONS[:4]] == [
        (1, "incidents, incident alerts, hash-chained events, raw notifications"),
        (2, "the Slack outbox"),
        (3, "approval requests and their votes"),
        (4, "certificate reminders already posted"),
    ]
    assert [m.version for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1)), "later ones only append"


def test_an_older_database_gets_only_the_migrations_it_lacks(tmp_path):
    path = tmp_path / "old.db"
    old = Database(path, MIGRATIONS[:2])
    assert old.migrate() == 2
    old.close()
    assert open_database(path).migrate() == MIGRATIONS[-1].version
    with sqlite3.connect(path) as db:
        assert ([row[0] for row in db.execute("SELECT version FROM schema_version ORDER BY version")]
                == [m.version for m in MIGRATIONS])


def test_migrations_out_of_order_are_refused(tmp_path):
    with pytest.raises(ValueError, match="strictly increase"):
        Database(tmp_path / "x.db", [MIGRATIONS[1], MIGRATIONS[0]])


def invocation(answers: list[str]) -> Invocation:
    return Invocation(user="UALICE", channel="CINCIDENT", respond=lambda text, **_: answers.append(text))


def test_a_handlers_own_error_reaches_the_asker_as_one_warning():
    answers: list[str] = []

    def refuse(who: Invocation, request: object) -> None:
        raise UserError("there is no incident #99")

    run_in_background(refuse, invocation(answers), object())
    assert answers == [":warning: there is no incident #99"]


def test_a_bug_in_a_handler_reaches_the_asker_as_an_apology_without_the_traceback():
    answers: list[str] = []

    def crash(who: Invocation, request: object) -> None:
        raise KeyError("secret-internal-detail")

    run_in_background(crash, invocation(answers), object())
    assert len(answers) == 1 and "internal error" in answers[0] and "secret-internal-detail" not in answers[0]
