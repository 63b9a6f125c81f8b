"""waitress's socket loop, fixed in three ways, each measured.

1. **No ``select()``.**  waitress's loop uses ``select()`` unless told ``asyncore_use_poll``, and ``select()``
   refuses a file descriptor above 1023 (``FD_SETSIZE``): ``ValueError: filedescriptor out of range``, raised
   from the loop, which ends the HTTP thread for good.  meshbot keeps up to ``CONNECTION_LIMIT`` (1,000)
   connections, so about a thousand idle connections, which anyone who can reach the port can open without a
   signature, stopped every Slack ack, webhook and probe until the liveness probe restarted the pod (measured:
   1,010 idle connections, then ``/healthz`` timed out).  ``poll()`` has no such limit.

2. **No busy loop while a request is answered.**  waitress (3.0) lets the request's thread write its response:
   ``HTTPChannel.write_soon`` appends to the channel's output buffer and sends at once, holding the buffer's
   lock.  Meanwhile the loop asks every channel ``writable()`` on each pass, and waitress's answer is "the
   buffer holds a byte".  So between the append and the send, the loop sees a writable socket, cannot take the
   lock (``_flush_some_if_lockable`` gives up), and goes round again at once: ``poll()`` returns immediately
   for a writable socket.  Every pass asks every open connection, and holds the GIL the answering thread
   needs to finish the send.  Measured on ``bench/bench_slack.py`` (50 keep-alive senders): 42 passes per
   request, and 57 % of the serving process's GIL samples (py-spy ``--gil``) in the loop; with the channel
   below, 1.2 passes per request and the ack p99 of the bare ack path 389 -> 131 ms.

   The loop need not watch a channel for writing while a request's thread runs on it: that thread sends its
   own output (waitress's ``send_bytes`` is 1, so every write is flushed at once), and ``service`` wakes the
   loop when the request ends, which then sends whatever the socket did not take.  The one case the loop is
   needed meanwhile is waitress's own back-pressure: above ``outbuf_high_watermark`` the thread waits for the
   loop to drain the buffer, so the channel stays writable then, as before.

3. **The loop's timeout as given.**  waitress parses ``asyncore_loop_timeout`` as an ``int``, so the tests' 0.05 s
   (and any ``MESHBOT_HTTP_LOOP_SECONDS`` under 1) became 0: ``poll()`` never waited, and the loop used a whole
   core doing nothing (30 passes per request in this module's test, every test bot spinning).  The seconds are
   set on the server's adjustments after parsing; waitress's loop hands them to ``poll()`` in milliseconds.
"""

from __future__ import annotations

from typing import Any

from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer, MultiSocketServer, create_server

from bot.settings import MIN_LOOP_SECONDS


class AnsweringChannel(HTTPChannel):
    """waitress's channel, not watched for writing while a request's own thread is writing its answer."""

    def writable(self) -> bool:
        if self.requests and self.total_outbufs_len <= self.adj.outbuf_high_watermark:
            # The request's thread sends this output itself; ``service`` wakes the loop when the request ends.
            return bool(self.will_close or self.close_when_flushed)
        return bool(super().writable())


def create_http_server(app: Any, *, loop_seconds: float = 1.0, **adjustments: Any) -> BaseWSGIServer | MultiSocketServer:
    """``waitress.create_server`` with ``poll()``, ``AnsweringChannel`` and a loop that waits ``loop_seconds``
    between checks (how soon a stop closes idle connections); this module's docstring says why."""
    if loop_seconds < MIN_LOOP_SECONDS:
        raise ValueError(f"the socket loop's timeout must be at least {MIN_LOOP_SECONDS} s, not {loop_seconds}")
    sockets: dict[int, Any] = {}
    server = create_server(app, map=sockets, asyncore_use_poll=True, **adjustments)
    server.adj.asyncore_loop_timeout = loop_seconds  # type: ignore[assignment]  # waitress would truncate it
    for dispatcher in sockets.values():  # one listening server per address (MultiSocketServer for several)
        if isinstance(dispatcher, BaseWSGIServer):
            dispatcher.channel_class = AnsweringChannel
    return server
