"""The HTTP server's socket loop (bot/server/sockets.py): no select() limit, no busy loop while answering."""

from __future__ import annotations

import contextlib
import os
import resource
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
from waitress.server import BaseWSGIServer

from bot.server.sockets import create_http_server
from bot.settings import Settings, SettingsError

SELECT_LIMIT = 1024
"""FD_SETSIZE: select() refuses a file descriptor at or above it."""


@contextlib.contextmanager
def descriptors_above_select_limit() -> Iterator[Callable[[], None]]:
    """Hold enough descriptors that sockets opened meanwhile are numbered above 1023, as in a process that keeps
    ~1,000 connections open (the server's CONNECTION_LIMIT is 1,000, and opening idle connections needs no
    signature).  Yields ``refill``: other threads of the test process (an earlier test's bot finishing its stop)
    may close descriptors meanwhile, and the next socket would take the freed low number (fd 55 in one full run);
    ``refill`` holds every free number below the limit again."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = SELECT_LIMIT + 512
    assert hard == resource.RLIM_INFINITY or hard >= needed, f"this machine allows only {hard} open files"
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, needed), hard))
    held: list[int] = []

    def refill() -> None:
        while True:
            fd = os.open(os.devnull, os.O_RDONLY)
            held.append(fd)
            if fd >= SELECT_LIMIT:
                return

    try:
        refill()
        yield refill
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def server_descriptors(meshbot) -> list[int]:
    """The descriptors in the bot's socket map: what its loop hands to poll() (select() refused those >= 1024)."""
    return sorted(meshbot.server._map)


def test_the_server_keeps_answering_when_its_sockets_are_numbered_above_select_s_limit(bot_factory):
    """With select() (waitress's default) the loop raised "filedescriptor out of range in select()" and the HTTP
    thread ended for good: 1,010 idle connections to `meshbot serve` left /healthz timing out."""
    with descriptors_above_select_limit() as refill:
        meshbot = bot_factory()
        port = int(meshbot.url.rsplit(":", 1)[1])
        idle: list[socket.socket] = []
        try:
            deadline = time.monotonic() + 10
            while not (idle and idle[-1].fileno() >= SELECT_LIMIT and server_descriptors(meshbot)[-1] >= SELECT_LIMIT):
                assert time.monotonic() < deadline, f"no connection numbered above {SELECT_LIMIT - 1} on both sides"
                refill()
                idle.append(socket.create_connection(("127.0.0.1", port)))
                time.sleep(0.05)  # the loop accepts it and adds it to its map
            with httpx.Client(timeout=5) as client:
                assert client.get(f"{meshbot.url}/healthz").status_code == 200
                assert client.get(f"{meshbot.url}/healthz").status_code == 200
            assert meshbot.serving
        finally:
            for sock in idle:
                sock.close()


class _PassCounter:
    """Sits in the server's socket map and counts the loop's passes (each pass asks every entry ``readable``).

    Never readable or writable, so never polled: it only observes."""

    accepting = False

    def __init__(self) -> None:
        self.passes = 0
        self._pair = socket.socketpair()

    def fileno(self) -> int:
        return self._pair[0].fileno()

    def readable(self) -> bool:
        self.passes += 1
        return False

    def writable(self) -> bool:
        return False

    def close(self) -> None:
        for sock in self._pair:
            sock.close()


@contextlib.contextmanager
def serving(app, **adjustments) -> Iterator[tuple[int, _PassCounter]]:
    """The server on a free port, its loop in a thread, with a pass counter in its socket map: (port, counter)."""
    server = create_http_server(app, host="127.0.0.1", port=0, loop_seconds=0.05, **adjustments)
    assert isinstance(server, BaseWSGIServer)  # one address: one server, not a MultiSocketServer
    counter = _PassCounter()
    server._map[counter.fileno()] = counter  # waitress's socket map (asyncore's), where the loop finds channels
    loop = threading.Thread(target=server.run, daemon=True)
    loop.start()
    try:
        yield server.effective_port, counter
    finally:
        server.close()
        loop.join(5)


