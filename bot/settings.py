"""One Settings object from environment variables and an optional YAML file, validated at start-up.

Over 450 lines because it is the one table of every setting (STYLE: configuration in one place).

Every knob meshbot has is a field here with a default and a row in docs/settings.md; nothing
else reads ``os.environ``.  Precedence: environment, then ``--config`` YAML,
then the default.  Secrets may also come from files (``SLACK_BOT_TOKEN_FILE``),
the way Kubernetes mounts them.  A missing or malformed value raises
``SettingsError`` whose one-line message names the variable.
"""

from __future__ import annotations

import math
import os
import re
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from commands.errors import MeshbotError
from commands.thresholds import DEFAULT_THRESHOLDS, REMINDER_DAYS_TEXT
from commands.validation import NAMESPACE_RULE, is_dns1123_label, namespace_problem


class SettingsError(MeshbotError):
    """A setting is missing or malformed; the message names it."""


class Audience(StrEnum):
    """Who may do something (``bot.slack.roles`` decides membership)."""

    EVERYONE = "everyone"
    """Anyone in a channel of MESHBOT_ALLOWED_CHANNELS."""
    RESPONDERS = "responders"
    """MESHBOT_RESPONDERS and MESHBOT_APPROVERS (users, or members of the user groups)."""
    APPROVERS = "approvers"
    """MESHBOT_APPROVERS only."""


_CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{2,}$")
_USER_ID = re.compile(r"^[UW][A-Z0-9]{2,}$")
_USERGROUP_ID = re.compile(r"^S[A-Z0-9]{2,}$")


def _text(value: str) -> str:
    return value


DEFAULT_ROLLUP_PER_MINUTE = 10
"""Slack takes about one post a second per channel (docs.slack.dev, chat.postMessage rate limits): a new incident
costs a top post and 3-4 replies (queued note, triage, timeline, alert updates), so 10 a minute already spend most of
that minute; and a responder cannot read more than a few new top-level posts a minute (docs/incidents.md)."""
MAX_INT = 1_000_000_000
"""No count, port, day or second meshbot reads comes near this; a larger one is a typo, not a setting."""
MAX_SECONDS = 86_400.0
"""A day: every duration in seconds (timeouts, leases, grace periods, batches) stays below it.  float() also
reads 'nan' and 'inf': with inf as MESHBOT_SHUTDOWN_GRACE_SECONDS a SIGTERM ended in an OverflowError (exit 1)."""


def _int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ValueError("not a whole number") from None
    if abs(number) > MAX_INT:
        raise ValueError(f"out of range (at most {MAX_INT:,})")
    return number


def _float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ValueError("not a number") from None
    if not math.isfinite(number):
        raise ValueError("not a finite number (nan and inf are refused)")
    return number


def _port(value: str) -> int:
    number = _int(value)
    if not 0 <= number <= 65535:
        raise ValueError("not a port number (0-65535)")
    return number


def _positive_int(value: str) -> int:
    number = _int(value)
    if number < 1:
        raise ValueError("must be at least 1")
    return number


def _positive_float(value: str) -> float:
    number = _float(value)
    if number <= 0:
        raise ValueError("must be greater than 0")
    if number > MAX_SECONDS:
        raise ValueError(f"must be at most {MAX_SECONDS:.0f} (a day)")
    return number


DEFAULT_MAX_DIAGNOSES = 4
"""Diagnoses reading the cluster and running checks at once.  A diagnosis waits on the API server while it lists and
is CPU-bound once its lists are in (JSON decoding, checks), and the Deployment's CPU limit is one core: a few at once
overlap the waiting; more only make each slower and hold more snapshots in memory together (docs/deployment.md,
"Resources")."""
MAX_DIAGNOSES = 64
"""More diagnoses at once than this only share the CPU limit more thinly while each holds its snapshot."""
DEFAULT_CLUSTER_REUSE_SECONDS = 10.0
"""How long a namespace's pods (or any read no watch keeps fresh) serve further diagnoses: an alert storm's
diagnoses arrive within seconds of each other and share one read; a diagnosis a minute later reads again."""
MAX_REUSE_SECONDS = 300.0
"""Pods read longer ago than this would hide a recovery or a new crash from the diagnosis that reuses them."""


