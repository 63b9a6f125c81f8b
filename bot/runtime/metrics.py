"""Prometheus metrics for ``/metrics``: one registry per server, so tests can run several side by side."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

ACK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 3.0, 5.0)
DIAGNOSIS_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("meshbot_requests", "Inbound requests by kind "
                                "(slash_command, block_actions, event, alertmanager, rejected)",
                                ["kind"], registry=self.registry)
        self.rejected = Counter("meshbot_slack_requests_rejected", "Requests to /slack/events refused before "
                                "Bolt saw them, by reason (missing_signature, bad_timestamp, stale_timestamp, "
                                "bad_signature: 401; malformed: 400)", ["reason"], registry=self.registry)
        self.duplicates = Counter("meshbot_slack_duplicates", "Slack deliveries answered without running again, "
                                  "by transport (http: replay or X-Slack-Retry-Num; socket_mode: envelope_id)",
                                  ["transport"], registry=self.registry)
        self.ack_seconds = Histogram("meshbot_slack_ack_seconds", "Time to answer a Slack request (the ack)",
                                     buckets=ACK_BUCKETS, registry=self.registry)
        self.background_wait_seconds = Histogram(
            "meshbot_background_wait_seconds", "How long background work waited for the answers in flight "
            "before it started (MESHBOT_ANSWERS_FIRST_SECONDS caps it; bot.runtime.priority)",
            buckets=ACK_BUCKETS, registry=self.registry)
        self.diagnosis_seconds = Histogram("meshbot_diagnosis_seconds", "Duration of diagnostics by check",
                                           ["check"], buckets=DIAGNOSIS_BUCKETS, registry=self.registry)
        self.findings_posted = Counter("meshbot_findings_posted", "Findings posted to Slack by level",
                                       ["level"], registry=self.registry)
        self.slack_errors = Counter("meshbot_slack_api_errors", "Slack Web API calls that failed after retries",
                                    ["method", "error"], registry=self.registry)
        self.outbox_pending = Gauge("meshbot_outbox_pending", "Slack posts recorded but not yet delivered",
                                    registry=self.registry)
        self.notifications_failed = Counter("meshbot_alert_notifications_failed",
                                            "Stored Alertmanager notifications that could not be applied "
                                            "(kept in the notifications table with the error)",
                                            registry=self.registry)

        self.audit_alarms = Counter("meshbot_audit_alarms", "Evidence of tampering found while running (an anchor "
                                    "that is no ancestor of the log's head, an execution without authority in the "
                                    "keyed log); each is an audit_alarm event that verify reports", registry=self.registry)

    def notification_failed(self) -> None:
        self.notifications_failed.inc()

    def slack_error(self, method: str, error: str) -> None:
        self.slack_errors.labels(method=method, error=error).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
