"""One conversation per outage: the open incident a ``/mesh`` command or request about a scope belongs to.

While an incident is open in a channel, ``/mesh diagnose prod`` or ``/mesh restart …`` typed there about its
scope answer in that incident's thread instead of opening a second top-level post (issue 27: one outage had
become 7 incidents and 11 posts).  An incident that joined another one's outage (same probable cause) is not a
conversation of its own: its parent is.

An alert group that fires while a diagnosed incident is open in the channel gets no top-level post at first: it
waits in that incident's thread (one short note, its top message is the open incident's) until its own diagnosis
says whether it is the same outage.  Joined, the note becomes the join note and the open incident's top message
counts it; a separate problem gets its own top-level post then.  Target: one top-level post per outage plus one
per genuinely unrelated incident.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlite_utils

from bot.incidents import blocks, headline
from bot.incidents.log import IncidentLog
from bot.incidents.records import Event, EventKind, Incident, IncidentStatus
from bot.slack.app import AskFirst, Buttons
from bot.slack.blocks import Message, button, buttons, context, escape, message_of, plain, section
from bot.slack.outbox import Outbox
from commands.cluster.snapshot import SnapshotSource
from commands.errors import MeshbotError, UserError
from commands.validation import is_dns1123_label

MESHBOT = "meshbot"
WAITING_NOTE = "waiting_note"
"""Key of the ``note`` event data naming the outbox entry of a waiting group's note in the open thread."""


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
    # An incident whose top message an older one posted is part of that one's conversation, never its own.
    owners: dict[int | None, int] = {}
    for incident in sorted(incidents, key=lambda i: i.id):
        owners.setdefault(incident.top_message, incident.id)
    candidates = [i for i in incidents if i.channel == channel and i.status == IncidentStatus.OPEN
                  and i.top_message is not None and i.id not in joined and owners[i.top_message] == i.id]
    if namespace is None:
        return max(candidates, key=lambda i: i.id, default=None)
    named = [i for i in candidates if namespace in i.namespaces]
    mesh_wide = [i for i in candidates if not i.namespaces]
    return max(named or mesh_wide, key=lambda i: i.id, default=None)


ATTACH_BUTTON = "conversation_scope"
"""The answer to "attach to #1?" (value ``TOKEN:INCIDENT:NAMESPACE:attach`` or ``…:separate``)."""
CHOICES = ("attach", "separate")
SCOPE_ANSWER = "scope"
"""Key of the ``note`` event data recording an answer: the namespace, and ``attach`` true or false."""


@dataclass
class Conversations:
    """Finds the conversation for a command: ``conversations(channel, namespace)``.

    A command about a namespace no open incident of the channel names, while one is open there, is ambiguous:
    the issue allows "ask once: attach to #1?".  The author is asked (``AskFirst``: two buttons), the answer is
    an event of that incident (so it lasts the incident's life, on every replica) and the command then runs."""

    incidents: IncidentLog
    outbox: Outbox
    namespaces: Callable[[], Collection[str] | None] = lambda: None
    """The cluster's namespaces (None: cannot tell): a typo (``prdo``) is refused by the command, never asked
    about."""
    _held: dict[str, tuple[int, str, Callable[[], None]]] = field(default_factory=dict)
    """Questions waiting for their button: token -> (incident, namespace, the command's retry)."""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, channel: str, namespace: str | None) -> Conversation | None:
        open_ = self.incidents.list_open()
        joined = frozenset(i.id for i in open_ if (d := self.incidents.latest_diagnosis(i.id)) and d.joined)
        incident = covering(open_, channel, namespace, joined)
        if incident is None and namespace is not None:
            incident = self._answered(covering(open_, channel, None, joined), namespace)
        if incident is None or incident.top_message is None:
            return None
        ts = self.outbox.ts_of(incident.top_message)
        if ts is None:
            return None  # its top message is not in Slack yet: nothing to reply under
        return Conversation(incident.id, channel, ts, incident.title, incident.top_message)

    def _answered(self, open_one: Incident | None, namespace: str) -> Incident | None:
        """``open_one`` when its people said commands about ``namespace`` belong to it; None when they said not
        (or nothing is open); asks (``AskFirst``) when nobody has said yet."""
        if open_one is None:
            return None
        known = self.namespaces()
        if known is not None and namespace not in known:
            return None  # no such namespace: the command itself says so, with suggestions
        answer = scope_answer(self.incidents.timeline(open_one.id), namespace)
        if answer is None:
            token = secrets.token_urlsafe(16)
            raise AskFirst(attach_question(open_one, namespace, token),
                           hold=lambda retry: self._hold(token, open_one.id, namespace, retry))
        return open_one if answer else None

    def _hold(self, token: str, incident_id: int, namespace: str, retry: Callable[[], None]) -> None:
        with self._lock:
            self._held[token] = (incident_id, namespace, retry)

    def answer(self, who: Any, value: str) -> None:
        """The button: record the answer on the incident, say so, and run the command that asked.

        The command waits in the memory of the replica that asked.  Slack delivers the click to any replica (over
        HTTP behind a Service, or over any replica's Socket Mode connection), and a restart empties the memory:
        the answer is then recorded from the button itself (it names the incident and the namespace), and its
        author types the command again, which now goes where they said without asking."""
        parts = value.split(":")
        token, named, choice = parts[0], parts[1:-1], parts[-1]
        if len(parts) < 2 or choice not in CHOICES:
            raise UserError("that is not an answer meshbot asked for: type the command again")
        with self._lock:
            held = self._held.pop(token, None)
        retry: Callable[[], None] | None = None
        if held is not None:
            incident_id, namespace, retry = held
        else:
            incident_id, namespace = self._still_open(named)
        attach = choice == "attach"
        self.incidents.record(incident_id, who.user, EventKind.NOTE, {
            "text": f"commands about `{namespace}` {'belong to this incident' if attach else 'are separate'} "
                    "while it is open", SCOPE_ANSWER: namespace, "attach": attach})
        noted = (f"Noted: commands about `{namespace}` " + (f"attach to incident #{incident_id}" if attach else
                 f"open their own thread, not incident #{incident_id}'s") + " until it resolves.")
        if retry is None:
            who.tell(noted + " Type the command again to run it (the question was asked by another meshbot "
                             "replica, or before a restart).")
            return
        who.tell(noted)
        retry()

    def _still_open(self, named: Sequence[str]) -> tuple[int, str]:
        """(incident, namespace) the button names, when that incident is still open and the name is a namespace's."""
        incident, namespace = named if len(named) == 2 else ("", "")
        open_ids = {i.id for i in self.incidents.list_open()}
        if not incident.isdigit() or int(incident) not in open_ids or not is_dns1123_label(namespace):
            raise UserError("that question was answered already, or its incident has resolved: type the command "
                            "again")
        return int(incident), namespace