def _max_diagnoses(value: str) -> int:
    number = _positive_int(value)
    if number > MAX_DIAGNOSES:
        raise ValueError(f"must be at most {MAX_DIAGNOSES} (each running diagnosis holds its snapshot in memory)")
    return number


MIN_LOOP_SECONDS = 0.01
"""The HTTP server's socket loop waits at least this long between checks: ``poll()`` takes whole milliseconds, and
much shorter waits make the loop a busy one (``bot.server.sockets``)."""


def _loop_seconds(value: str) -> float:
    number = _positive_float(value)
    if number < MIN_LOOP_SECONDS:
        raise ValueError(f"must be at least {MIN_LOOP_SECONDS} (a shorter wait is a busy loop)")
    return number


MAX_ANSWERS_FIRST_SECONDS = 3.0
"""Slack's own deadline for an ack: background work never waits longer than an ack may take."""


def _seconds_up_to(maximum: float, *, zero: str, beyond: str) -> Callable[[str], float]:
    """A duration from 0 (``zero``: what 0 means) to ``maximum`` (``beyond``: why no more)."""

    def parse(value: str) -> float:
        number = _float(value)
        if number < 0:
            raise ValueError(f"must be 0 ({zero}) or more")
        if number > maximum:
            raise ValueError(f"must be at most {maximum:.0f}{beyond}")
        return number

    return parse


_answers_first_seconds = _seconds_up_to(
    MAX_ANSWERS_FIRST_SECONDS, zero="background work never waits for answers",
    beyond=" (Slack's deadline for an ack); longer only delays the work behind a storm")
_reuse_seconds = _seconds_up_to(MAX_REUSE_SECONDS, zero="share only reads in flight",
                                beyond=": older pods would hide a recovery or a new crash")


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError("expected true or false")


def _channel(value: str) -> str:
    if not _CHANNEL_ID.match(value):
        raise ValueError("expected a Slack channel ID like C0123ABCD (not a #name)")
    return value


def _channels(value: str) -> tuple[str, ...]:
    return tuple(_channel(v.strip()) for v in value.split(",") if v.strip())


def _approvers(value: str) -> tuple[str, ...]:
    items = tuple(v.strip() for v in value.split(",") if v.strip())
    for item in items:
        if not (_USER_ID.match(item) or _USERGROUP_ID.match(item)):
            raise ValueError(f"{item!r} is neither a Slack user ID (U…/W…) nor a user group ID (S…)")
    return items


