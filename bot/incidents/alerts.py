"""Alertmanager webhook payloads (version 4) -> typed notifications.  Pure: no HTTP, no SQLite.

Everything is validated before anything is stored: a payload missing a
required field is refused whole with a reason, never half-processed.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from enum import StrEnum
from typing import Any

from commands.errors import UserError
from commands.times import parse_rfc3339

SEVERITY_ORDER = ("critical", "error", "warning", "info", "none")
# Labels that name where an alert points in a mesh (Prometheus/Istio conventions).
NAMESPACE_LABELS = ("namespace", "destination_service_namespace", "source_namespace", "exported_namespace")
SERVICE_LABELS = ("destination_service_name", "service", "destination_workload", "app")
ZERO_TIME = "0001-01-01T00:00:00Z"
EARLIEST_TIME = datetime(2000, 1, 1, tzinfo=timezone.utc)
"""No alert of a running system started before this: an earlier time is a broken clock or a forged body."""
MAX_FUTURE = timedelta(days=1)
"""Prometheus sets a firing alert's endsAt a few minutes ahead (its resend delay); a day is beyond any of that."""


class PayloadError(UserError):
    """The webhook body is not a valid Alertmanager notification; the message says why."""


class AlertStatus(StrEnum):
    FIRING = "firing"
    RESOLVED = "resolved"


@dataclass(frozen=True)
class Alert:
    status: AlertStatus
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    starts_at: datetime
    ends_at: datetime | None
    fingerprint: str
    generator_url: str

    @property
    def name(self) -> str:
        return self.labels.get("alertname", "unnamed alert")

    @property
    def occurrence(self) -> str:
        """One firing of one alert: the same fingerprint firing again later is a new occurrence."""
        return f"{self.fingerprint}@{self.starts_at.isoformat()}"

    @property
    def summary(self) -> str:
        return self.annotations.get("summary") or self.annotations.get("description") or self.name

    @property
    def namespace(self) -> str | None:
        return next((self.labels[n] for n in NAMESPACE_LABELS if self.labels.get(n)), None)


@dataclass(frozen=True)
class Notification:
    group_key: str
    status: AlertStatus
    receiver: str
    group_labels: Mapping[str, str]
    common_labels: Mapping[str, str]
    common_annotations: Mapping[str, str]
    external_url: str
    alerts: tuple[Alert, ...]
    truncated_alerts: int = 0

    @property
    def alertname(self) -> str:
        return self.common_labels.get("alertname") or self.group_labels.get("alertname") or (
            self.alerts[0].name if self.alerts else "alert")

    @property
    def title(self) -> str:
        summary = self.common_annotations.get("summary")
        return f"{self.alertname}: {summary}" if summary else self.alertname

    @property
    def severity(self) -> str:
        """The most severe ``severity`` label of the group's alerts."""
        found = {a.labels.get("severity", "").lower() for a in self.alerts} | {
            self.common_labels.get("severity", "").lower()}
        for level in SEVERITY_ORDER:
            if level in found:
                return level
        return next((s for s in sorted(found) if s), "none")

    @property
    def namespaces(self) -> list[str]:
        return _label_values(self.alerts, NAMESPACE_LABELS)

    @property
    def services(self) -> list[str]:
        return _label_values(self.alerts, SERVICE_LABELS)

    @property
    def labels_for_playbook(self) -> dict[str, str]:
        """Labels shared by the group, plus those of its first alert where the group says nothing."""
        # A first notification may carry alerts that already resolved; the playbook follows a firing one.
        representative = next(iter(self.firing()), self.alerts[0] if self.alerts else None)
        labels = dict(representative.labels) if representative else {}
        labels.update(self.common_labels)
        return labels

    def firing(self) -> list[Alert]:
        return [a for a in self.alerts if a.status == AlertStatus.FIRING]


def _label_values(alerts: Sequence[Alert], names: Sequence[str]) -> list[str]:
    values = {a.labels[n] for a in alerts for n in names if a.labels.get(n)}
    return sorted(values)


# -- parsing -------------------------------------------------------------------------


# -- occurrences already ended (a resolve that arrived before its late firing) -----------------


EndedAlerts = Mapping[str, Sequence[tuple[datetime, datetime]]]
"""fingerprint -> the (startsAt, endsAt) periods Alertmanager already reported resolved."""


def ended_alerts(bodies: Iterable[str]) -> dict[str, list[tuple[datetime, datetime]]]:
    """The resolved alerts of stored notification bodies, by fingerprint."""
    ended: dict[str, list[tuple[datetime, datetime]]] = {}
    for body in bodies:
        for alert in parse_notification(body.encode()).alerts:
            if alert.status == AlertStatus.RESOLVED and alert.ends_at is not None:
                ended.setdefault(alert.fingerprint, []).append((alert.starts_at, alert.ends_at))
    return ended


def ended_before(alert: Alert, ended: EndedAlerts) -> bool:
    """A firing that started inside a period already reported resolved is a late copy, not a new firing."""
    return alert.status == AlertStatus.FIRING and any(
        start <= alert.starts_at <= end for start, end in ended.get(alert.fingerprint, ()))


