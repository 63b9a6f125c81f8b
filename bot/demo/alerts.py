"""The bundled outage's alerts, as Alertmanager would deliver them to ``/alertmanager`` (webhook version 4).

Labels are the ones the rules in ``deploy/prometheus/meshbot-alerts.rules.yaml`` put
on each alert and the playbooks read (``namespace``, ``pod``,
``destination_service_*``); names match the playbooks' ``alertname``.  Payload shape:
prometheus.io/docs/alerting/latest/configuration/#webhook_config.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone

from bot.incidents.alerts import AlertStatus
from commands.times import rfc3339

ZERO_TIME = "0001-01-01T00:00:00Z"


@dataclass(frozen=True)
class DemoAlert:
    name: str
    labels: dict[str, str]
    summary: str
    description: str = ""
    group_by: tuple[str, ...] = ("alertname", "namespace")
    annotations: dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """What the console's menu sends back: the alert's name and its identifying labels."""
        return self.name + "".join(f"/{self.labels[k]}" for k in sorted(self.labels) if k not in ("severity",))


CATALOGUE = (
    DemoAlert("IstiodDown", {"namespace": "istio-system", "severity": "critical"},
              "istiod in istio-system is not answering Prometheus",
              "No istiod instance in istio-system has answered Prometheus for 1 minute."),
    DemoAlert("IstiodHighMemory", {"namespace": "istio-system", "pod": "istiod-5d8f7c9b6-qx7wz",
                                   "severity": "warning"},
              "istiod istiod-5d8f7c9b6-qx7wz is at 98% of its memory limit"),
    DemoAlert("ServiceMeshHighErrorRate", {"destination_service_name": "payment-service",
                                           "destination_service_namespace": "prod", "severity": "critical"},
              "payment-service.prod answers 31% 5xx",
              group_by=("alertname", "destination_service_namespace")),
    DemoAlert("EnvoySidecarCrashLoop", {"namespace": "prod", "pod": "payment-service-7d9f8c6b5-x2x4k",
                                        "container": "istio-proxy", "severity": "critical"},
              "The istio-proxy sidecar of prod/payment-service-7d9f8c6b5-x2x4k is crash-looping"),
    DemoAlert("IstioCertificateExpiringSoon", {"namespace": "istio-system", "severity": "critical"},
              "The mesh root certificate in istio-system expires in under 7 days"),
)
BY_KEY = {alert.key: alert for alert in CATALOGUE}


def _fingerprint(labels: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(labels, sort_keys=True).encode()).hexdigest()[:16]


def webhook_body(alert: DemoAlert, state: AlertStatus, *, starts_at: datetime,
                 now: datetime | None = None) -> bytes:
    """One notification for one alert, as Alertmanager POSTs it to a webhook receiver."""
    now = now or datetime.now(timezone.utc)
    labels = {"alertname": alert.name, **alert.labels}
    group = {k: labels[k] for k in alert.group_by if k in labels}
    annotations = {"summary": alert.summary, **({"description": alert.description} if alert.description else {}),
                   **alert.annotations}
    stamp, ended = rfc3339(starts_at), rfc3339(now)
    body = {
        "version": "4", "receiver": "meshbot", "status": str(state),
        "groupKey": "{}:{" + ", ".join(f'{k}="{v}"' for k, v in group.items()) + "}",
        "truncatedAlerts": 0, "groupLabels": group, "commonLabels": labels, "commonAnnotations": annotations,
        "externalURL": "http://alertmanager.demo:9093",
        "alerts": [{"status": str(state), "labels": labels, "annotations": annotations, "startsAt": stamp,
                    "endsAt": ended if state == AlertStatus.RESOLVED else ZERO_TIME,
                    "generatorURL": "http://prometheus.demo:9090/graph", "fingerprint": _fingerprint(labels)}],
    }
    return json.dumps(body).encode()
