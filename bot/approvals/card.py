"""The parts of an approval card beside the status and the buttons: what changes (never shortened), blast
radius, preconditions and their state, policies a bypass switches off, whether a restart alone helps, the undo
and its risk, what a rollback breaks while the cause remains, and the effect seen after execution.  Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bot.approvals.store import ApprovalRequest
from bot.slack.blocks import MAX_SECTION_TEXT, Block, escape, section
from commands.actions.dependencies import Precondition, fix_first_text, preconditions_from, unmet
from commands.actions.plan import changed_lines
from commands.actions.review import Review

MAX_EFFECT_LINES = 8
"""Per look on the card; the thread note has them all."""
OUTCOME_LINE = {
    "seen": ":white_check_mark: *Effect: verified*",
    "partly seen": ":large_yellow_circle: *Effect: partly seen*",
    "not seen": ":x: *Effect: not seen*",
    "not measured": ":grey_question: *Effect: not measured*",
}


def _sections(title: str, lines: Sequence[str]) -> list[Block]:
    """``title`` and ``lines`` in as many sections as they need: nothing is clipped away."""
    out: list[Block] = []
    text = title
    for line in lines:
        if len(text) + 1 + len(line) > MAX_SECTION_TEXT - 10:
            out.append(section(text))
            text = ""
        text = f"{text}\n{line}" if text else line
    if text:
        out.append(section(text))
    return out


def what_changes(request: ApprovalRequest) -> list[Block]:
    """Every value each change sets: modes, TLS settings, labels, annotations, resources."""
    lines: list[str] = []
    for objects, values in changed_lines(request.plan):
        lines.append(f"\u2022 {escape(objects)}")
        lines += [f"    `{escape(v)}`" for v in values] or ["    (no field values: the object itself)"]
    return _sections("*What changes:*", lines) if lines else []


def plan_preconditions(request: ApprovalRequest) -> tuple[Precondition, ...]:
    return preconditions_from(request.plan.extra.get("preconditions"))


def not_yet_line(request: ApprovalRequest) -> str | None:
    """The unmet precondition's own fix, said before anyone approves."""
    failing = unmet(plan_preconditions(request))
    return f":warning: *Not yet:* {escape(fix_first_text(failing[0]))}" if failing else None


def review_of(request: ApprovalRequest) -> Review:
    return Review.from_dict(request.plan.extra.get("review"))


def review_blocks(request: ApprovalRequest) -> list[Block]:
    plan = request.plan
    card = review_of(request)
    parts: list[Block] = []
    if card.blast_radius:
        parts += _sections("*Blast radius:*", [f"\u2022 {escape(line)}" for line in card.blast_radius])
    checked = plan_preconditions(request)
    if checked:
        parts += _sections("*Preconditions* (checked when planned, and again before it runs):",
                           [f"\u2022 {escape(p.line)}" for p in checked])
    elif "needs" in plan.extra and request.rollback_of is None:
        parts.append(section("*Preconditions:* not checked \u2014 no diagnosis is wired to this desk"))
    if card.policies_off:
        parts += _sections("*Bypass switches off* (a pod without a sidecar enforces no AuthorizationPolicy):",
                           [f"\u2022 {escape(p)}" for p in card.policies_off])
    elif plan.action.startswith("bypass"):
        parts.append(section("*Bypass switches off:* no AuthorizationPolicy selects these workloads"))
    if card.restart_judgement:
        parts.append(section(f"*Restart alone:* {escape(card.restart_judgement)}"))
    risk = rollback_risk(request)
    if risk:
        parts += _sections("*If you roll back while the cause is still there:*", risk)
    if card.undo:
        parts.append(section(f"*Undo:* {escape(card.undo)}" + (f"\n*Risk:* {escape(card.undo_risk)}"
                                                                if card.undo_risk else "")))
    return parts


def rollback_risk(request: ApprovalRequest) -> list[str]:
    """A rollback card's judgement: each dependency of the original cause, from a diagnosis run just now."""
    if request.rollback_of is None or "rollback_risk" not in request.plan.extra:
        return []
    checked = preconditions_from(request.plan.extra.get("rollback_risk"))
    failing = unmet(checked)
    if not failing:
        return ["\u2022 Nothing a fresh diagnosis sees would break it again: "
                + ", ".join(escape(p.line) for p in checked) if checked else "\u2022 Nothing was checked."]
    lines = [f"\u2022 {escape(p.line)}" for p in failing]
    lines.append("\u2022 Rolling back now brings the failure back; *Roll back later* leaves the change in place and "
                 "records the choice (the Rollback button stays on the incident).")
    return lines


def effect_lines(verification: Mapping[str, Any] | None) -> list[str]:
    """The first look after execution and the follow-up, as the thread reads them."""
    if not verification:
        return []
    lines: list[str] = []
    for key, when in (("effect", "right after"), ("follow_up", "a few minutes later")):
        look = verification.get(key)
        if not look:
            continue
        lines.append(f"{OUTCOME_LINE.get(look.get('outcome'), '*Effect:*')} ({when})")
        lines += [f"    {escape(line)}" for line in shortened_effect_lines(look.get("lines") or [])]
    if verification.get("effect") and not verification.get("follow_up") and verification.get("follow_up_at"):
        lines.append("_A second look follows a few minutes after execution._")
    return lines


def shortened_effect_lines(lines: list[str], keep: int = MAX_EFFECT_LINES) -> list[str]:
    """The first edges and the last line, which says where the traffic was measured (Prometheus or Envoy)."""
    if len(lines) <= keep:
        return lines
    return [*lines[:keep - 2], f"\u2026 and {len(lines) - keep + 1} more", lines[-1]]
