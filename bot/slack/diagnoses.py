"""``/mesh status|proxy-status|certs|envoy|analyze|diagnose``: run checks, report in a thread.

The "Running…" message is posted at once from the messenger pool; the
diagnosis itself runs on the worker pool and fills in that message's thread.
While an incident about the same scope is open in the channel, the whole
exchange goes into that incident's thread instead (one conversation per
outage, issue 27): ``conversation`` finds it.  A namespace that does not
exist is refused before any of this, privately, by the registry
(``SlashCommands.refuse_unknown_namespaces``): no "Running…" for a typo.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from bot.diagnosis import DiagnosisResult, Diagnostician, queued_text
from bot.runtime.metrics import Metrics
from bot.slack import blocks
from bot.slack.app import Invocation, run_in_background
from bot.slack.client import Posted, SlackClient
from bot.slack.outbox import Outbox
from bot.slack.slash import DiagnoseRequest, SlashCommands, add_diagnoses
from commands.checks.registry import CheckRegistry
from commands.coverage import Coverage, coverage
from commands.findings import Finding
from commands.report import diagnose_text


class Thread(Protocol):
    """An open incident's thread (``bot.incidents.conversation.Conversation``)."""

    @property
    def incident_id(self) -> int: ...
    @property
    def thread_ts(self) -> str: ...
    @property
    def top_message(self) -> int: ...


ConversationFinder = Callable[[str, "str | None"], "Thread | None"]
"""(channel, namespace or None for the whole mesh) -> the open incident's thread a command about it answers in."""
ReportRenderer = Callable[[str, Sequence[Finding], Coverage], "tuple[blocks.Message, int]"]
"""(title, findings, coverage) -> (the thread reply, how many findings did not fit)."""


def findings_only(title: str, findings: Sequence[Finding], seen: Coverage) -> tuple[blocks.Message, int]:
    return blocks.findings_report(title, findings, seen=seen)


@dataclass(frozen=True)
class DiagnosisJob:
    request: DiagnoseRequest
    running: Posted
    """The "Running…" message, updated with the outcome."""
    thread: Thread | None
    """The open incident's thread it was posted in; None: its own top-level message."""


@dataclass(frozen=True)
class DiagnosisCommands:
    diagnostician: Diagnostician
    slack: SlackClient
    metrics: Metrics
    workers: ThreadPoolExecutor
    """Slow work (diagnoses). Handlers themselves run on the messenger pool, which only talks to Slack,
    so the "Running…" message appears at once even when every worker is busy."""
    outbox: Outbox | None = None
    """Where the findings are queued (durable: a Slack outage when they are ready delays them, loses nothing)."""
    conversation: ConversationFinder | None = None
    render: ReportRenderer = findings_only

    def start(self, who: Invocation, request: DiagnoseRequest) -> None:
        thread = self.conversation(who.channel, request.namespace) if self.conversation else None
        started = blocks.running(request.label, request.namespace, who.user)
        running = self.slack.post_message(who.channel, started.text, started.blocks,  # SlackError: the user is told
                                          thread_ts=thread.thread_ts if thread else None)
        if thread is not None:
            who.tell(f"Answering in the thread of incident #{thread.incident_id}, which is open about "
                     f"{blocks.scope(request.namespace)}: one conversation per outage.")
        job = DiagnosisJob(request, running, thread)
        thread_ts = thread.thread_ts if thread else running.ts
        # No worker is taken until the diagnosis's turn comes, and a request for one already running or queued
        # joins it: the report is written when the run ends, on the worker pool.
        diagnosis = self.diagnostician.submit(  # the wait for a turn is said in the thread (issue 26)
            request.checks, request.namespace, workers=self.workers,
            on_queued=lambda ahead: self.slack.post_message(who.channel, queued_text(ahead), thread_ts=thread_ts))
        diagnosis.add_done_callback(lambda done: self._report_later(who, job, done))

    def _report_later(self, who: Invocation, job: DiagnosisJob, diagnosis: Future[DiagnosisResult]) -> None:
        try:
            self.workers.submit(run_in_background, self._report, who, (job, diagnosis))
        except RuntimeError:
            # The pool takes nothing new: meshbot is stopping, and this thread ended the diagnosis while the pool
            # drains.  The report is written here, into the outbox, which sends it now or after the next start.
            run_in_background(self._report, who, (job, diagnosis))

    def _report(self, who: Invocation, ended: tuple[DiagnosisJob, Future[DiagnosisResult]]) -> None:
        job, diagnosis = ended
        request, top = job.request, job.running
        slack, metrics = self.slack, self.metrics
        label, namespace = request.label, request.namespace
        thread_ts = job.thread.thread_ts if job.thread else top.ts
        result = diagnosis.result()
        metrics.diagnosis_seconds.labels(check=label).observe(result.seconds)
        if result.error:
            problem = blocks.cluster_unavailable(result.error)
            slack.post_message(who.channel, problem.text, problem.blocks, thread_ts=thread_ts)
            done = blocks.failed(label, namespace, who.user, result.error)
            slack.update_message(who.channel, top.ts, done.text, done.blocks)
            return
        title = f"{label} \u00b7 {namespace or 'all namespaces'}"
        seen = coverage(result.findings, scope=namespace or "all namespaces",
                        checks=self.diagnostician.checks.resolve(request.checks))
        report, hidden = self.render(title, result.findings, seen)
        for finding in result.findings:
            metrics.findings_posted.labels(level=str(finding.level)).inc()
        filename = f"meshbot-{label}-{namespace or 'all'}.txt"
        full = (filename, f"Full report: {title} ({len(result.findings)} findings)",
                diagnose_text(result.findings, title=title, scope=seen.scope, checks=seen.checks))
        done = blocks.outcome(label, namespace, who.user, result.findings, result.seconds, seen)
        if self.outbox is not None:
            self._queue_report(self.outbox, who, job, report, full if hidden else None, done)
            return
        slack.post_message(who.channel, report.text, report.blocks, thread_ts=thread_ts)
        if hidden:
            slack.upload_text(who.channel, thread_ts, filename=full[0], title=full[1], content=full[2])
        slack.update_message(who.channel, top.ts, done.text, done.blocks)

    def _queue_report(self, outbox: Outbox, who: Invocation, job: DiagnosisJob, report: blocks.Message,
                      full: tuple[str, str, str] | None, done: blocks.Message) -> None:
        """The findings, the full report and the outcome through the outbox, in one transaction."""
        incident_id = job.thread.incident_id if job.thread else None
        with outbox.database.transaction() as db:
            running = outbox.adopt(db, channel=who.channel, ts=job.running.ts)
            thread_of = job.thread.top_message if job.thread else running
            outbox.post(db, incident_id=incident_id, channel=who.channel, message=report, thread_of=thread_of)
            if full:
                filename, title, content = full
                outbox.upload(db, incident_id=incident_id, channel=who.channel, thread_of=thread_of,
                              filename=filename, title=title, content=content)
            outbox.update(db, incident_id=incident_id, channel=who.channel, message=done, of=running)
        outbox.wake()


def register(commands: SlashCommands, checks: CheckRegistry, *, diagnostician: Diagnostician, slack: SlackClient,
             metrics: Metrics, workers: ThreadPoolExecutor, outbox: Outbox | None = None,
             conversation: ConversationFinder | None = None, render: ReportRenderer = findings_only) -> None:
    add_diagnoses(commands, checks, DiagnosisCommands(diagnostician, slack, metrics, workers, outbox, conversation,
                                                      render).start)
