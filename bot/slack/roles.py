"""Who may do what: diagnostics, asking for actions, resolving incidents (MESHBOT_*_BY settings).

The channel allowlist decides *where* meshbot answers; this decides *who*.  The
defaults are the safe ones: anyone in an allowed channel may run diagnostics,
only responders (MESHBOT_RESPONDERS plus MESHBOT_APPROVERS) may ask for an
action or resolve an incident.  Approving stays with the two-person rule
(``bot.approvals.rule``), which checks the approver list itself.

User groups (``S…``) are expanded through Slack's ``usergroups.users.list`` and
cached for ``GROUP_CACHE_SECONDS`` at most, in the ``GroupDirectory`` the approval
desk shares: someone removed from the on-call group loses the right within that
time.  When Slack cannot tell who is in a
group, the answer is no (fail closed) and the refusal says why.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum

from bot.settings import Audience, Settings
from bot.slack.client import SlackError
from bot.slack.groups import GroupDirectory


class Permission(StrEnum):
    DIAGNOSE = "diagnose"
    """Run checks, read and annotate incidents, manage reminders."""
    REQUEST = "request"
    """Ask for a remediation action or its rollback."""
    RESOLVE = "resolve"
    """Resolve an incident by hand."""


WHAT = {Permission.DIAGNOSE: "run diagnostics", Permission.REQUEST: "ask for remediation actions",
        Permission.RESOLVE: "resolve incidents by hand"}
WHO = {Audience.RESPONDERS: "the responders (MESHBOT_RESPONDERS) and approvers",
       Audience.APPROVERS: "the approvers (MESHBOT_APPROVERS)"}


@dataclass(frozen=True)
class Roles:
    """The three audiences and the IDs (users ``U…``/``W…``, groups ``S…``) behind them."""

    audiences: dict[Permission, Audience]
    approvers: tuple[str, ...] = ()
    responders: tuple[str, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> Roles:
        return cls({Permission.DIAGNOSE: settings.diagnostics_audience, Permission.REQUEST: settings.request_audience,
                    Permission.RESOLVE: settings.resolve_audience}, settings.approvers, settings.responders)

    def audience(self, permission: Permission) -> Audience:
        return self.audiences.get(permission, Audience.RESPONDERS)

    def ids(self, audience: Audience) -> tuple[str, ...]:
        """The user and group IDs of an audience (empty for everyone)."""
        if audience is Audience.APPROVERS:
            return self.approvers
        if audience is Audience.RESPONDERS:
            return self.approvers + self.responders
        return ()


def is_member(user: str, ids: Iterable[str], group_members: Callable[[str], frozenset[str]]) -> bool:
    """The user is listed, or belongs to a listed group (only groups are looked up)."""
    ids = tuple(ids)
    if user in ids:
        return True
    return any(user in group_members(group) for group in ids if group.startswith("S"))


def refusal(permission: Permission, audience: Audience) -> str:
    return (f"Sorry, only {WHO[audience]} may {WHAT[permission]} with meshbot. Nothing was done; "
            f"please ask one of them, or your meshbot admin if you should be on that list.")


class RoleCheck:
    """``refusal_for(user, permission)``: None when allowed, else the polite sentence to show them."""

    def __init__(self, roles: Roles, groups: GroupDirectory):
        self.roles = roles
        self._groups = groups
        """Shared with the approval desk: one answer per group for roles and votes alike, fail closed."""

    def needs_check(self, permission: Permission) -> bool:
        return self.roles.audience(permission) is not Audience.EVERYONE

    def refusal_for(self, user: str, permission: Permission) -> str | None:
        audience = self.roles.audience(permission)
        if audience is Audience.EVERYONE:
            return None
        try:
            if is_member(user, self.roles.ids(audience), self._groups.members):
                return None
        except SlackError as exc:
            return (f"Sorry, meshbot could not check whether you may {WHAT[permission]} (Slack answered "
                    f"{exc.error} when asked who is in the user groups), so it did nothing. Please try again.")
        return refusal(permission, audience)
