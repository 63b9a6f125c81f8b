"""The Slack app over real HTTP: signed slash commands in, what the fake Slack Web API received out."""

from __future__ import annotations

import json
import logging
import re
import time
import urllib.parse

import httpx
import pytest

from bot.incidents.blocks import rendered_lines
from bot.slack.blocks import Message
from commands.catalog import default_checks
from tests.support.bot import quiesce
from tests.support.kube import write_kubeconfig
from tests.support.slack import (
    BOT_TOKEN,
    SIGNING_SECRET,
    FakeSlack,
    post_signed,
    slash_command_body,
)


def slash(meshbot, fake_slack: FakeSlack, text: str, **kwargs) -> httpx.Response:
    body = slash_command_body(text, response_url=fake_slack.response_url(), **kwargs)
    return post_signed(f"{meshbot.url}/slack/events", body)


def posts(fake_slack: FakeSlack) -> list:
    """Calls that would show something in Slack (Bolt's own auth.test does not)."""
    return [c for c in fake_slack.calls if c.method != "auth.test"] + fake_slack.responses


def wait_for_outcome(fake_slack: FakeSlack, timeout: float = 15.0):
    """The chat.update that replaces "Running…" with the outcome."""
    return fake_slack.wait_for(lambda: [c.args for c in fake_slack.of("chat.update") if c.args.get("_ok")],
                               timeout=timeout, what="the top-level message update")[-1]


def test_diagnose_acks_posts_running_message_then_findings_in_its_thread_then_updates_it(meshbot, fake_slack):
    started = time.monotonic()
    response = slash(meshbot, fake_slack, "diagnose prod")
    assert response.status_code == 200
    assert time.monotonic() - started < 3

    update = wait_for_outcome(fake_slack)
    [top] = fake_slack.messages(top_level=True)
    assert top["channel"] == "CINCIDENT"
    assert top["text"] == "Running diagnose for prod, requested by <@UALICE>"
    [thread] = fake_slack.messages(thread_ts=top["_ts"])
    assert thread["blocks"][0] == {"type": "header", "text": {"type": "plain_text", "text": "diagnose \u00b7 prod",
                                                             "emoji": True}}
    assert "*Probable causes*" in str(thread["blocks"]), "the triage, as in an alert's thread"
    assert update["ts"] == top["_ts"]
    assert update["text"].startswith("diagnose for prod: ")
    assert "errors" in update["text"]


def test_a_diagnosis_thread_carries_the_triage_and_attaches_every_finding_most_severe_first(meshbot, fake_slack):
    slash(meshbot, fake_slack, "diagnose")
    wait_for_outcome(fake_slack)
    [top] = fake_slack.messages(top_level=True)
    [thread] = fake_slack.messages(thread_ts=top["_ts"])
    text = str(thread["blocks"])
    assert "*Probable causes*, what the other steps wait on first" in text, "the same triage as an alert's thread"
    assert "the full report is attached below as a file, each finding once" in text
    assert rendered_lines(Message(thread["text"], thread["blocks"])) <= 20
    [report] = fake_slack.wait_for(lambda: list(fake_slack.uploads.values()), what="the full report")
    finding = re.compile(r"^(Error|Warning|Info) \[(IST|MB)\d{4}\]", re.MULTILINE)
    levels = finding.findall(report.decode())
    order = ["Error", "Warning", "Info"]
    assert [level for level, _ in levels] == sorted((level for level, _ in levels), key=order.index)


def test_help_and_empty_text_answer_ephemerally_without_posting(meshbot, fake_slack):
    for text in ("help", ""):
        response = slash(meshbot, fake_slack, text)
        assert response.status_code == 200
        assert response.json()["response_type"] == "ephemeral"
        assert "/mesh diagnose [NAMESPACE]" in response.json()["text"]
    quiesce(meshbot)
    assert fake_slack.messages() == []


@pytest.mark.parametrize("where", ["text", "channel_name", "user_name", "team_domain"])
def test_a_command_with_payload_anywhere_in_its_body_is_answered_not_404(meshbot, fake_slack, where):
    """Bolt's own body parser took any form body containing "payload" for an interaction and lost it (404
    "unhandled request"); meshbot hands Bolt the body its gate parsed."""
    fields = dict(urllib.parse.parse_qsl(slash_command_body("help", response_url=fake_slack.response_url()).decode()))
    fields[where] = "help payload" if where == "text" else "payload-team"
    response = post_signed(f"{meshbot.url}/slack/events", urllib.parse.urlencode(fields).encode())
    assert response.status_code == 200
    assert "/mesh diagnose [NAMESPACE]" in response.json()["text"]


