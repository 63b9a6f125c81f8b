"""No false all-clear (issue 27): ✔ only when something was scanned and everything could be read, and a
mistyped namespace or sub-command is an error naming the closest ones that exist."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from commands import codes
from commands.coverage import coverage
from commands.report import diagnose_text
from commands.suggestions import closest, edit_distance, unknown_namespace

ROOT = Path(__file__).resolve().parents[1]
CHECKS = ("status", "proxy-status", "certs")


def sidecars(namespace: str, total: int):
    return codes.finding("MB1020", origin=f"Namespace {namespace}", namespace=namespace, sidecars=f"{total} sidecars",
                         ready=total, crashlooping=0, restarting=0, evidence={"total": total, "ready": total})


def proxies(total: int):
    return codes.finding("MB2000", origin="istiod /debug/syncz", synced=total, stale=0, error=0, not_sent=0,
                         total=total, istiods=1, evidence={"proxies": total, "synced": total})


def prometheus_missing():
    return codes.finding("MB6001", origin="telemetry", missing="failing edges and onsets")


def test_a_swapped_pair_of_letters_is_one_edit():
    assert edit_distance("prdo", "prod") == 1
    assert edit_distance("kitten", "sitting") == 3


@pytest.mark.parametrize("typed, names, expected", [
    ("prdo", ["prod", "payments", "istio-system"], ["prod"]),
    ("prod-eu", ["prod", "staging"], ["prod"]),
    ("diagnos", ["diagnose", "status", "certs"], ["diagnose"]),
    ("zzzz", ["prod", "staging"], []),
])
def test_suggestions_are_the_names_within_a_few_edits_or_sharing_a_prefix(typed, names, expected):
    assert closest(typed, names) == expected


def test_an_unknown_namespace_is_refused_with_the_closest_existing_one():
    assert unknown_namespace("prdo", ["prod", "istio-system"]) == \
        "no namespace `prdo` exists, so nothing was checked. Did you mean `prod`?"


def test_a_namespace_is_not_refused_when_no_namespace_could_be_listed():
    assert unknown_namespace("prod", []) is None


def test_all_clear_states_what_was_scanned():
    seen = coverage([sidecars("prod", 6), proxies(7)], scope="prod", checks=CHECKS)
    assert seen.all_clear
    assert seen.verdict() == "prod: 6 sidecars, 7 proxies checked (status, proxy-status, certs); nothing wrong"


def test_an_empty_namespace_states_its_zero_sidecars_rather_than_a_bare_tick():
    seen = coverage([], scope="prod", checks=("status",))
    assert seen.verdict() == "prod: 0 sidecars checked (status); nothing wrong"


def test_nothing_run_is_no_all_clear():
    seen = coverage([], scope="prod", checks=())
    assert not seen.all_clear
    assert seen.verdict() == "prod: no check ran, so nothing can be said about it"


def test_evidence_that_could_not_be_read_is_named_instead_of_a_tick():
    seen = coverage([sidecars("prod", 6), prometheus_missing()], scope="prod", checks=("status", "telemetry"))
    assert not seen.all_clear
    assert seen.verdict().endswith("nothing wrong in what was checked, but NOT checked: No Prometheus configured "
                                   "(MESHBOT_PROMETHEUS_URL): failing edges and onsets not checked")


def test_a_skipped_check_counts_nothing_and_says_it_was_skipped():
    skipped = codes.finding("MB0004", check="proxy-status", origin="check proxy-status", check_name="proxy-status",
                            reason="no running istiod pods")
    seen = coverage([sidecars("prod", 2), skipped], scope="prod", checks=("status", "proxy-status"))
    assert seen.scanned == ("2 sidecars",)
    assert "NOT checked: proxy-status skipped: no running istiod pods" in seen.verdict()


def test_the_cli_report_ticks_only_a_complete_scan_and_says_what_was_not_checked():
    complete = diagnose_text([sidecars("prod", 6), proxies(7)], title="t", scope="prod", checks=CHECKS)
    partial = diagnose_text([sidecars("prod", 6), prometheus_missing()], title="t", scope="prod", checks=CHECKS)
    assert complete.splitlines()[-1] == "\u2714 prod: 6 sidecars, 7 proxies checked (status, proxy-status, certs); " \
                                        "nothing wrong"
    assert partial.splitlines()[-1].startswith("\u26a0 prod:") and "No problems found" not in partial


MESH = """\
apiVersion: v1
kind: Namespace
metadata: {name: prod}
---
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: prod}
spec: {ports: [{port: 80, name: http}]}
"""


def test_the_cli_refuses_a_mistyped_namespace_with_a_suggestion(tmp_path):
    mesh = tmp_path / "mesh.yaml"
    mesh.write_text(MESH)
    result = subprocess.run([sys.executable, "-m", "bot.cli", "diagnose", "-f", str(mesh), "-n", "prdo", "all"],
                            capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 2
    assert result.stdout == ""
    assert "no namespace 'prdo' exists, so nothing was checked. Did you mean 'prod'?" in result.stderr
