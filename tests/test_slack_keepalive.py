"""The Slack Web API client keeps its connection (bot.slack.client.KeepAliveWebClient): one TCP connection per
thread for consecutive calls, a new one when the server closes it, and slack_sdk's own error handling unchanged."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bot.slack.client import SlackClient, SlackError, build_web_client


class Recorded:
    def __init__(self) -> None:
        self.peers: list[int] = []
        self.close_after: set[int] = set()
        """Answer these calls (by number, from 0) with ``Connection: close`` and close, as an idle timeout does."""
        self.rate_limited: set[int] = set()
        self.silently_closed_after: set[int] = set()
        """Close after answering these calls without saying so (a load balancer ending an idle connection)."""


@pytest.fixture
def api() -> Iterator[tuple[str, Recorded]]:
    recorded = Recorded()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as slack.com
        # The headers and the body go out as two writes; with Nagle's algorithm on, the body waits for the client's
        # delayed ACK of the headers (40 ms on Linux) on every response of a kept-alive connection.  Slack's own
        # front ends answer without that stall.
        disable_nagle_algorithm = True

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            number = len(recorded.peers)
            recorded.peers.append(self.client_address[1])
            status, answer = (429, {"ok": False, "error": "ratelimited"}) if number in recorded.rate_limited else (
                200, {"ok": True, "url": "https://example.slack.com/", "team": "T", "user": "meshbot"})
            body = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            if status == 429:
                self.send_header("Retry-After", "7")
            if number in recorded.close_after:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            self.wfile.write(body)
            if number in recorded.silently_closed_after:
                self.close_connection = True

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/api/", recorded
    server.shutdown()
    server.server_close()


def test_consecutive_calls_from_one_thread_share_one_connection(api):
    url, recorded = api
    slack = SlackClient(build_web_client("xoxb-test", url))
    for _ in range(5):
        assert slack.auth_test()["ok"]
    assert len(recorded.peers) == 5 and len(set(recorded.peers)) == 1


def test_a_connection_the_server_closed_is_replaced_and_the_call_still_answers(api):
    url, recorded = api
    recorded.close_after = {1}
    slack = SlackClient(build_web_client("xoxb-test", url, max_retries=0))
    for _ in range(4):
        assert slack.auth_test()["ok"]
    assert recorded.peers[0] == recorded.peers[1] != recorded.peers[2] == recorded.peers[3]


def test_a_connection_closed_without_notice_while_idle_is_replaced_before_the_next_call(api):
    url, recorded = api
    recorded.silently_closed_after = {0}
    slack = SlackClient(build_web_client("xoxb-test", url, max_retries=0))  # no retry could hide a failed call
    assert slack.auth_test()["ok"]
    time.sleep(0.2)  # the server's close reaches the client's socket
    assert slack.auth_test()["ok"]
    assert recorded.peers[0] != recorded.peers[1]


def test_each_thread_has_its_own_connection(api):
    url, recorded = api
    slack = SlackClient(build_web_client("xoxb-test", url))
    threads = [threading.Thread(target=lambda: [slack.auth_test() for _ in range(3)]) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(recorded.peers) == 9 and len(set(recorded.peers)) == 3


def test_a_rate_limit_still_reaches_meshbot_as_slack_sdk_maps_it(api):
    url, recorded = api
    recorded.rate_limited = {0}
    slack = SlackClient(build_web_client("xoxb-test", url, max_retries=0))
    with pytest.raises(SlackError) as raised:
        slack.auth_test()
    assert raised.value.error == "ratelimited" and raised.value.transient and raised.value.retry_after == 7.0
    assert slack.auth_test()["ok"], "the connection goes on after a 429"


def test_a_server_that_is_gone_is_a_transient_connection_error(api):
    url, recorded = api
    slack = SlackClient(build_web_client("xoxb-test", "http://127.0.0.1:9/api/", max_retries=0))
    with pytest.raises(SlackError) as raised:
        slack.auth_test()
    assert raised.value.transient and raised.value.error.startswith("connection error")
