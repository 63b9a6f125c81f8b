"""Every approval answer is worded exactly as docs/slack-app.md's table says: one test per row (issue 27).

The words come from the pure rule (``bot.approvals.rule.decide``) and the desk's ``click_answer``, the one
function both a button and ``/mesh approve N`` answer through.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from bot.approvals.desk import click_answer
from bot.approvals.rule import Ballot, Click, RequestState, Vote, decide

DOCS = Path(__file__).resolve().parents[1] / "docs" / "slack-app.md"
START, END = "<!-- approval-words:start -->", "<!-- approval-words:end -->"
NOW = datetime(2026, 11, 24, 3, 0, tzinfo=timezone.utc)
ACTION = "permissive-mtls prod"


def ballot(state: RequestState = RequestState.PENDING, approvals: tuple[str, ...] = (), **kwargs) -> Ballot:
    return Ballot(requester="UALICE", state=state, required=2, expires_at=NOW + timedelta(minutes=30),
                  approvals=approvals, **kwargs)


def click(user: str, vote: Vote = Vote.APPROVE, *, approver: bool | None = True, at: datetime = NOW) -> Click:
    return Click(user, vote, at, approver)


CASES = {
    "the requester approves her own request": (ballot(), click("UALICE")),
    "the requester rejects her own request": (ballot(), click("UALICE", Vote.REJECT)),
    "an approver approves, more approvals needed": (ballot(), click("UBOB")),
    "the same approver approves again": (ballot(approvals=("UBOB",)), click("UBOB")),
    "the last approval needed": (ballot(approvals=("UBOB",)), click("UCAROL")),
    "an approver rejects": (ballot(approvals=("UBOB",)), click("UCAROL", Vote.REJECT)),
    "someone outside MESHBOT_APPROVERS": (ballot(), click("UMALLORY", approver=False)),
    "a vote after a rejection": (ballot(RequestState.REJECTED, decided_by="UCAROL"), click("UDAVE")),
    "a vote after it expired": (ballot(), click("UBOB", at=NOW + timedelta(hours=1))),
    "a vote while it runs": (ballot(RequestState.EXECUTING, approvals=("UBOB", "UCAROL")), click("UDAVE")),
    "a vote after it ran": (ballot(RequestState.SUCCEEDED, approvals=("UBOB", "UCAROL")), click("UDAVE")),
}


def documented() -> dict[str, str]:
    text = DOCS.read_text(encoding="utf-8")
    table = text[text.index(START) + len(START):text.index(END)].strip().splitlines()[2:]
    rows = {}
    for row in table:
        case, answer = (cell.strip() for cell in row.strip("|").split(" | ", 1))
        rows[case] = answer.rstrip(" |")
    return rows


def test_the_table_has_a_row_for_every_case_and_no_other():
    assert sorted(documented()) == sorted(CASES)


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_answer_is_worded_as_documented(case):
    state, pressed = CASES[case]
    answer = click_answer(decide(state, pressed), 7, ACTION)
    # The table names the request N, the action ACTION and people by name; Slack gets ids and mentions.
    expected = documented()[case].replace("#N", "#7").replace("`ACTION`", f"`{ACTION}`").replace("@carol",
                                                                                                "<@UCAROL>")
    assert answer == expected


def test_the_requester_is_never_counted_and_a_second_click_is_never_the_last_approval():
    own = click_answer(decide(ballot(), click("UALICE")), 7, ACTION)
    twice = click_answer(decide(ballot(approvals=("UBOB",)), click("UBOB")), 7, ACTION)
    assert "1 of 2" not in own and "does not count" in own
    assert "running now" not in twice and "last" not in twice
