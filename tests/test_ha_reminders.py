"""Reminders with two replicas on one PostgreSQL: scheduled work stays with the Lease holder, and the shared
ledger (the reminders_sent table both replicas read) keeps a reminder from being posted twice."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from tests.support.certs import mint
from tests.support.kube import write_kubeconfig
from tests.support.postgres import PASSWORD
from tests.test_reminders import mesh_with, reminders_posted, wait_startup_scan

AUDIT_KEY = "ha-reminders-audit-key-0123456789abcdef"


def test_only_the_lease_holder_scans_and_its_successor_does_not_post_a_reminder_again(
        bot_factory, kube, fake_slack, tmp_path, postgres):
    mesh_with(kube, mint("Istio CA", is_ca=True, days=60))
    shared = dict(scenario=None, kubeconfig=write_kubeconfig(tmp_path / "kubeconfig", kube.url),
                  kube_context="kmock", kube_timeout=2.0, channel="CINCIDENT", reminders=True,
                  leader_election=True, lease_namespace="meshbot", database_url=postgres.create(),
                  database_password=PASSWORD, audit_key=AUDIT_KEY)
    a = bot_factory(pod_name="meshbot-a", db_path=str(tmp_path / "a.db"), **shared)
    fake_slack.wait_for(lambda: a.scheduler.elector.is_leader, what="replica a to lead")
    b = bot_factory(pod_name="meshbot-b", db_path=str(tmp_path / "b.db"), **shared)
    wait_startup_scan(a, fake_slack)
    assert not b.scheduler.run_scan("test"), "the follower does not scan"
    fake_slack.wait_for(lambda: len(reminders_posted(fake_slack)) == 1, what="the leader's 90-day reminder")

    a.stop()  # releases the Lease
    assert b.scheduler.run_scan("test"), "the other replica takes over at once"
    assert len(reminders_posted(fake_slack)) == 1, "the shared reminders_sent table (and the Lease) say it was posted"
    assert b.services.reminders.scan(datetime.now(timezone.utc) + timedelta(days=31)).due, "b posts what comes next"
    fake_slack.wait_for(lambda: len(reminders_posted(fake_slack)) == 2, what="the 30-day reminder from b")