def _busy_app(environ, start_response):
    # About a millisecond of Python in short steps between calls that let go of the GIL, as the Slack ack's
    # signature check, replay key (SQLite) and Bolt do: with many such threads, whoever holds the buffer's lock
    # waits for the GIL.
    environ["wsgi.input"].read()
    total = 0
    for _ in range(8):
        total += sum(i * i for i in range(2_500))
        time.sleep(0)
    body = f"{total}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


LOAD = """
import http.client, sys
from concurrent.futures import ThreadPoolExecutor
port, senders, each = (int(a) for a in sys.argv[1:])
def send(_):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for _ in range(each):
        connection.request("POST", "/", body=b"x" * 1024)
        response = connection.getresponse()
        response.read()
        assert response.status == 200, response.status
    connection.close()
    return each
with ThreadPoolExecutor(senders) as pool:
    print(sum(pool.map(send, range(senders))))
"""
"""50 keep-alive senders, each sending again once answered (as bench/bench_slack.py), from a process of their own:
in this one they would share the server's GIL and change what is measured."""


def test_the_socket_loop_does_not_go_round_while_requests_are_being_answered():
    """waitress's own channel made the loop spin while a request's thread held its output buffer's lock (42 passes
    per request on the ack bench, each asking every open connection); a pass now happens per socket event."""
    senders, each = 50, 20
    with serving(_busy_app, threads=16) as (port, counter):
        before = counter.passes
        load = subprocess.run([sys.executable, "-c", LOAD, str(port), str(senders), str(each)],
                              capture_output=True, text=True, timeout=120)
        passes = counter.passes - before
    assert load.returncode == 0, load.stderr
    answered = int(load.stdout)
    assert answered == senders * each
    # Measured on this machine: 0.17-0.19 passes per request (events of several connections share a pass), idle or
    # loaded; waitress's own channel 0.7-1.7, and 42 on the ack bench, whose requests hold the GIL longer.
    assert passes / answered < 0.4, f"{passes} passes of the socket loop for {answered} requests"


def test_the_socket_loop_waits_a_fraction_of_a_second_between_checks_instead_of_spinning():
    """waitress parses its loop timeout as an int: the tests' 0.05 s became 0, and an idle loop spun a whole core."""
    with serving(_busy_app, threads=1) as (_, counter):
        time.sleep(1.0)
        passes = counter.passes
    assert 5 <= passes <= 40, f"{passes} passes in an idle second with a 0.05 s timeout (about 20 expected)"


@pytest.mark.parametrize("seconds", ["0", "0.001", "-1", "nan"])
def test_a_socket_loop_timeout_that_would_spin_is_refused_at_startup(seconds):
    with pytest.raises(SettingsError, match="MESHBOT_HTTP_LOOP_SECONDS"):
        Settings.load({"MESHBOT_HTTP_LOOP_SECONDS": seconds})


@pytest.mark.parametrize("size", [64 * 1024, 4 * 1024 * 1024])
def test_an_answer_larger_than_the_socket_buffer_is_delivered_whole(size):
    """Output the request's thread could not send at once (the socket's buffer full) is sent by the loop when the
    request ends, and above waitress's high watermark while it runs: nothing waits on a loop that is not watching."""
    payload = os.urandom(1024) * (size // 1024)

    def big_app(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(size))])
        # In pieces, as a streamed body: each write goes out while the request still runs.
        return [payload[i:i + 65536] for i in range(0, size, 65536)]

    with serving(big_app, threads=2, outbuf_high_watermark=256 * 1024) as (port, _), \
            httpx.Client(timeout=10) as client:
        response = client.get(f"http://127.0.0.1:{port}/")
    assert response.status_code == 200
    assert response.content == payload
