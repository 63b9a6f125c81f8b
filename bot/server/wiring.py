"""The one place meshbot is put together: ``build(settings)`` constructs everything in dependency order.

Read it top to bottom: settings, then the check registry and playbooks, then
storage and Slack clients, the cluster, the incident log, approvals, incidents,
reminders, and finally the ``/mesh`` commands and the HTTP routes that reach
them.  Every object gets its collaborators in its constructor; nothing is
registered by importing a module, and nothing is filled in afterwards.
"""

from __future__ import annotations

import dataclasses
import logging
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import sqlite_utils

from bot.approvals import blocks as approval_blocks
from bot.approvals import commands as approval_commands
from bot.approvals.desk import ApprovalDesk, ApprovalPolicy
from bot.approvals.inspection import MeshInspector, uncached_diagnosis
from bot.cluster import ClusterAccess
from bot.diagnosis import Diagnostician, Runner
from bot.incidents import blocks as incident_blocks
from bot.incidents import commands as incident_commands
from bot.incidents import conversation, triage_reply
from bot.incidents.anchors import LeaseAnchorStore, default_anchor_stores
from bot.incidents.audit import load_audit_key
from bot.incidents.conversation import Conversations
from bot.incidents.delivery import IncidentDeliveries
from bot.incidents.flow import IncidentFlow
from bot.incidents.intake import alertmanager_route
from bot.incidents.log import IncidentLog
from bot.incidents.playbook_loader import DEFAULT_PLAYBOOKS_DIR, load_playbooks
from bot.incidents.playbooks import PlaybookError, PlaybookSet, SuggestedRemediation
from bot.incidents.records import Incident
from bot.reminders import commands as reminder_commands
from bot.reminders.scheduler import CertificateScheduler, SchedulerCollector
from bot.reminders.service import LeaseLedger, ReminderService
from bot.runtime.metrics import Metrics
from bot.runtime.priority import Answering, YieldingPool
from bot.server.http import SLACK_CHECK_TIMEOUT, Readiness, SlackStatus, WebApp
from bot.server.meshbot import Meshbot
from bot.server.schema import open_database, open_intake_for
from bot.server.services import Services
from bot.settings import Settings, SettingsError
from bot.slack import diagnoses as diagnosis_commands
from bot.slack.app import Buttons, Pools, build_bolt_app
from bot.slack.blocks import Message, escape
from bot.slack.client import SlackClient, SlackConnections, build_web_client
from bot.slack.groups import GroupDirectory
from bot.slack.ingress import WINDOW_SECONDS, SlackRequestGate
from bot.slack.outbox import Outbox
from bot.slack.replays import DeliveryLedger
from bot.slack.roles import RoleCheck, Roles
from bot.slack.slash import RefusedCommand, SlashCommands
from bot.storage.database import Database
from bot.timeline import commands as timeline_commands
from bot.timeline.reader import TimelineReader, prometheus_from
from commands.catalog import default_checks
from commands.checks.registry import CheckRegistry
from commands.clients.lease import LeaderElector
from commands.cluster.endpoints import EndpointResolver

log = logging.getLogger(__name__)

MESSENGER_THREADS = 4
APPROVAL_THREADS = 4
"""The approvals' own pool per replica: asks (a precondition diagnosis, the plan, a dry run) and executions (a few
Kubernetes writes and a verification), never queued behind incident diagnoses on ``workers``."""
APPROVAL_DIAGNOSES = 2
"""Precondition diagnoses running at once for asks and executions, on a queue of their own beside the incidents'."""