def test_slacks_url_verification_gets_its_challenge_back(meshbot, fake_slack):
    """Slack sends this when the Events API request URL is set, signed like every request."""
    body = json.dumps({"token": "deprecated", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
                       "type": "url_verification"}).encode()
    response = post_signed(f"{meshbot.url}/slack/events", body, headers={"Content-Type": "application/json"})
    assert response.status_code == 200
    assert response.json() == {"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"}


def test_slacks_ssl_check_on_the_command_url_is_answered_200_and_runs_nothing(meshbot, fake_slack):
    """Slack checks the slash command URL's certificate with ``ssl_check=1`` (no command in the body)."""
    response = post_signed(f"{meshbot.url}/slack/events", b"ssl_check=1&token=deprecated-verification-token")
    assert response.status_code == 200
    quiesce(meshbot)
    assert posts(fake_slack) == []


def test_quiesce_returns_only_once_work_already_handed_to_the_pools_has_finished(meshbot):
    finished = []
    meshbot.services.messengers.submit(lambda: meshbot.services.workers.submit(
        lambda: (time.sleep(0.3), finished.append("worker"))))  # a handler handing slow work on, as diagnoses do
    quiesce(meshbot)
    assert finished == ["worker"]


def test_a_mistyped_subcommand_gets_a_suggestion_not_the_whole_help(meshbot, fake_slack):
    answer = slash(meshbot, fake_slack, "diagnos prod").json()
    assert answer["response_type"] == "ephemeral"
    assert answer["text"] == ":warning: unknown subcommand `diagnos`. Did you mean `diagnose`? `/mesh help` lists " \
                             "them all."


def test_a_diagnosis_says_what_it_scanned_and_what_it_could_not_read(meshbot, fake_slack):
    slash(meshbot, fake_slack, "diagnose prod")
    wait_for_outcome(fake_slack)
    [top] = fake_slack.messages(top_level=True)
    [thread] = fake_slack.messages(thread_ts=top["_ts"])
    checks = ", ".join(default_checks().names())  # every registered check ran, in report order
    assert f"prod: 6 sidecars, 5 proxies checked ({checks})" in str(thread["blocks"])
    assert "NOT checked: " in str(thread["blocks"])


@pytest.mark.parametrize("text, complaint", [
    ("frobnicate prod", "unknown subcommand `frobnicate`"),
    ("status Prod_Namespace!", "is not a valid namespace name"),
    ("certs prod extra", "too many arguments"),
])
def test_bad_arguments_get_an_ephemeral_usage_message_and_no_thread(meshbot, fake_slack, text, complaint):
    response = slash(meshbot, fake_slack, text)
    assert response.status_code == 200
    answer = response.json()
    assert answer["response_type"] == "ephemeral"
    assert complaint in answer["text"]
    if not text.startswith("frobnicate"):  # a mistyped sub-command gets the closest names, not the whole help
        assert "/mesh status [NAMESPACE]" in answer["text"]
    quiesce(meshbot)
    assert posts(fake_slack) == []


def test_forged_signature_is_rejected_with_401_and_nothing_posted(meshbot, fake_slack):
    body = slash_command_body("diagnose prod", response_url=fake_slack.response_url())
    response = post_signed(f"{meshbot.url}/slack/events", body, secret="not-the-signing-secret")
    assert response.status_code == 401
    quiesce(meshbot)
    assert posts(fake_slack) == []


def test_stale_timestamp_is_rejected_with_401_and_nothing_posted(meshbot, fake_slack):
    body = slash_command_body("diagnose prod", response_url=fake_slack.response_url())
    response = post_signed(f"{meshbot.url}/slack/events", body, timestamp=int(time.time()) - 6 * 60)
    assert response.status_code == 401
    quiesce(meshbot)
    assert posts(fake_slack) == []


def test_tampered_body_with_a_valid_signature_of_another_body_is_rejected(meshbot, fake_slack):
    from tests.support.slack import sign

    signed_for = slash_command_body("status", response_url=fake_slack.response_url())
    sent = slash_command_body("diagnose prod", response_url=fake_slack.response_url())
    response = httpx.post(f"{meshbot.url}/slack/events", content=sent,
                          headers={"Content-Type": "application/x-www-form-urlencoded", **sign(signed_for)})
    assert response.status_code == 401


