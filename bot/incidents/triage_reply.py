"""An incident's first thread reply: the triage, short by design. Pure.

The counts, the probable causes in ``commands.triage.ORDERING`` with what each explains and its first step,
then one line pointing at the full report (attached, every finding once).  Issue 27: the reply had grown to
45 lines with each cause two or three times; people read the first screen.
"""

from __future__ import annotations

from collections.abc import Sequence

from slack_sdk.models.blocks import Block

from bot.slack.blocks import (
    MAX_BLOCKS,
    Message,
    clip,
    context,
    counts_text,
    escape,
    header,
    message_of,
    plain_counts,
    plural,
    section,
    verdict_text,
)
from commands.coverage import Coverage
from commands.findings import Finding, Remediation
from commands.report import split_summary
from commands.triage import ORDERING, Cause, Scoped, scoped, triage

MAX_CAUSES_SHOWN = 3
MAX_STEP_TEXT = 240
"""A first step longer than this is cut in the reply (the attached report has it whole): one line each."""
MAX_TRIAGE_LINES = 20
"""The first thread reply people read at 3 AM: causes with counts, then the full report as an attachment."""


def cause_text(number: int, cause: Cause, waits_on: Sequence[int] = ()) -> str:
    """One probable cause in two lines: what it is and what it explains, then its first step — or the causes
    it waits on, whose fix comes first (``commands.preconditions``: a gated step is no fix of its own)."""
    finding = cause.finding
    lines = [f"*{number}. {escape(cause.title)}* \u2014 {escape(cause.explains_line)} "
             f"({cause.confidence} confidence \u00b7 `{finding.code}` {escape(finding.origin)})"]
    step = cause.first_step
    if waits_on:
        lines.append(f"    _First step: after {', '.join(f'#{n}' for n in waits_on)} (it cannot work before)_")
    elif step:
        lines.append(f"    *First step:* {_one_line(step)}")
    return "\n".join(lines)


def _one_line(step: Remediation) -> str:
    how = f"`/mesh {escape(step.action)}` (after approval) \u2014 " if step.action else \
        f"`{escape(step.command)}` \u2014 " if step.command else ""
    return how + escape(clip(step.summary, MAX_STEP_TEXT))


def triage_report(title: str, view: Scoped, *, limit: int = MAX_CAUSES_SHOWN,
                  extra_blocks: Sequence[Block] = (), seen: Coverage | None = None) -> tuple[Message, int]:
    """The incident's first thread reply, short by design (at most ``MAX_TRIAGE_LINES``): the counts, the
    probable causes in ``ORDERING`` with what each explains and its first step, then one line pointing at the
    full report.  Every finding is in the attached report, once; none is repeated here.  Returns (message, how
    many findings are only in the report), so the caller attaches it."""
    summaries, ordered = split_summary(view.findings)
    # ✔ only with ``seen`` saying what was scanned: an empty list alone is no all-clear (issue 27).
    blocks: list[Block] = [header(title)]
    counts = counts_text(ordered) if ordered else ""
    if summaries:
        counts += (" \u00b7 " if counts else "") + "; ".join(escape(f.message) for f in summaries)
    if counts:
        blocks.append(section(counts))
    if seen is not None and (not seen.problems or seen.not_checked):
        blocks.append(section(verdict_text(seen)))
    elif not ordered:
        blocks.append(section("No findings (what was scanned is not known, so this is no all-clear)."))
    # A lone error (a gateway certificate 5 days from expiry) is not a probable cause of an outage that has a
    # chain of causes; it stays in the report.  With no chain, the lone errors are all there is to show.
    chains = [c for c in view.causes if c.is_chain]
    shown = (chains or list(view.causes))[:limit]
    if shown:
        number_of = {c.key: n for n, c in enumerate(shown, start=1)}
        lines = [f"*Probable causes*, {ORDERING}:"]
        for number, cause in enumerate(shown, start=1):
            waits_on = [number_of[c.key] for c in shown if cause.key in c.unblocks and c.key != cause.key]
            lines.append(cause_text(number, cause, waits_on))
        blocks.append(section("\n".join(lines)))
    in_causes = {id(c.finding) for c in shown}
    hidden = len([f for f in ordered if id(f) not in in_causes])
    more = [f"{plural(hidden, 'other finding')} here"] if hidden else []
    if len(view.causes) > len(shown):
        more.insert(0, plural(len(view.causes) - len(shown), "other error") + " not explaining others")
    if view.elsewhere:
        where = ", ".join(f"`{escape(ns)}`" for ns in view.elsewhere_namespaces)
        more.append(f"{plural(len(view.elsewhere), 'finding')} elsewhere" + (f" ({where})" if where else ""))
    if more:
        blocks.append(context(" \u00b7 ".join(more) + ": the full report is attached below as a file, each finding "
                              "once."))
    blocks.extend(extra_blocks)
    top = view.top
    text = (f"{title}: " + (f"probable cause: {top.title} \u2014 {top.explains_line}. " if top else "")
            + plain_counts(ordered))
    return message_of(text, blocks[:MAX_BLOCKS]), hidden


def command_triage(title: str, findings: Sequence[Finding], seen: Coverage) -> tuple[Message, int]:
    """``/mesh diagnose``'s thread reply: the same triage as an alert's thread, over everything it scanned."""
    summaries, rest = split_summary(findings)
    view = scoped(triage(rest), ())
    return triage_report(title, Scoped(view.causes, (*summaries, *view.findings), view.elsewhere), seen=seen)
