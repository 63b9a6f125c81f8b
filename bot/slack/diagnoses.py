"""``/mesh status|proxy-status|certs|envoy|analyze|diagnose``: run checks, report in a thread.

The "Running…" message is posted at once from the messenger pool; the
diagnosis itself runs on the worker pool and fills in that message's thread.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from bot.diagnosis import Diagnostician, queued_text
from bot.runtime.metrics import Metrics
from bot.slack import blocks
from bot.slack.app import Invocation, run_in_background
from bot.slack.client import Posted, SlackClient
from bot.slack.outbox import Outbox
from bot.slack.slash import DiagnoseRequest, SlashCommands, add_diagnoses
from commands.checks.registry import CheckRegistry
from commands.coverage import coverage
from commands.errors import MeshbotError
from commands.report import diagnose_text
from commands.suggestions import unknown_namespace


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

    def start(self, who: Invocation, request: DiagnoseRequest) -> None:
        started = blocks.running(request.label, request.namespace, who.user)
        top = self.slack.post_message(who.channel, started.text, started.blocks)  # SlackError: the user is told
        self.workers.submit(run_in_background, self._diagnose_and_report, who, (request, top))

    def _diagnose_and_report(self, who: Invocation, job: tuple[DiagnoseRequest, Posted]) -> None:
        request, top = job
        slack, metrics = self.slack, self.metrics
        label, namespace = request.label, request.namespace
        refusal = self._unknown_namespace(namespace)
        if refusal:
            done = blocks.refused(label, namespace, who.user, refusal)
            slack.update_message(who.channel, top.ts, done.text, done.blocks)
            return
        result = self.diagnostician.run(
            request.checks, namespace,
            on_queued=lambda ahead: slack.post_message(who.channel, queued_text(ahead), thread_ts=top.ts))
        metrics.diagnosis_seconds.labels(check=label).observe(result.seconds)
        if result.error:
            problem = blocks.cluster_unavailable(result.error)
            slack.post_message(who.channel, problem.text, problem.blocks, thread_ts=top.ts)
            done = blocks.failed(label, namespace, who.user, result.error)
            slack.update_message(who.channel, top.ts, done.text, done.blocks)
            return
        title = f"{label} \u00b7 {namespace or 'all namespaces'}"
        seen = coverage(result.findings, scope=namespace or "all namespaces",
                        checks=self.diagnostician.checks.resolve(request.checks))
        report, hidden = blocks.findings_report(title, result.findings, seen=seen)
        for finding in result.findings:
            metrics.findings_posted.labels(level=str(finding.level)).inc()
        if self.outbox is not None:
            full = (f"meshbot-{label}-{namespace or 'all'}.txt", f"Full report: {title} ({len(result.findings)} findings)",
                    diagnose_text(result.findings, title=title)) if hidden else None
            self._queue_report(who, top, report, full,
                               blocks.outcome(label, namespace, who.user, result.findings, result.seconds, seen))
            return
        slack.post_message(who.channel, report.text, report.blocks, thread_ts=top.ts)
        if hidden:
            slack.upload_text(who.channel, top.ts, filename=f"meshbot-{label}-{namespace or 'all'}.txt",
                              title=f"Full report: {title} ({len(result.findings)} findings)",
                              content=diagnose_text(result.findings, title=title))
        done = blocks.outcome(label, namespace, who.user, result.findings, result.seconds, seen)
        slack.update_message(who.channel, top.ts, done.text, done.blocks)

    def _unknown_namespace(self, namespace: str | None) -> str | None:
        """Why ``namespace`` cannot be diagnosed (it does not exist), with the closest names; None when it exists
        or when the namespaces cannot be listed (the diagnosis then says what it could not read)."""
        if namespace is None:
            return None
        try:
            snapshot = self.diagnostician.cluster.source().snapshot({"Namespace"})
        except MeshbotError:
            return None
        if not snapshot.can_trust_absence("Namespace"):
            return None
        return unknown_namespace(namespace, snapshot.namespaces())

    def _queue_report(self, who: Invocation, top: Posted, report: blocks.Message,
                      full: tuple[str, str, str] | None, done: blocks.Message) -> None:
        """The findings, the full report and the outcome through the outbox, in one transaction."""
        outbox = self.outbox
        with outbox.database.transaction() as db:
            running = outbox.adopt(db, channel=who.channel, ts=top.ts)
            outbox.post(db, incident_id=None, channel=who.channel, message=report, thread_of=running)
            if full:
                filename, title, content = full
                outbox.upload(db, incident_id=None, channel=who.channel, thread_of=running, filename=filename,
                              title=title, content=content)
            outbox.update(db, incident_id=None, channel=who.channel, message=done, of=running)
        outbox.wake()


def register(commands: SlashCommands, checks: CheckRegistry, *, diagnostician: Diagnostician, slack: SlackClient,
             metrics: Metrics, workers: ThreadPoolExecutor, outbox: Outbox | None = None) -> None:
    add_diagnoses(commands, checks, DiagnosisCommands(diagnostician, slack, metrics, workers, outbox).start)