def as_ended(alert: Alert, ended: EndedAlerts) -> Alert:
    """The alert as it stands once the resolves already received are taken into account."""
    if not ended_before(alert, ended):
        return alert
    end = max(end for start, end in ended[alert.fingerprint] if start <= alert.starts_at <= end)
    return dataclasses.replace(alert, status=AlertStatus.RESOLVED, ends_at=end)


# -- parsing -------------------------------------------------------------------------


def parse_notification(body: bytes, now: datetime | None = None) -> Notification:
    """Decode and validate a webhook body; raises PayloadError with the reason.

    Times must fall between 2000 and a day after ``now`` (default: the current time)."""
    try:
        text = body.decode("utf-8")  # what Alertmanager sends; also what the incident log can store
    except UnicodeDecodeError as exc:
        raise PayloadError(f"body is not UTF-8 (byte {exc.start})") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise PayloadError(f"body is not JSON: {exc}") from None
    except RecursionError:
        raise PayloadError("body is not a webhook payload: JSON nested too deeply") from None
    if _has_lone_surrogate(text, data):
        raise PayloadError("body contains a \\u escape of half a UTF-16 surrogate pair, which is not text")
    if not isinstance(data, dict):
        raise PayloadError("body must be a JSON object")
    version = data.get("version")
    if version is not None and str(version) != "4":
        raise PayloadError(f"unsupported webhook version {version!r} (meshbot reads version 4)")
    group_key = _require(data, "groupKey", str, non_empty=True)
    status = _status(data.get("status"), "status")
    alerts_data = _require(data, "alerts", list)
    if not alerts_data:
        raise PayloadError("alerts: empty; a notification carries at least one alert")
    latest = (now or datetime.now(timezone.utc)) + MAX_FUTURE
    alerts = tuple(_parse_alert(item, i, latest) for i, item in enumerate(alerts_data))
    return Notification(
        group_key=group_key,
        status=status,
        receiver=str(data.get("receiver") or ""),
        group_labels=_labels(data.get("groupLabels"), "groupLabels"),
        common_labels=_labels(data.get("commonLabels"), "commonLabels"),
        common_annotations=_labels(data.get("commonAnnotations"), "commonAnnotations"),
        external_url=str(data.get("externalURL") or ""),
        alerts=alerts,
        truncated_alerts=_count(data.get("truncatedAlerts"), "truncatedAlerts"),
    )


def _count(value: Any, where: str) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise PayloadError(f"{where}: expected a non-negative integer, got {value!r}"[:200])
    return value


def _has_lone_surrogate(text: str, data: Any) -> bool:
    """JSON may escape half a surrogate pair (``\\ud800``): Python accepts it, UTF-8 (and SQLite) cannot hold it."""
    if "\\u" not in text:
        return False
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _require(data: Mapping[str, Any], key: str, kind: type, *, non_empty: bool = False, where: str = "") -> Any:
    if key not in data:
        raise PayloadError(f"{where}{key}: required field is missing")
    value = data[key]
    if not isinstance(value, kind):
        raise PayloadError(f"{where}{key}: expected {kind.__name__}, got {type(value).__name__}")
    if non_empty and not value:
        raise PayloadError(f"{where}{key}: must not be empty")
    return value


def _status(value: Any, where: str) -> AlertStatus:
    try:
        return AlertStatus(value)
    except ValueError:
        raise PayloadError(f"{where}: expected 'firing' or 'resolved', got {value!r}") from None


def _labels(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise PayloadError(f"{where}: expected an object of string values")
    return dict(value)


def _time(value: Any, where: str, latest: datetime) -> datetime | None:
    if not isinstance(value, str):
        raise PayloadError(f"{where}: expected an RFC 3339 time string")
    if value.startswith("0001-01-01"):
        return None  # Go's zero time: Alertmanager's "not set"
    try:
        moment = parse_rfc3339(value)
    except ValueError:
        raise PayloadError(f"{where}: {value!r} is not an RFC 3339 time") from None
    if not EARLIEST_TIME <= moment <= latest:
        raise PayloadError(f"{where}: {value[:40]!r} is outside the accepted range (2000-01-01 to a day from now)")
    return moment


def _parse_alert(item: Any, index: int, latest: datetime) -> Alert:
    where = f"alerts[{index}]."
    if not isinstance(item, dict):
        raise PayloadError(f"alerts[{index}]: expected an object")
    labels = _labels(_require(item, "labels", dict, where=where), f"{where}labels")
    if not labels.get("alertname"):
        raise PayloadError(f"{where}labels.alertname: required label is missing")
    starts_at = _time(_require(item, "startsAt", str, where=where), f"{where}startsAt", latest)
    if starts_at is None:
        raise PayloadError(f"{where}startsAt: must be a real time")
    return Alert(
        status=_status(item.get("status"), f"{where}status"),
        labels=labels,
        annotations=_labels(item.get("annotations"), f"{where}annotations"),
        starts_at=starts_at,
        ends_at=_time(item.get("endsAt", ZERO_TIME), f"{where}endsAt", latest),
        fingerprint=_require(item, "fingerprint", str, non_empty=True, where=where),
        generator_url=str(item.get("generatorURL") or ""),
    )
