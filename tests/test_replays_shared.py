"""A Socket Mode envelope re-delivered to another replica (or to the same one after a restart) runs once: the
envelope ids are in the database every replica shares (issue 24 item 5).  Real sockets, SQLite and PostgreSQL."""

from __future__ import annotations

from tests.support.bot import quiesce
from tests.support.kube import FakeKube, write_kubeconfig
from tests.support.socket_mode import FakeSocketMode
from tests.test_actions import namespace
from tests.test_socket_mode import APP_TOKEN, slash_command_payload


def test_an_envelope_redelivered_to_the_next_replica_opens_one_request(kube: FakeKube, fake_socket_mode: FakeSocketMode,
                                                                        fake_slack, tmp_path, backend_settings,
                                                                        bot_factory):
    kube.add(namespace("payments"))
    settings = dict(slack_app_token=APP_TOKEN, scenario=None, kube_context="kmock", channel="CINCIDENT",
                    kubeconfig=write_kubeconfig(tmp_path / "kubeconfig", kube.url), approvers=("UBOB", "UCAROL"),
                    **backend_settings)
    first = bot_factory(**settings)
    fake_socket_mode.wait_for_connection()
    payload = slash_command_payload(fake_slack, "permissive-mtls payments")
    envelope_id = fake_socket_mode.push("slash_commands", payload)
    fake_socket_mode.wait_for_ack(envelope_id)
    fake_slack.wait_for(lambda: [m for m in fake_slack.messages() if "request #1:" in m.get("text", "")],
                        timeout=15, what="request #1 in the thread")
    quiesce(first)
    first.stop()  # the replica that took it goes away; Slack, missing the ack, delivers to the one left

    second = bot_factory(**settings)
    fake_socket_mode.wait_for_connection()
    fake_socket_mode.push("slash_commands", payload, envelope_id=envelope_id, retry_attempt=1)
    fake_slack.wait_for(lambda: len([m for m in fake_socket_mode.received() if m.get("envelope_id") == envelope_id])
                        == 2, timeout=5, what="the second replica's ack of the re-delivery")
    quiesce(second)
    assert second.database.db.execute("SELECT COUNT(*) FROM approval_requests").fetchone()[0] == 1
    assert 'meshbot_slack_duplicates_total{transport="socket_mode"} 1.0' in \
        second.services.metrics.exposition().decode()


def test_the_shared_ledger_while_postgresql_is_down_decides_from_this_replicas_memory_instead_of_failing():
    from bot.slack.replays import DeliveryLedger
    from tests.support.postgres import start_postgres

    server, stop = start_postgres()
    database = server.fresh()
    try:
        ledger = DeliveryLedger(database, ttl=300)
        assert ledger.first_time(("signature", "1733540000", "v0=aa"), 1733540300)
        stop()  # the database goes away (a restart, an outage)
        assert ledger.first_time(("signature", "1733540001", "v0=bb"), 1733540301)  # handled, not a 500
        assert not ledger.first_time(("signature", "1733540001", "v0=bb"), 1733540301)  # still no repeat here
    finally:
        stop()
        database.close()
