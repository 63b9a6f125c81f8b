"""Everything ``bot.server.wiring.build`` made, by name: complete when constructed, typed, never filled in later."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from bot.approvals.desk import ApprovalDesk
from bot.cluster import ClusterAccess
from bot.diagnosis import Diagnostician
from bot.incidents.flow import IncidentFlow
from bot.incidents.log import IncidentLog
from bot.reminders.scheduler import CertificateScheduler
from bot.reminders.service import ReminderService
from bot.runtime.metrics import Metrics
from bot.settings import Settings
from bot.slack.client import SlackClient, SlackConnections
from bot.slack.outbox import Outbox
from bot.slack.slash import SlashCommands
from bot.storage.database import Database
from commands.checks.registry import CheckRegistry


@dataclass(frozen=True)
class Services:
    settings: Settings
    metrics: Metrics
    checks: CheckRegistry
    database: Database
    intake: Database
    """What HTTP requests write before they are answered (``bot.storage.intake``): its own file beside SQLite,
    else ``database`` itself."""
    slack: SlackClient
    cluster: ClusterAccess
    diagnostician: Diagnostician
    workers: ThreadPoolExecutor
    """Slow work: diagnoses, planning and executing actions, certificate scans."""
    messengers: ThreadPoolExecutor
    """Command and button handlers, which mostly talk to Slack: they answer at once even when every worker
    is busy."""
    incidents: IncidentLog
    outbox: Outbox
    incident_flow: IncidentFlow
    approvals: ApprovalDesk | None
    """None when actions are impossible (a captured scenario)."""
    reminders: ReminderService | None
    """None when reminders are off (MESHBOT_REMINDERS, or no MESHBOT_CHANNEL)."""
    scheduler: CertificateScheduler | None
    """The daily certificate scan; present exactly when ``reminders`` is."""
    slash: SlashCommands
    """The ``/mesh`` sub-commands as registered: ``/mesh help``, the role check and docs/mesh-commands.md read it."""
    slack_connections: SlackConnections = field(default_factory=SlackConnections)
    """The Web API clients' kept-alive connections, closed when meshbot stops."""