def build(settings: Settings, *, runner: Runner | None = None,
          clock: Callable[[], datetime] | None = None,
          endpoints: Callable[[], EndpointResolver] | None = None,
          timeline_captures: Path | None = None) -> Meshbot:
    """Wire the bot from settings; raises SettingsError for what ``serve`` cannot run without.

    ``runner`` replaces how a diagnosis is computed (the Slack benchmark pads it to a fixed duration);
    ``clock`` what incidents are timed by (default: the scenario's moving clock, or the wall clock);
    ``endpoints`` where verification by effect reads istiod and Envoy (default: the cluster's, as checks do);
    ``timeline_captures`` captured timeline answers read instead of the cluster and Prometheus (the demo's).
    """
    require_settings(settings)
    checks = default_checks()
    playbooks = _load_playbooks(settings, checks)
    metrics = Metrics()

    connections = SlackConnections()  # kept alive per thread, shared by the three clients below, closed at stop
    web_client = build_web_client(settings.slack_bot_token, settings.slack_api_url, connections=connections)
    slack = SlackClient(web_client, on_error=metrics.slack_error)
    # The outbox does its own backoff per channel, so its client must not sleep on retries itself.
    outbox_slack = SlackClient(build_web_client(settings.slack_bot_token, settings.slack_api_url, max_retries=0,
                                                connections=connections),
                               on_error=metrics.slack_error)
    database = open_database(settings.db_path, url=settings.database_url, password=settings.database_password)
    intake = open_intake_for(database)
    cluster = ClusterAccess(settings)
    diagnostician = Diagnostician(cluster, checks, runner=runner, max_running=settings.max_diagnoses)
    clock = clock or cluster.incident_clock()
    timeline = TimelineReader(settings, cluster, clock, captures=timeline_captures)
    # Answers first: while Slack waits for an ack from the HTTP server, work started behind the acks waits
    # for a quiet moment, at most MESHBOT_ANSWERS_FIRST_SECONDS (bot.runtime.priority says why and what it costs).
    # The approval pool below does not wait: an approved action is the one thing an on-call engineer is waiting for.
    answering = Answering(settings.answers_first_seconds, on_wait=metrics.background_wait_seconds.observe)
    workers = YieldingPool(answering, settings.workers, "work")
    messengers = YieldingPool(answering, MESSENGER_THREADS, "messenger")

    elector = _elector(settings, cluster)
    incidents = IncidentLog(database, key=load_audit_key(settings.audit_key, settings.db_path),
                            anchor_stores=_audit_anchors(settings, elector), clock=clock)
    outbox = Outbox(database, outbox_slack, metrics, record=IncidentDeliveries(incidents, audit_channel=settings.audit_channel),
                    batch_interval=settings.thread_batch_seconds, before_pass=answering.wait_for_quiet)
    incidents.on_alarm = _audit_alarm(metrics, outbox, settings.channel)
    # One answer per user group for roles and votes alike, failing closed when it expires and Slack cannot answer.
    groups = GroupDirectory(slack.usergroup_members)
    approvals: ApprovalDesk | None = None  # a captured scenario has no cluster to act on
    if not settings.scenario:
        # Precondition diagnoses take turns apart from the incidents' (the same runner), so a storm cannot hold them.
        preconditions = Diagnostician(cluster, checks, runner=runner, max_running=APPROVAL_DIAGNOSES)
        approvals = ApprovalDesk(database=database, incidents=incidents, outbox=outbox, slack=slack, groups=groups,
                                 policy=approval_policy(settings), kube=cluster.client,
                                 # Asks and executions on threads of their own: a diagnosis storm on ``workers`` once
                                 # held an approved action for 104 s after its quorum, and asks behind it.
                                 workers=ThreadPoolExecutor(max_workers=APPROVAL_THREADS,
                                                            thread_name_prefix="approval"),
                                 execution_lease=timedelta(seconds=settings.execution_lease_seconds),
                                 inspector=MeshInspector(diagnose=preconditions.run,
                                                         endpoints=endpoints or cluster.endpoints,
                                                         source=cluster.source,
                                                         istio_namespace=settings.istio_namespace, clock=clock,
                                                         # the check right before a write reads nothing reused;
                                                         # a given runner (the demo's reads its cluster directly)
                                                         # decides how every diagnosis reads, this one too
                                                         diagnose_fresh=None if runner else uncached_diagnosis(
                                                             cluster, checks),
                                                         prometheus=lambda: prometheus_from(settings)))
    flow = IncidentFlow(database=database, incidents=incidents, outbox=outbox, playbooks=playbooks,
                        diagnostician=diagnostician, workers=workers, channel=settings.channel, metrics=metrics,
                        render_suggestions=_suggestion_buttons if approvals else _suggestion_text, clock=clock,
                        timeline=timeline, rollup_per_minute=settings.rollup_per_minute, intake=intake)
    reminders, scheduler = _reminders(settings, database, cluster, outbox, incidents, flow, elector)

    # Each sub-command and button is registered by its feature in one call (parser, handler, permission, pool).
    commands, buttons = SlashCommands(), Buttons()
    # While an incident about the same scope is open in the channel, commands answer in its thread (issue 27).
    conversations = Conversations(incidents, outbox, namespaces=conversation.cluster_namespaces(cluster.source))
    conversation.register(buttons, conversations)  # the answer to "attach to #1?"
    diagnosis_commands.register(commands, checks, diagnostician=diagnostician, slack=slack, metrics=metrics,
                                workers=workers, outbox=outbox, conversation=conversations,
                                render=triage_reply.command_triage)
    incident_commands.register(commands, flow)
    approval_commands.register(commands, buttons, approvals, istio_namespace=settings.istio_namespace,
                               conversation=conversations)
    reminder_commands.register(commands, reminders)
    timeline_commands.register(commands, timeline, slack=slack, outbox=outbox)
    commands.audit_refused(_refused_command_recorder(incidents))
    # A typo'd namespace is answered to its author alone, before a handler posts in the channel (issue 27); the
    # Namespace list is watched after its first read (bot.cluster.ClusterView), so checking costs no API call.
    commands.refuse_unknown_namespaces(conversation.cluster_namespaces(cluster.source))
    roles = RoleCheck(Roles.from_settings(settings), groups)
    bolt = build_bolt_app(settings, web_client, Pools(messengers=messengers, workers=workers), commands, buttons,
                          roles)

    # Readiness asks Slack in the background, with a short timeout and no retries of its own.
    slack_status = SlackStatus(SlackClient(build_web_client(settings.slack_bot_token, settings.slack_api_url,
                                                            max_retries=0, timeout=SLACK_CHECK_TIMEOUT,
                                                            connections=connections)))
    # Replays and Slack's retries are remembered in the database every replica shares (and across restarts).
    gate = SlackRequestGate(settings.slack_signing_secret, replays=DeliveryLedger(intake, WINDOW_SECONDS)) \
        if settings.slack_signing_secret else None
    # Scheduled work (Lease, last and next scan) is reported in /readyz's body and on /metrics; it never
    # gates readiness (a follower replica is healthy).
    reporters = [scheduler.describe] if scheduler else []
    if scheduler:
        metrics.registry.register(SchedulerCollector(scheduler))
    web = WebApp(bolt, metrics, Readiness(database, slack_status, reporters), gate=gate, answering=answering)
    web.add_route("POST", "/alertmanager", alertmanager_route(flow, settings.alertmanager_token, metrics))

    services = Services(settings=settings, metrics=metrics, checks=checks, database=database, intake=intake,
                        slack=slack,
                        cluster=cluster, diagnostician=diagnostician, workers=workers, messengers=messengers,
                        incidents=incidents, outbox=outbox, incident_flow=flow, approvals=approvals,
                        reminders=reminders, scheduler=scheduler, slash=commands,
                        slack_connections=connections)
    return Meshbot(services=services, web=web)