def scope_answer(events: Sequence[Event], namespace: str) -> bool | None:
    """What people answered last for ``namespace`` on this incident: attach (True), separate (False), or None."""
    answers = [bool(e.data.get("attach")) for e in events
               if e.kind == EventKind.NOTE and e.data.get(SCOPE_ANSWER) == namespace]
    return answers[-1] if answers else None


def attach_question(incident: Incident, namespace: str, token: str) -> Message:
    """ "Attach to #1?" with its two buttons; only the command's author sees it."""
    where = ", ".join(f"`{escape(n)}`" for n in incident.namespaces) or "the whole mesh"
    text = (f"Incident #{incident.id} ({plain(incident.title)}) is open in this channel about "
            f"{', '.join(incident.namespaces)}. Is this command about {namespace} part of it?")
    return message_of(text, [
        section(f"Incident #{incident.id} (*{escape(incident.title)}*) is open in this channel about {where}. Is "
                f"this command about `{escape(namespace)}` part of it? The answer holds for `{escape(namespace)}` "
                "until the incident resolves."),
        buttons(button(f"Attach to #{incident.id}", f"{ATTACH_BUTTON}:1", f"{token}:{incident.id}:{namespace}:attach",
                       style="primary"),
                button("Separate incident", f"{ATTACH_BUTTON}:2", f"{token}:{incident.id}:{namespace}:separate"),
                block_id=f"attach-{incident.id}")])


def register(buttons_: Buttons, conversations: Conversations) -> None:
    """The answer's button; it runs the held command, so it goes on the worker pool (a request plans)."""
    buttons_.add(ATTACH_BUTTON, conversations.answer, background=True)


# -- a new alert group while an incident is open: wait in its thread until the diagnosis decides -------------

def waiting_room(db: sqlite_utils.Database, incidents: IncidentLog, channel: str, namespaces: Sequence[str],
                 new_id: int) -> Incident | None:
    """The open, diagnosed conversation of ``channel`` a new alert group waits in (the one naming one of its
    namespaces, else a mesh-wide one, else the newest); None: it opens a top-level post of its own at once.

    Only diagnosed ones: a join is decided against a stored triage (``IncidentDiagnosis._same_outage``)."""
    candidates = [i for i in incidents.open_diagnosed_except(db, new_id)
                  if i.channel == channel and i.top_message is not None and owner(db, incidents, i) == i.id]
    if not candidates:
        return None
    joined = frozenset(i.id for i in candidates if (d := incidents.latest_diagnosis(i.id, db)) and d.joined)
    scopes: Sequence[str | None] = list(namespaces) or [None]
    named = [c for n in scopes if (c := covering(candidates, channel, n, joined)) is not None]
    return max(named, key=lambda i: i.id) if named else max(candidates, key=lambda i: i.id)