def _base_url(value: str) -> str:
    """An http(s) URL with a host and no credentials, query or fragment (they would end up in logs)."""
    try:
        parts = urllib.parse.urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise ValueError("not a valid URL") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError("expected an http:// or https:// URL")
    if not parts.hostname:
        raise ValueError("the URL has no host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("the URL must not carry credentials (user:password@); tokens come from their own settings")
    if parts.query or parts.fragment:
        raise ValueError("the URL must not have a query or fragment")
    return value


def _url(value: str) -> str:
    """A base URL other paths are appended to (``SLACK_API_URL``): always ends with ``/``."""
    value = _base_url(value)
    return value if value.endswith("/") else value + "/"


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _log_level(value: str) -> str:
    if value.upper() not in LOG_LEVELS:
        raise ValueError(f"expected one of {', '.join(LOG_LEVELS)}")
    return value.upper()


def _audience(value: str) -> Audience:
    try:
        return Audience(value.strip().lower())
    except ValueError:
        raise ValueError(f"expected one of {', '.join(a.value for a in Audience)}") from None


def _namespace(value: str) -> str:
    if namespace_problem(value):
        raise ValueError(f"not a valid namespace name ({NAMESPACE_RULE})")
    return value


def _timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError("unknown time zone (use an IANA name like Europe/Berlin or UTC)") from None
    return value


def _secrets(value: str) -> tuple[tuple[str, str], ...]:
    """``ns/name,ns/name`` -> ((ns, name), ...)."""
    out = []
    for item in (v.strip() for v in value.split(",") if v.strip()):
        namespace, slash, name = item.partition("/")
        if not slash or not is_dns1123_label(namespace) or not name:
            raise ValueError(f"{item!r}: expected NAMESPACE/NAME")
        out.append((namespace, name))
    return tuple(out)


def _days(value: str) -> tuple[int, ...]:
    days = tuple(sorted({int(v) for v in value.split(",") if v.strip()}, reverse=True))
    if not days or any(d < 0 for d in days):
        raise ValueError(f"expected whole numbers of days like {REMINDER_DAYS_TEXT}")
    return days


def _audit_key(value: str) -> str:
    if len(value) < 32:
        raise ValueError("must be at least 32 characters (e.g. `openssl rand -hex 32`)")
    return value


def _database_url(value: str) -> str:
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in ("postgresql", "postgres") or not parts.hostname:
        raise ValueError("must be a PostgreSQL URL, postgresql://USER@HOST:PORT/DATABASE")
    if parts.password is not None:
        raise ValueError("must not contain the password: put it in MESHBOT_DATABASE_PASSWORD_FILE")
    return value


def _cron_time(value: str) -> str:
    if not re.match(r"^([01]\d|2[0-3]):[0-5]\d$", value):
        raise ValueError("expected HH:MM (24-hour clock)")
    return value


def _setting(env: str, parse: Callable[[str], Any] = _text, *, default: Any = None, secret: bool = False,
             doc: str = "") -> Any:
    return field(default=default, metadata={"env": env, "parse": parse, "secret": secret, "doc": doc})


@dataclass(frozen=True)
class Settings:
    slack_bot_token: str | None = _setting("SLACK_BOT_TOKEN", secret=True,
                                           doc="Bot token (`xoxb-…`). Required by `meshbot serve`.")
    slack_signing_secret: str | None = _setting("SLACK_SIGNING_SECRET", secret=True,
                                                doc="Signing secret that verifies every request from Slack. "
                                                    "Required unless Socket Mode is used.")
    slack_app_token: str | None = _setting("SLACK_APP_TOKEN", secret=True,
                                           doc="App-level token (`xapp-…`); when set, meshbot also connects "
                                               "in Socket Mode (no public ingress needed).")
    slack_api_url: str = _setting("SLACK_API_URL", _url, default="https://slack.com/api/",
                                  doc="Slack Web API base URL (tests point it at a fake).")
    db_path: str = _setting("MESHBOT_DB", default="meshbot.db", doc="SQLite database file (incident log).")
    database_url: str | None = _setting("MESHBOT_DATABASE_URL", _database_url,
                                        doc="PostgreSQL for several replicas (`postgresql://USER@HOST:PORT/DB`, "
                                            "no password in it); unset: SQLite at MESHBOT_DB. See docs/deployment.md.")
    database_password: str | None = _setting("MESHBOT_DATABASE_PASSWORD", secret=True,
                                             doc="Password of MESHBOT_DATABASE_URL's user (or "
                                                 "MESHBOT_DATABASE_PASSWORD_FILE).")
    host: str = _setting("MESHBOT_HOST", default="0.0.0.0", doc="Address the HTTP server binds.")
    port: int = _setting("MESHBOT_PORT", _port, default=3000, doc="Port of the HTTP server.")
    channel: str | None = _setting("MESHBOT_CHANNEL", _channel,
                                   doc="Incident channel ID (alerts and reminders post here).")
    audit_channel: str | None = _setting("MESHBOT_AUDIT_CHANNEL", _channel,
                                         doc="Channel ID for the audit log's head when incidents change state "
                                             "(unset: only the anchor file and Lease; never in incident threads).")
    allowed_channels: tuple[str, ...] = _setting("MESHBOT_ALLOWED_CHANNELS", _channels, default=(),
                                                 doc="Comma-separated channel IDs where `/mesh` may be used; "
                                                     "empty: everywhere the app is invited.")
    kubeconfig: str | None = _setting("KUBECONFIG", doc="kubeconfig file; unset: in-cluster service account or "
                                                        "`~/.kube/config`.")
    kube_context: str | None = _setting("MESHBOT_KUBE_CONTEXT", doc="kubeconfig context.")
    istiod_url: str | None = _setting("MESHBOT_ISTIOD_URL", _base_url, doc="istiod monitoring URL "
                                                              "(`http://istiod.istio-system:15014`; istiod "
                                                              "answers its /debug endpoints there only with "
                                                              "MESHBOT_ISTIOD_TOKEN_FILE). Unset: discover "
                                                              "istiod pods and reach each through a "
                                                              "port-forward.")
    istiod_token_file: str | None = _setting(
        "MESHBOT_ISTIOD_TOKEN_FILE",
        doc="Token sent as `Authorization: Bearer` when istiod is reached directly (MESHBOT_ISTIOD_URL or "
            "MESHBOT_ISTIOD_DIRECT): a projected service-account token with audience `istio-ca`, which istiod "
            "verifies with a TokenReview. Unset: none (istiod then answers /debug/* only through the "
            "port-forward).")
    istiod_direct: bool = _setting(
        "MESHBOT_ISTIOD_DIRECT", _bool, default=False,
        doc="In-cluster, reach istiod pods on their pod IP instead of a port-forward. istiod answers /debug/* "
            "to non-loopback callers only with MESHBOT_ISTIOD_TOKEN_FILE, and (Istio 1.27.6+/1.28.4+/1.29+) "
            "only if meshbot's namespace is in DEBUG_ENDPOINT_AUTH_ALLOWED_NAMESPACES.")
    prometheus_url: str | None = _setting(
        "MESHBOT_PROMETHEUS_URL", _base_url,
        doc="Prometheus that scrapes Istio's standard metrics (`http://prometheus.monitoring:9090`): failing "
            "edges, their onset and istiod's trends (docs/timeline.md). Unset: meshbot diagnoses without them "
            "and says so.")
    prometheus_token: str | None = _setting("MESHBOT_PROMETHEUS_TOKEN", secret=True,
                                            doc="Bearer token for MESHBOT_PROMETHEUS_URL (e.g. behind an "
                                                "authenticating proxy).")
    prometheus_token_file: str | None = _setting(
        "MESHBOT_PROMETHEUS_TOKEN_FILE",
        doc="File holding that token, read at every query (a projected service-account token rotates).")
    prometheus_ca_file: str | None = _setting("MESHBOT_PROMETHEUS_CA_FILE",
                                              doc="PEM CA bundle that verifies an https Prometheus.")
    prometheus_timeout: float = _setting("MESHBOT_PROMETHEUS_TIMEOUT", _positive_float, default=5.0,
                                         doc="Seconds per Prometheus query; Prometheus is told to stop evaluating "
                                             "just before. A slow or down Prometheus costs one timeout.")
    prometheus_max_series: int = _setting("MESHBOT_PROMETHEUS_MAX_SERIES", _positive_int, default=500,
                                          doc="Answers with more series are refused (an Info finding), not read.")
    istio_namespace: str = _setting("MESHBOT_ISTIO_NAMESPACE", _namespace, default="istio-system",
                                    doc="Istio root namespace.")
    scenario: str | None = _setting("MESHBOT_SCENARIO", doc="Diagnose a captured scenario "
                                                          "(`examples/demo/scenario.yaml`) instead of a cluster.")
    kube_timeout: float = _setting("MESHBOT_KUBE_TIMEOUT", _positive_float, default=10.0,
                                   doc="Seconds per Kubernetes or mesh HTTP call.")
    read_ca_secrets: bool = _setting("MESHBOT_READ_CA_SECRETS", _bool, default=False,
                                     doc="Also read `istio-ca-secret`/`cacerts` (they hold the CA key; off by default).")
    extra_secrets: tuple[tuple[str, str], ...] = _setting("MESHBOT_EXTRA_SECRETS", _secrets, default=(),
                                                          doc="More TLS secrets to watch, `ns/name,ns/name`.")
    workers: int = _setting("MESHBOT_WORKERS", _positive_int, default=16,
                            doc="Background threads running diagnostics and actions.")
    max_diagnoses: int = _setting(
        "MESHBOT_MAX_DIAGNOSES", _max_diagnoses, default=DEFAULT_MAX_DIAGNOSES,
        doc="Diagnoses reading the cluster and running checks at once; the others queue and say so in their "
            "thread. Each holds its snapshot in memory: raise the memory limit with it (docs/deployment.md, "
            "Resources).")
    cluster_reuse_seconds: float = _setting(
        "MESHBOT_CLUSTER_REUSE_SECONDS", _reuse_seconds, default=DEFAULT_CLUSTER_REUSE_SECONDS,
        doc="How long a namespace's pods, Events and metrics, once read, serve further diagnoses (an alert "
            "storm's diagnoses share one read). 0: only reads in flight are shared.")
    execution_lease_seconds: float = _setting(
        "MESHBOT_EXECUTION_LEASE_SECONDS", _positive_float, default=15.0,
        doc="An approved action's executor renews its claim every third of this; a claim not renewed for this long "
            "(on the database's clock) is resumed by another replica, and the stale executor is fenced off.")
    http_threads: int = _setting("MESHBOT_HTTP_THREADS", _positive_int, default=16,
                                 doc="Threads of the HTTP server answering Slack and Alertmanager.")
    http_loop_seconds: float = _setting(
        "MESHBOT_HTTP_LOOP_SECONDS", _loop_seconds, default=1.0,
        doc="How long the HTTP server's socket loop waits between checks (waitress's `asyncore_loop_timeout`, "
            "which waitress itself would round down to whole seconds): a stop takes up to this long to close the "
            "last connections. At least 0.01. Tests lower it.")
    answers_first_seconds: float = _setting(
        "MESHBOT_ANSWERS_FIRST_SECONDS", _answers_first_seconds, default=2.0,
        doc="While Slack waits for meshbot's ack over HTTP, background work (the \"Running…\" post, diagnoses, the "
            "outbox's posts) waits up to this long before it starts, so acks stay fast in a storm "
            "(bot.runtime.priority). 0: never waits. At most 3.")
    log_level: str = _setting("MESHBOT_LOG_LEVEL", _log_level, default="INFO", doc="DEBUG, INFO, WARNING or ERROR.")
    shutdown_grace_seconds: float = _setting(
        "MESHBOT_SHUTDOWN_GRACE_SECONDS", _positive_float, default=20.0,
        doc="On SIGTERM, seconds to finish running work before exiting anyway. Keep it below the pod's "
            "`terminationGracePeriodSeconds` (30 by default), or Kubernetes kills meshbot mid-shutdown.")
    alertmanager_token: str | None = _setting("ALERTMANAGER_TOKEN", secret=True,
                                              doc="Bearer token Alertmanager must send to `/alertmanager`; "
                                                  "unset: the endpoint refuses everything.")
    playbooks_dir: str | None = _setting("MESHBOT_PLAYBOOKS", doc="Directory of playbook YAML files "
                                                                "(default: the bundled `playbooks/`).")
    approvers: tuple[str, ...] = _setting("MESHBOT_APPROVERS", _approvers, default=(),
                                          doc="Slack user IDs and/or user group IDs allowed to approve actions.")
    responders: tuple[str, ...] = _setting("MESHBOT_RESPONDERS", _approvers, default=(),
                                           doc="Slack user IDs and/or user group IDs of on-call responders: with "
                                               "the approvers, the `responders` audience below.")
    diagnostics_audience: Audience = _setting(
        "MESHBOT_DIAGNOSTICS_BY", _audience, default=Audience.EVERYONE,
        doc="Who may run diagnostics and read incidents: `everyone` (in MESHBOT_ALLOWED_CHANNELS), "
            "`responders` (MESHBOT_RESPONDERS and MESHBOT_APPROVERS) or `approvers`.")
    request_audience: Audience = _setting(
        "MESHBOT_REQUEST_BY", _audience, default=Audience.RESPONDERS,
        doc="Who may ask for a remediation action (or its rollback): `everyone`, `responders` or `approvers`.")
    resolve_audience: Audience = _setting(
        "MESHBOT_RESOLVE_BY", _audience, default=Audience.RESPONDERS,
        doc="Who may resolve an incident by hand: `everyone`, `responders` or `approvers`.")
    required_approvals: int = _setting("MESHBOT_REQUIRED_APPROVALS", _positive_int, default=2,
                                       doc="Approvals (from people other than the requester) an action needs.")
    approval_ttl_minutes: int = _setting("MESHBOT_APPROVAL_TTL_MINUTES", _positive_int, default=30,
                                         doc="Minutes before a pending approval request expires.")
    reminders: bool = _setting("MESHBOT_REMINDERS", _bool, default=True,
                               doc="Scan certificates daily and post expiry reminders in MESHBOT_CHANNEL.")
    timezone: str = _setting("MESHBOT_TIMEZONE", _timezone, default="UTC",
                             doc="Time zone of the reminder schedule.")
    reminder_time: str = _setting("MESHBOT_REMINDER_TIME", _cron_time, default="09:00",
                                  doc="Daily certificate scan time (HH:MM in MESHBOT_TIMEZONE).")
    reminder_days: tuple[int, ...] = _setting("MESHBOT_REMINDER_DAYS", _days, default=DEFAULT_THRESHOLDS.reminder_days,
                                              doc="Days before expiry at which reminders are posted.")
    leader_election: bool = _setting("MESHBOT_LEADER_ELECTION", _bool, default=False,
                                      doc="Use a Kubernetes Lease so only one replica runs scheduled jobs.")
    lease_namespace: str = _setting("MESHBOT_LEASE_NAMESPACE", _namespace, default="meshbot",
                                    doc="Namespace of the leader-election Lease.")
    pod_name: str | None = _setting("POD_NAME", doc="This replica's identity in the Lease (downward API).")
    audit_key: str | None = _setting("MESHBOT_AUDIT_KEY", _audit_key, secret=True,
                                     doc="HMAC key of the incident log's chain and of approval plans (at least 32 "
                                         "characters, e.g. `openssl rand -hex 32`; or MESHBOT_AUDIT_KEY_FILE). "
                                         "Unset: generated once next to MESHBOT_DB (mode 0600) — back it up.")
    thread_batch_seconds: float = _setting("MESHBOT_THREAD_BATCH_SECONDS", _positive_float, default=30.0,
                                           doc="At most one alert-update reply per incident thread per this many "
                                               "seconds; what arrives meanwhile is summarised in the next one.")
    rollup_per_minute: int = _setting(
        "MESHBOT_ROLLUP_PER_MINUTE", _positive_int, default=DEFAULT_ROLLUP_PER_MINUTE,
        doc="New incidents a minute that get a top-level post each in a channel; beyond it, further ones (never a "
            "critical one) are listed in one roll-up message and followed in its thread (docs/incidents.md).")

    def __post_init__(self) -> None:
        quorum_problem = quorum_exceeds_approvers(self.approvers, self.required_approvals)
        if quorum_problem:
            raise SettingsError(quorum_problem)

    # -- loading -------------------------------------------------------------------

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None, config_file: str | os.PathLike | None = None) -> Settings:
        """Environment over YAML over defaults; raises SettingsError naming the first bad setting."""
        environ = os.environ if environ is None else environ
        from_file = _read_config_file(config_file) if config_file else {}
        # A secret pasted into the wrong setting must not be echoed by that setting's error either.
        secrets = {raw.strip() for spec in fields(cls) if spec.metadata["secret"]
                   and (raw := _raw_value(spec.metadata["env"], spec.name, environ, from_file))}
        values: dict[str, Any] = {}
        for spec in fields(cls):
            env = spec.metadata["env"]
            raw = _raw_value(env, spec.name, environ, from_file)
            if raw is None:
                continue
            try:
                values[spec.name] = spec.metadata["parse"](raw.strip())
            except ValueError as exc:
                raise SettingsError(_invalid(env, raw, str(exc), secret=spec.metadata["secret"],
                                             secrets=secrets)) from None
        unknown = set(from_file) - {f.name for f in fields(cls)} - {f.metadata["env"] for f in fields(cls)}
        if unknown:
            raise SettingsError(f"{config_file}: unknown setting(s) {', '.join(sorted(unknown))}")
        return cls(**values)

    def require(self, *names: str) -> Settings:
        """Raise SettingsError for the first of ``names`` that is unset (by field name)."""
        by_name = {f.name: f for f in fields(self)}
        for name in names:
            if not getattr(self, name):
                raise SettingsError(f"{by_name[name].metadata['env']} is required")
        return self

    def __repr__(self) -> str:
        """Never shows secrets: Settings may end up in a log line or a traceback."""
        shown = []
        secrets = set(self.secret_values())
        for spec in fields(self):
            value = getattr(self, spec.name)
            if spec.metadata["secret"] and value:
                value = "(set)"
            elif isinstance(value, str) and looks_secret(value, secrets):
                value = "(hidden)"
            shown.append(f"{spec.name}={value!r}")
        return f"Settings({', '.join(shown)})"

    def secret_values(self) -> list[str]:
        """Every secret value set, for the log redaction filter."""
        return [getattr(self, f.name) for f in fields(self) if f.metadata["secret"] and getattr(self, f.name)]