def _elector(settings: Settings, cluster: ClusterAccess) -> LeaderElector | None:
    if not settings.leader_election:
        return None
    return LeaderElector(cluster.client(), settings.lease_namespace, settings.pod_name or socket.gethostname())


def _audit_anchors(settings: Settings, elector: LeaderElector | None) -> tuple:
    """Where the audit log's head is kept outside the database: a file next to it, and the Lease when there is one."""
    stores = default_anchor_stores(settings.db_path)
    return stores + (LeaseAnchorStore(elector),) if elector else stores


def require_settings(settings: Settings) -> None:
    settings.require("slack_bot_token")
    if not settings.slack_app_token:
        settings.require("slack_signing_secret")
    if settings.alertmanager_token:
        settings.require("channel")
    if settings.database_url and not settings.audit_key:
        # Every replica signs the one shared chain: a key generated next to MESHBOT_DB would differ per pod.
        raise SettingsError("MESHBOT_DATABASE_URL needs MESHBOT_AUDIT_KEY (or MESHBOT_AUDIT_KEY_FILE) from a Secret "
                            "shared by every replica")


def _audit_alarm(metrics: Metrics, outbox: Outbox, channel: str | None) -> Callable[[sqlite_utils.Database, str],
                                                                                   None]:
    """An audit alarm is counted and said in MESHBOT_CHANNEL (in the transaction that records it)."""
    def raise_alarm(db: sqlite_utils.Database, message: str) -> None:
        metrics.audit_alarms.inc()
        if channel:
            outbox.post(db, incident_id=None, channel=channel,
                        message=Message(f":rotating_light: Audit alarm: {escape(message)}"))
    return raise_alarm