def owner(db: sqlite_utils.Database, incidents: IncidentLog, incident: Incident) -> int:
    """The incident whose top-level post ``incident``'s thread is: itself, or the conversation it is part of."""
    if incident.top_message is None:
        return incident.id
    return (incidents.sharing_top(db, incident.top_message) or [incident.id])[0]


def wait_in(db: sqlite_utils.Database, incidents: IncidentLog, outbox: Outbox, incident_id: int,
            home: Incident) -> None:
    """Put a new group in ``home``'s thread for now: one short note there, its thread ``home``'s."""
    incident = incidents.get_in(db, incident_id)
    note = outbox.post(db, incident_id=incident.id, channel=home.thread_channel(), thread_of=home.thread_top(),
                       message=_waiting_note(incident, home))
    incidents.set_top_message(db, incident.id, home.thread_top())
    incidents.append(db, incident.id, MESHBOT, EventKind.NOTE, {
        "text": f"fired while incident #{home.id} was open: followed in its thread until the diagnosis says "
                "whether it is the same outage", WAITING_NOTE: note, "waiting_in": home.id})


def waiting_note_of(db: sqlite_utils.Database, incidents: IncidentLog, incident: Incident) -> tuple[int, int] | None:
    """(the note's outbox entry, the incident it waits in) while ``incident`` waits in another one's thread."""
    if owner(db, incidents, incident) == incident.id:
        return None
    for event in incidents.timeline(incident.id, db):
        if event.kind == EventKind.NOTE and WAITING_NOTE in event.data:
            return int(event.data[WAITING_NOTE]), int(event.data["waiting_in"])
    return None


def settle_joined(db: sqlite_utils.Database, incidents: IncidentLog, outbox: Outbox, incident: Incident,
                  target: Incident, note: Message) -> bool:
    """A waiting group joined ``target``: its note becomes the join note (or, waiting elsewhere, says where it
    went and the join note goes in ``target``'s thread), and its thread is ``target``'s from now on.  False when
    it was not waiting (it has a top-level post of its own: the caller posts the join note)."""
    waiting = waiting_note_of(db, incidents, incident)
    if waiting is None:
        return False
    entry, home_id = waiting
    incidents.set_top_message(db, incident.id, target.thread_top())
    if home_id == target.id:
        outbox.update(db, incident_id=incident.id, channel=target.thread_channel(), message=note, of=entry)
        return True
    outbox.update(db, incident_id=incident.id, channel=target.thread_channel(), of=entry, message=message_of(
        f"{plain(incident.title)} (incident #{incident.id}) is part of incident #{target.id}'s outage",
        [context(f":link: {escape(incident.title)} (incident #{incident.id}) is part of incident "
                 f"#{target.id}'s outage (same probable cause): followed in its thread.")]))
    outbox.post(db, incident_id=incident.id, channel=target.thread_channel(), thread_of=target.thread_top(),
                message=note)
    return True


def settle_separate(db: sqlite_utils.Database, incidents: IncidentLog, outbox: Outbox, incident: Incident,
                    now: datetime) -> Incident:
    """A waiting group is a problem of its own: its top-level post now, and its note in the other thread says
    so.  Returns the incident as it is now (its own top message); unchanged when it was not waiting."""
    waiting = waiting_note_of(db, incidents, incident)
    if waiting is None:
        return incident
    entry, home_id = waiting
    channel = incident.thread_channel()
    top = outbox.post(db, incident_id=incident.id, channel=channel, message=blocks.incident_message(
        headline.top_view(db, incidents, outbox, incident.id), now))
    incidents.set_top_message(db, incident.id, top)
    outbox.update(db, incident_id=incident.id, channel=channel, of=entry, message=message_of(
        f"{plain(incident.title)} (incident #{incident.id}) is a separate problem", [context(
            f":arrow_heading_down: {escape(incident.title)} (incident #{incident.id}) is a separate problem (its "
            f"diagnosis names another cause than incident #{home_id}'s): it has its own post in the channel.")]))
    return incidents.get_in(db, incident.id)


def _waiting_note(incident: Incident, home: Incident) -> Message:
    text = (f"{plain(incident.title)} (incident #{incident.id}) fired too: diagnosing whether it is part of this "
            "outage")
    return message_of(text, [context(f":hourglass_flowing_sand: *{escape(incident.title)}* (incident "
                                     f"#{incident.id}) fired too; diagnosing whether it is part of this outage "
                                     f"(incident #{home.id}) or a separate problem.")])


def cluster_namespaces(source: Callable[[], SnapshotSource]) -> Callable[[], Collection[str] | None]:
    """The namespaces ``source`` lists, or None when it cannot list them or cannot vouch for an absence."""
    def read() -> Collection[str] | None:
        try:
            snapshot = source().snapshot({"Namespace"})
        except MeshbotError:
            return None
        return frozenset(snapshot.namespaces()) if snapshot.can_trust_absence("Namespace") else None
    return read