_LOOKS_SECRET = re.compile(r"xox[a-z]-|xapp-|://[^/\s]*@|-----BEGIN", re.IGNORECASE)


def looks_secret(value: str, secrets: set[str] | frozenset[str] = frozenset()) -> bool:
    """Whether a value may be a secret: a configured one (or holding one), token-shaped, or high-entropy."""
    value = value.strip()
    if any(secret and len(secret) >= 6 and secret in value for secret in secrets) or _LOOKS_SECRET.search(value):
        return True
    return _high_entropy(value)


def _high_entropy(value: str) -> bool:
    """A random-looking word: 16+ characters of a token alphabet mixing letters and digits, >= 3 bits/char.

    Names meshbot reads (``payments-namespace``, ``C0123ABCD``, ``istio-system/gw-cert``, URLs) are shorter, lack
    digits, or carry ':', '.' or spaces; API keys, hex and base64 secrets do not."""
    if len(value) < 16 or not _TOKEN_ALPHABET.fullmatch(value):
        return False
    if not (any(c.isdigit() for c in value) and any(c.isalpha() for c in value)):
        return False
    counts = {c: value.count(c) for c in set(value)}
    entropy = -sum(n / len(value) * math.log2(n / len(value)) for n in counts.values())
    return entropy >= 3.0