def test_channel_outside_the_allowlist_is_refused_politely(bot_factory, fake_slack):
    meshbot = bot_factory(allowed_channels=("CALLOWED",))
    response = slash(meshbot, fake_slack, "diagnose prod", channel_id="CRANDOM")
    assert response.status_code == 200
    assert response.json() == {"text": "Sorry, meshbot only answers in <#CALLOWED>. Please ask there.",
                               "response_type": "ephemeral"}
    quiesce(meshbot)
    assert posts(fake_slack) == []


def test_cluster_answering_403_is_explained_in_the_thread(bot_factory, fake_slack, kube, tmp_path):
    kube.fail("Pod", 403)
    config = write_kubeconfig(tmp_path / "kubeconfig", kube.url)
    meshbot = bot_factory(scenario=None, kubeconfig=config, kube_context="kmock", kube_timeout=1.0)
    slash(meshbot, fake_slack, "status prod")
    wait_for_outcome(fake_slack)
    [top] = fake_slack.messages(top_level=True)
    [thread] = fake_slack.messages(thread_ts=top["_ts"])
    assert "meshbot cannot list pods in namespace prod: forbidden (needs RBAC list on pods)" in str(thread["blocks"])


def test_cluster_that_cannot_be_configured_gets_a_clear_message_in_the_thread(bot_factory, fake_slack, tmp_path):
    meshbot = bot_factory(scenario=None, kubeconfig=str(tmp_path / "missing-kubeconfig"))
    slash(meshbot, fake_slack, "status")
    update = wait_for_outcome(fake_slack)
    [top] = fake_slack.messages(top_level=True)
    [thread] = fake_slack.messages(thread_ts=top["_ts"])
    assert "Could not diagnose" in thread["text"] and "cannot load kubeconfig" in thread["text"]
    assert "failed" in update["text"]


def test_slow_cluster_is_still_acknowledged_within_3_seconds(bot_factory, fake_slack, kube, tmp_path):
    kube.slow("Pod", 4)
    config = write_kubeconfig(tmp_path / "kubeconfig", kube.url)
    meshbot = bot_factory(scenario=None, kubeconfig=config, kube_context="kmock", kube_timeout=6.0)
    started = time.monotonic()
    response = slash(meshbot, fake_slack, "status prod")
    ack_seconds = time.monotonic() - started
    assert response.status_code == 200 and ack_seconds < 3
    update = wait_for_outcome(fake_slack, timeout=20)
    assert update["text"].startswith("status for prod")


def test_slack_answering_429_is_retried_after_retry_after(meshbot, fake_slack):
    fake_slack.fail_next("chat.postMessage", status=429, retry_after=1)
    slash(meshbot, fake_slack, "status prod")
    wait_for_outcome(fake_slack)
    posts = fake_slack.of("chat.postMessage")
    assert not posts[0].args["_ok"] and posts[1].args["_ok"]
    assert posts[1].at - posts[0].at >= 1.0
    assert posts[1].args["text"] == posts[0].args["text"]


def test_slack_5xx_is_retried(meshbot, fake_slack):
    fake_slack.fail_next("chat.postMessage", status=503)
    slash(meshbot, fake_slack, "certs")
    wait_for_outcome(fake_slack)
    assert len(fake_slack.messages(top_level=True)) == 1


def test_bot_not_invited_tells_the_user_how_to_invite_it(meshbot, fake_slack):
    fake_slack.fail_next("chat.postMessage", error="not_in_channel")
    slash(meshbot, fake_slack, "status")
    answer = fake_slack.wait_for(lambda: fake_slack.responses, what="an ephemeral answer")[0]
    assert answer["response_type"] == "ephemeral"
    assert "/invite @meshbot" in answer["text"]


def test_a_5000_finding_report_posts_within_slack_limits_and_attaches_the_full_report(bot_factory, fake_slack,
                                                                                      tmp_path):
    scenario = tmp_path / "big"
    (scenario / "cluster").mkdir(parents=True)
    docs = [f"apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: vs-{i}, namespace: prod}}\n"
            f"spec:\n  hosts: [svc-{i}]\n  http: [{{route: [{{destination: {{host: missing-{i}}}}}]}}]\n"
            for i in range(5000)]
    (scenario / "cluster" / "vs.yaml").write_text("---\n".join(docs))
    (scenario / "scenario.yaml").write_text("cluster: cluster\n")
    meshbot = bot_factory(scenario=str(scenario / "scenario.yaml"))
    slash(meshbot, fake_slack, "analyze prod")
    update = wait_for_outcome(fake_slack, timeout=60)
    [top] = fake_slack.messages(top_level=True)
    [thread] = fake_slack.messages(thread_ts=top["_ts"])
    assert len(thread["blocks"]) <= 50
    assert "other findings here" in str(thread["blocks"])
    # The outbox may deliver the outcome's update before the upload: wait for the file itself.
    [complete] = fake_slack.wait_for(lambda: [c for c in fake_slack.of("files.completeUploadExternal")
                                              if c.args["_ok"]], timeout=90, what="the full report")
    assert complete.args["thread_ts"] == top["_ts"]
    [report] = fake_slack.uploads.values()
    assert report.decode().count("[IST0101]") == 5000
    assert update["text"].startswith("analyze for prod: 5000 errors")


