"""``/mesh status|proxy-status|certs|envoy|analyze|diagnose``: run checks, report in a thread.

The "Running…" message is posted at once from the messenger pool; the
diagnosis itself runs on the worker pool and fills in that message's thread.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from bot.diagnosis import Diagnostician
from bot.server.metrics import Metrics
from bot.slack import blocks
from bot.slack.app import Handlers, Invocation, run_in_background
from bot.slack.client import Posted, SlackClient
from bot.slack.slash import DiagnoseRequest, SlashCommands, add_diagnoses
from commands.checks.registry import CheckRegistry
from commands.report import diagnose_text


@dataclass(frozen=True)
class DiagnosisCommands:
    diagnostician: Diagnostician
    slack: SlackClient
    metrics: Metrics
    workers: ThreadPoolExecutor
    """Slow work (diagnoses). Handlers themselves run on the messenger pool, which only talks to Slack,
    so the "Running…" message appears at once even when every worker is busy."""

    def start(self, who: Invocation, request: DiagnoseRequest) -> None:
        started = blocks.running(request.label, request.namespace, who.user)
        top = self.slack.post_message(who.channel, started.text, started.blocks)  # SlackError: the user is told
        self.workers.submit(run_in_background, self._diagnose_and_report, who, (request, top))

    def _diagnose_and_report(self, who: Invocation, job: tuple[DiagnoseRequest, Posted]) -> None:
        request, top = job
        slack, metrics = self.slack, self.metrics
        label, namespace = request.label, request.namespace
        result = self.diagnostician.run(request.checks, namespace)
        metrics.diagnosis_seconds.labels(check=label).observe(result.seconds)
        if result.error:
            problem = blocks.cluster_unavailable(result.error)
            slack.post_message(who.channel, problem.text, problem.blocks, thread_ts=top.ts)
            done = blocks.failed(label, namespace, who.user, result.error)
            slack.update_message(who.channel, top.ts, done.text, done.blocks)
            return
        title = f"{label} \u00b7 {namespace or 'all namespaces'}"
        report, hidden = blocks.findings_report(title, result.findings)
        slack.post_message(who.channel, report.text, report.blocks, thread_ts=top.ts)
        for finding in result.findings:
            metrics.findings_posted.labels(level=str(finding.level)).inc()
        if hidden:
            slack.upload_text(who.channel, top.ts, filename=f"meshbot-{label}-{namespace or 'all'}.txt",
                              title=f"Full report: {title} ({len(result.findings)} findings)",
                              content=diagnose_text(result.findings, title=title))
        done = blocks.outcome(label, namespace, who.user, result.findings, result.seconds)
        slack.update_message(who.channel, top.ts, done.text, done.blocks)


def register(commands: SlashCommands, handlers: Handlers, checks: CheckRegistry, *, diagnostician: Diagnostician,
             slack: SlackClient, metrics: Metrics, workers: ThreadPoolExecutor) -> None:
    add_diagnoses(commands, checks)
    handlers.on_request(DiagnoseRequest, DiagnosisCommands(diagnostician, slack, metrics, workers).start)
