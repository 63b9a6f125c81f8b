"""One conversation per outage: the open incident a ``/mesh`` command or request about a scope belongs to.

While an incident is open in a channel, ``/mesh diagnose prod`` or ``/mesh restart …`` typed there about its
scope answer in that incident's thread instead of opening a second top-level post (issue 27: one outage had
become 7 incidents and 11 posts).  An incident that joined another one's outage (same probable cause) is not a
conversation of its own: its parent is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bot.incidents.log import IncidentLog
from bot.incidents.records import Incident, IncidentStatus
from bot.slack.outbox import Outbox


@dataclass(frozen=True)
class Conversation:
    """Where an attached command answers: the incident, and its top message's thread."""

    incident_id: int
    channel: str
    thread_ts: str
    title: str
    top_message: int
    """The outbox entry of the incident's top message (what ``Outbox.post(thread_of=…)`` takes)."""


def covering(incidents: Sequence[Incident], channel: str, namespace: str | None,
             joined: frozenset[int] = frozenset()) -> Incident | None:
    """The open incident of ``channel`` a command about ``namespace`` (None: the whole mesh) belongs to.

    Its alert names the namespace, or names none (a mesh-wide alert such as IstiodDown covers every namespace);
    a command about the whole mesh belongs to the newest open conversation.  Among several, the one naming the
    namespace wins over a mesh-wide one, then the newest.  ``joined``: incidents that are part of another's
    outage, never a conversation of their own."""
    candidates = [i for i in incidents if i.channel == channel and i.status == IncidentStatus.OPEN
                  and i.top_message is not None and i.id not in joined]
    if namespace is None:
        return max(candidates, key=lambda i: i.id, default=None)
    named = [i for i in candidates if namespace in i.namespaces]
    mesh_wide = [i for i in candidates if not i.namespaces]
    return max(named or mesh_wide, key=lambda i: i.id, default=None)


@dataclass(frozen=True)
class Conversations:
    """Finds the conversation for a command: ``conversations(channel, namespace)``."""

    incidents: IncidentLog
    outbox: Outbox

    def __call__(self, channel: str, namespace: str | None) -> Conversation | None:
        open_ = self.incidents.list_open()
        joined = frozenset(i.id for i in open_ if (d := self.incidents.latest_diagnosis(i.id)) and d.joined)
        incident = covering(open_, channel, namespace, joined)
        if incident is None or incident.top_message is None:
            return None
        ts = self.outbox.ts_of(incident.top_message)
        if ts is None:
            return None  # its top message is not in Slack yet: nothing to reply under
        return Conversation(incident.id, channel, ts, incident.title, incident.top_message)