_TOKEN_ALPHABET = re.compile(r"[A-Za-z0-9+/=_-]+")


def _invalid(env: str, raw: str, reason: str, *, secret: bool, secrets: set[str] | frozenset[str] = frozenset()
             ) -> str:
    """``NAME: 'value' is invalid: why`` — the value only when it helps and cannot be a pasted secret."""
    raw = raw.strip()
    if secret or looks_secret(raw, secrets):
        # A parser's message may quote what it parsed (int() does); then it goes too.
        return f"{env}: the value (hidden) is invalid: {'malformed' if raw and raw in reason else reason}"
    shown = repr(raw) if len(raw) <= 80 else repr(raw[:40] + "…")
    return f"{env}: {shown} is invalid: {reason}"


def quorum_exceeds_approvers(approvers: tuple[str, ...], required: int, group_members: int | None = None) -> str | None:
    """Why MESHBOT_REQUIRED_APPROVALS can never be met by MESHBOT_APPROVERS, or None.

    A user group counts by its members, which only Slack knows: without ``group_members`` a list with a
    group is not judged here (the approval desk checks it at start-up, when the group is readable).  An
    empty list is allowed: then nobody can approve, and meshbot says so in its log.
    """
    users = [a for a in approvers if not a.startswith("S")]
    groups = [a for a in approvers if a.startswith("S")]
    if not approvers or (groups and group_members is None):
        return None
    people = len(set(users)) + (group_members or 0)
    if required <= people:
        return None
    listed = f"{len(set(users))} user{'s' * (len(set(users)) != 1)}" + (
        f" and {group_members} user-group member{'s' * (group_members != 1)}" if groups else "")
    return (f"MESHBOT_REQUIRED_APPROVALS is {required} but MESHBOT_APPROVERS lists only {listed}, so no action "
            f"could ever be approved; lower the quorum or add approvers")