def _refused_command_recorder(incidents: IncidentLog) -> RefusedCommand:
    """Refused commands go to the incident log like refused clicks (on the incident's timeline when they name one)."""
    def record(user: str, channel: str, request: object, reason: str) -> None:
        fields = {}
        if dataclasses.is_dataclass(request) and not isinstance(request, type):  # an instance, not its class
            fields = dataclasses.asdict(request)
        incidents.record_refused_command(user, channel, type(request).__name__,
                                         {k: str(v)[:200] for k, v in fields.items()}, reason,
                                         getattr(request, "incident_id", None))
    return record


def approval_policy(settings: Settings) -> ApprovalPolicy:
    if not settings.approvers:
        log.warning("MESHBOT_APPROVERS is empty: nobody can approve remediation actions")
    return ApprovalPolicy(approvers=settings.approvers, required=settings.required_approvals,
                          ttl=timedelta(minutes=settings.approval_ttl_minutes))


def _suggestion_buttons(incident: Incident, suggestions: list[SuggestedRemediation]) -> list:
    """With approvals, a playbook's suggested actions are buttons that open a request."""
    return approval_blocks.suggestion_buttons(incident.id, suggestions)


def _suggestion_text(incident: Incident, suggestions: list[SuggestedRemediation]) -> list:
    """Without (a captured scenario), they are text to read."""
    return incident_blocks.suggestions_blocks(suggestions)


def _reminders(settings: Settings, database: Database, cluster: ClusterAccess, outbox: Outbox, incidents: IncidentLog,
               flow: IncidentFlow, elector: LeaderElector | None) -> tuple[ReminderService | None,
                                                                           CertificateScheduler | None]:
    """The reminder service and its daily schedule; (None, None) when reminders are off."""
    if not (settings.reminders and settings.channel):
        return None, None
    zone = ZoneInfo(settings.timezone)
    reminders = ReminderService(
        database=database, cluster=cluster, channel=settings.channel, outbox=outbox, incidents=incidents,
        open_incident=flow.open_incident, days=settings.reminder_days, timezone=zone,
        shared=LeaseLedger(elector) if elector else None)
    hour, minute = (int(part) for part in settings.reminder_time.split(":"))
    # APScheduler 3 must not share a job store between processes (its FAQ): each replica keeps its own next to
    # MESHBOT_DB, also on PostgreSQL; the Lease decides which one's scan runs.
    scheduler = CertificateScheduler(reminders, settings.db_path, zone, (hour, minute), elector)
    return reminders, scheduler


def _load_playbooks(settings: Settings, checks: CheckRegistry) -> PlaybookSet:
    try:
        return load_playbooks(settings.playbooks_dir or DEFAULT_PLAYBOOKS_DIR, checks)
    except PlaybookError as exc:
        raise SettingsError(f"invalid playbook: {exc}") from None

