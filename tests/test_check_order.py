"""The order findings report in comes from the check registry, not from a list kept beside it."""

from __future__ import annotations

from commands.checks.registry import CheckRegistry, check
from commands.findings import READ_PROBLEMS, Finding, Level, by_severity


def registry_of(*names: str) -> CheckRegistry:
    return CheckRegistry([check(name, kinds=(), summary=f"the {name} check")(lambda ctx: []) for name in names])


def warning(check_name: str, code: str = "MB9999") -> Finding:
    return Finding(check=check_name, code=code, level=Level.WARNING, message="m", origin="o")


def test_within_a_level_findings_follow_the_registrys_order_not_the_alphabet():
    registry = registry_of("zeta", "alpha")
    findings = [warning("alpha"), warning("zeta"), warning(READ_PROBLEMS)]

    ordered = by_severity(findings, registry.report_order())

    assert [f.check for f in ordered] == [READ_PROBLEMS, "zeta", "alpha"]


def test_errors_come_before_warnings_whatever_their_check():
    error = Finding(check="alpha", code="MB9998", level=Level.ERROR, message="m", origin="o")
    ordered = by_severity([warning("zeta"), error], registry_of("zeta", "alpha").report_order())
    assert ordered[0] is error


def test_without_an_order_a_diagnosis_keeps_the_registrys_order_within_a_level():
    diagnosis = by_severity([warning("alpha"), warning("zeta")], registry_of("zeta", "alpha").report_order())
    error = Finding(check="alpha", code="MB9998", level=Level.ERROR, message="m", origin="o")

    again = by_severity([*diagnosis, error])

    assert [f.check for f in again] == ["alpha", "zeta", "alpha"]
    assert again[0] is error


def test_the_markdown_table_lists_every_check_in_report_order():
    table = registry_of("zeta", "alpha").markdown_table().splitlines()
    assert table[2].startswith("| `zeta` | the zeta check |")
    assert table[3].startswith("| `alpha` | the alpha check |")


def test_without_an_order_one_checks_findings_are_still_sorted_by_code_and_origin():
    findings = [warning("zeta", "MB9003"), warning("zeta", "MB9001")]
    assert [f.code for f in by_severity(findings)] == ["MB9001", "MB9003"]
