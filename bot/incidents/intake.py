"""``POST /alertmanager``: authenticate, size-check, validate, store — then answer at once.

Alertmanager retries a webhook that times out or fails, so the handler does
no work beyond storing the notification; the incident flow applies it in the
background.  A missing or wrong bearer token is 401 (compared in constant
time), an oversized body 413 (before it is read), an invalid payload 400 with
the reason — and in none of those cases is anything stored.
"""

from __future__ import annotations

import hmac
import logging

from bot.incidents.alerts import PayloadError
from bot.incidents.flow import IncidentFlow
from bot.runtime.metrics import Metrics
from bot.runtime.routes import Answer, json_answer

log = logging.getLogger(__name__)


def alertmanager_route(flow: IncidentFlow, token: str | None, metrics: Metrics):
    expected = f"Bearer {token}".encode() if token else None

    def receive(environ: dict, body: bytes) -> Answer:
        metrics.requests.labels(kind="alertmanager").inc()
        if expected is None:
            return json_answer(401, {"error": "ALERTMANAGER_TOKEN is not configured; meshbot refuses all alerts"})
        presented = environ.get("HTTP_AUTHORIZATION", "").encode()
        if not hmac.compare_digest(presented, expected):
            log.warning("refused an Alertmanager webhook from %s: missing or wrong bearer token",
                        environ.get("REMOTE_ADDR", "?"))
            return json_answer(401, {"error": "missing or wrong bearer token"})
        try:
            notification_id = flow.accept(body)
        except PayloadError as exc:
            return json_answer(400, {"error": str(exc)})
        return json_answer(200, {"status": "accepted", "notification": notification_id})

    return receive
