"""Remediation actions: parse a target, plan it from the cluster, dry-run, apply, verify, roll back.

No Slack and no approvals here: ``bot.approvals.desk`` decides *whether* a plan may run.
"""

from commands.actions.execute import Outcome, Verification, apply, dry_run, verify
from commands.actions.plan import Change, Op, Plan, plan_diff, rollback_plan
from commands.actions.planners import plan_action
from commands.actions.targets import USAGE, ActionName, ActionTarget, ActionUsageError, ClientMode, Scope, parse_action

__all__ = ["USAGE", "ActionName", "ActionTarget", "ActionUsageError", "Change", "ClientMode", "Op", "Outcome", "Plan", "Scope",
           "Verification", "apply", "dry_run", "parse_action", "plan_action", "plan_diff", "rollback_plan", "verify"]
