"""Answers first (issue 26): background work waits while a signed Slack request is being answered.

The bot is the real one (Bolt, its pools, the fake Slack Web API).  An answer is held "in flight" by calling the
bot's WSGI application from a thread whose ``start_response`` blocks: Bolt has acked and handed its work to the
pool by then, exactly as when waitress calls it, and the answer is not finished until ``start_response`` returns.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from bot.runtime.priority import Answering, YieldingPool
from tests.support.slack import FakeSlack, sign, slash_command_body


def environ_for(path: str, body: bytes, headers: dict[str, str]) -> dict:
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": path, "QUERY_STRING": "", "SERVER_PROTOCOL": "HTTP/1.1",
               "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "80", "REMOTE_ADDR": "127.0.0.1",
               "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": str(len(body)),
               "CONTENT_TYPE": headers.pop("Content-Type", "application/x-www-form-urlencoded")}
    environ.update({"HTTP_" + name.upper().replace("-", "_"): value for name, value in headers.items()})
    return environ


@contextmanager
def answer_held(web, environ: dict) -> Iterator[list[str]]:
    """Runs the WSGI app in a thread that blocks in ``start_response`` until the block ends; yields its status."""
    release, called, status = threading.Event(), threading.Event(), []

    def start_response(line: str, headers: list) -> None:
        status.append(line)
        called.set()
        release.wait(30)

    thread = threading.Thread(target=lambda: list(web(environ, start_response)), daemon=True)
    thread.start()
    assert called.wait(10), "the app never started its answer"
    try:
        yield status
    finally:
        release.set()
        thread.join(10)


def slash_command(fake_slack: FakeSlack, text: str) -> dict:
    body = slash_command_body(text, response_url=fake_slack.response_url("r1"))
    return environ_for("/slack/events", body, {"Content-Type": "application/x-www-form-urlencoded", **sign(body)})


def running_posts(fake_slack: FakeSlack) -> list[dict]:
    return [m for m in fake_slack.messages(top_level=True) if "Running" in m.get("text", "")]


def waited_seconds(meshbot) -> tuple[float, float]:
    registry = meshbot.services.metrics.registry
    return (registry.get_sample_value("meshbot_background_wait_seconds_count") or 0.0,
            registry.get_sample_value("meshbot_background_wait_seconds_sum") or 0.0)


def test_a_commands_running_post_waits_until_its_ack_is_answered_then_goes_at_once(bot_factory, fake_slack):
    meshbot = bot_factory(answers_first_seconds=3.0)
    with answer_held(meshbot.web, slash_command(fake_slack, "diagnose prod")) as status:
        assert status == ["200 OK"]
        time.sleep(0.6)
        assert running_posts(fake_slack) == [], "background work started while the ack was still being answered"
        assert meshbot.web.answering.in_flight == 1
    fake_slack.wait_for(lambda: running_posts(fake_slack), what="the Running… post once the ack was answered")
    count, total = waited_seconds(meshbot)
    # It waited for the held answer (~0.6 s), not for the whole patience (3 s).
    assert count >= 1 and 0.5 <= total < 2.9


def test_with_answers_first_off_the_running_post_goes_while_the_ack_is_still_held(bot_factory, fake_slack):
    meshbot = bot_factory(answers_first_seconds=0)
    with answer_held(meshbot.web, slash_command(fake_slack, "diagnose prod")):
        fake_slack.wait_for(lambda: running_posts(fake_slack), what="the Running… post during the held ack")
    assert waited_seconds(meshbot) == (0.0, 0.0)


def test_background_work_waits_at_most_the_patience_when_answers_never_stop(bot_factory, fake_slack):
    meshbot = bot_factory(answers_first_seconds=0.5)
    with answer_held(meshbot.web, slash_command(fake_slack, "diagnose prod")):
        # A storm that never pauses still gets its work done, each piece at most the patience late.
        fake_slack.wait_for(lambda: running_posts(fake_slack), what="the Running… post after the patience")
        assert meshbot.web.answering.in_flight == 1
    count, total = waited_seconds(meshbot)
    assert count >= 1 and total >= 0.45


def test_an_unsigned_slack_request_is_not_counted_so_it_cannot_hold_background_work(bot_factory, fake_slack):
    meshbot = bot_factory()
    body = slash_command_body("diagnose prod", response_url=fake_slack.response_url("r1"))
    forged = environ_for("/slack/events", body, {"Content-Type": "application/x-www-form-urlencoded",
                                                 **sign(body, secret="not-the-signing-secret")})
    with answer_held(meshbot.web, forged) as status:
        assert status == ["401 Unauthorized"]
        assert meshbot.web.answering.in_flight == 0


@pytest.mark.parametrize("path", ["/alertmanager", "/healthz", "/readyz", "/metrics"])
def test_webhooks_probes_and_scrapes_are_not_counted(bot_factory, path):
    """Only admitted Slack requests hold background work back: a route without a signature must not, and a probe
    or a scrape has nobody waiting on it the way Slack's 3 s deadline does."""
    meshbot = bot_factory()
    environ = environ_for(path, b"{}", {"Content-Type": "application/json"})
    environ["REQUEST_METHOD"] = "POST" if path == "/alertmanager" else "GET"
    with answer_held(meshbot.web, environ):
        assert meshbot.web.answering.in_flight == 0


# -- the two parts on their own ---------------------------------------------------------------------------


def test_waiting_for_quiet_returns_at_once_when_nothing_is_being_answered():
    answering = Answering(5.0)
    began = time.monotonic()
    assert answering.wait_for_quiet() == 0.0
    assert time.monotonic() - began < 1.0


def test_a_pools_task_starts_when_the_last_answer_ends_not_before():
    answering = Answering(10.0)
    started = threading.Event()
    pool = YieldingPool(answering, 2, "test")
    try:
        with answering.answer(), answering.answer():
            pool.submit(started.set)
            assert not started.wait(0.3)
        assert started.wait(5), "the task did not start once the answers ended"
    finally:
        pool.shutdown(wait=True)


def test_a_pools_task_waits_for_a_quiet_moment_not_just_a_gap_between_two_acks():
    """A burst has gaps between its acks; work that started in the first one competed with the rest of the burst."""
    answering = Answering(10.0, quiet=0.4)
    started: list[float] = []
    pool = YieldingPool(answering, 1, "test")
    try:
        with answering.answer():
            future = pool.submit(lambda: started.append(time.monotonic()))
            time.sleep(0.1)
        time.sleep(0.1)  # a gap shorter than the quiet period
        with answering.answer():  # the next ack of the burst, 0.1 s later: still not quiet
            time.sleep(0.1)
        ended = time.monotonic()
        future.result(5)
    finally:
        pool.shutdown(wait=True)
    assert started[0] - ended >= 0.39


def test_a_failing_answer_still_ends_its_count():
    answering = Answering(10.0)
    with pytest.raises(RuntimeError), answering.answer():
        raise RuntimeError("the handler failed")
    assert answering.in_flight == 0


def test_a_task_that_waited_reports_how_long_and_returns_its_result():
    waits: list[float] = []
    answering = Answering(0.2, on_wait=waits.append)
    pool = YieldingPool(answering, 1, "test")
    try:
        with answering.answer():
            assert pool.submit(lambda x: x * 2, 21).result(5) == 42
    finally:
        pool.shutdown(wait=True)
    assert len(waits) == 1 and waits[0] >= 0.19


def test_a_negative_patience_is_refused():
    with pytest.raises(ValueError, match="patience must be 0"):
        Answering(-1)