def _raw_value(env: str, name: str, environ: Mapping[str, str], from_file: Mapping[str, Any]) -> str | None:
    if environ.get(env):
        return environ[env]
    file_var = environ.get(f"{env}_FILE")
    if file_var:
        try:
            return Path(file_var).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SettingsError(f"{env}_FILE: cannot read {file_var}: {exc.strerror}") from None
    for key in (name, env):
        if key in from_file and from_file[key] is not None:
            value = from_file[key]
            if isinstance(value, (list, tuple)):
                return ",".join(str(v) for v in value)
            return str(value).lower() if isinstance(value, bool) else str(value)
    return None


def _read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise SettingsError(f"--config {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise SettingsError(f"--config {path}{where}: invalid YAML") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SettingsError(f"--config {path}: expected a mapping of setting: value")
    return data


def settings_table() -> str:
    """The settings table in docs/settings.md."""
    rows = ["| Variable | YAML key | Default | Meaning |", "|---|---|---|---|"]
    for spec in fields(Settings):
        default = spec.default
        if isinstance(default, tuple):
            default = ",".join(str(d) for d in default) if default else ""
        shown = f"`{default}`" if default not in (None, "") else ""
        rows.append(f"| `{spec.metadata['env']}` | `{spec.name}` | {shown} | {spec.metadata['doc']} |")
    return "\n".join(rows)