def checked_readiness(meshbot) -> httpx.Response:
    """/readyz once the background Slack check has answered at least once."""
    deadline = time.monotonic() + 10
    while True:
        ready = httpx.get(f"{meshbot.url}/readyz", timeout=5)
        if ready.json()["slack_checked_seconds_ago"] is not None or time.monotonic() > deadline:
            return ready
        time.sleep(0.05)


def test_healthz_readyz_and_metrics(meshbot, fake_slack):
    assert httpx.get(f"{meshbot.url}/healthz").json() == {"status": "alive"}
    ready = checked_readiness(meshbot)
    assert ready.status_code == 200
    assert {k: v for k, v in ready.json().items() if k != "slack_checked_seconds_ago"} == \
        {"ready": True, "database": "ok", "slack": "ok"}
    slash(meshbot, fake_slack, "status prod")
    wait_for_outcome(fake_slack)
    metrics = httpx.get(f"{meshbot.url}/metrics").text
    assert 'meshbot_requests_total{kind="slash_command"} 1.0' in metrics
    assert "meshbot_slack_ack_seconds_bucket" in metrics
    assert 'meshbot_diagnosis_seconds_count{check="status"} 1.0' in metrics
    assert 'meshbot_findings_posted_total{level="Error"}' in metrics


def test_readyz_reports_a_rejected_token_but_stays_ready_so_alertmanager_keeps_delivering(bot_factory, fake_slack):
    fake_slack.fail_next("auth.test", error="invalid_auth")
    meshbot = bot_factory()
    ready = checked_readiness(meshbot)
    assert ready.status_code == 200 and ready.json()["ready"] is True
    assert ready.json()["slack"] == "token not accepted: invalid_auth"


def test_slack_api_errors_are_counted_by_method(meshbot, fake_slack):
    fake_slack.fail_next("chat.postMessage", error="not_in_channel")
    slash(meshbot, fake_slack, "status")
    fake_slack.wait_for(lambda: fake_slack.responses, what="the ephemeral answer")
    metrics = httpx.get(f"{meshbot.url}/metrics").text
    assert 'meshbot_slack_api_errors_total{error="not_in_channel",method="chat.postMessage"} 1.0' in metrics


def test_tokens_and_signing_secret_never_appear_in_logs(meshbot, fake_slack, caplog):
    from bot.runtime.redaction import install

    install([BOT_TOKEN, SIGNING_SECRET], "DEBUG")
    caplog.set_level(logging.DEBUG)
    fake_slack.fail_next("chat.postMessage", status=429, retry_after=1)
    slash(meshbot, fake_slack, "diagnose prod")
    wait_for_outcome(fake_slack)
    post_signed(f"{meshbot.url}/slack/events", slash_command_body("status"), secret="forged")
    logging.getLogger("test").warning("leak attempt %s", BOT_TOKEN)
    logged = "\n".join(h.format(r) for r in caplog.records for h in logging.getLogger().handlers[:1])
    assert caplog.records
    assert BOT_TOKEN not in logged and SIGNING_SECRET not in logged
    assert "(redacted)" in logged


def test_unknown_paths_and_methods(meshbot):
    assert httpx.get(f"{meshbot.url}/nope").status_code == 404
    assert httpx.get(f"{meshbot.url}/slack/events").status_code == 405
    assert httpx.post(f"{meshbot.url}/slack/events", content=b"x" * (1024 * 1024 + 1)).status_code == 413


def test_cluster_that_times_out_is_explained_in_the_thread(bot_factory, fake_slack, kube, tmp_path):
    kube.slow("Pod", 5)
    config = write_kubeconfig(tmp_path / "kubeconfig", kube.url)
    meshbot = bot_factory(scenario=None, kubeconfig=config, kube_context="kmock", kube_timeout=1.0)
    slash(meshbot, fake_slack, "status prod")
    wait_for_outcome(fake_slack)
    [top] = fake_slack.messages(top_level=True)
    [thread] = fake_slack.messages(thread_ts=top["_ts"])
    assert "The Kubernetes API did not answer list pods in namespace prod: no answer within 1s" in str(thread["blocks"])
