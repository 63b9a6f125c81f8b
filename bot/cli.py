"""The ``meshbot`` command line: diagnostics, analysis, the demo, and (later) the bot itself.

Over 450 lines because every sub-command's parser and handler sit together here, each one short.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
import threading
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import NoReturn

from bot.settings import SettingsError
from commands.catalog import default_checks
from commands.checks.registry import ALL, CheckRegistry
from commands.cluster.sources.collector import collector_paused
from commands.errors import InputError, MeshbotError, UserError
from commands.thresholds import CERT_DAYS_TEXT, Thresholds
from commands.times import parse_rfc3339

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_INPUT = 65  # EX_DATAERR: unparsable input files
EXIT_SOFTWARE = 70
EXIT_CONFIG = 78  # EX_CONFIG: a setting is missing or malformed
EXIT_ISSUES = 79  # istioctl analyze's "analyzers found issues at or above the failure level"

log = logging.getLogger("meshbot")


def parse_now(value: str) -> datetime:
    """ISO 8601; a time without zone is UTC."""
    try:
        return parse_rfc3339(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {value!r} (e.g. 2026-12-01T09:00:00Z)") from None


def parse_duration(value: str) -> timedelta:
    """``90s``, ``30m``, ``2h``, ``1d``."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = value[:-1], value[-1:].lower()
    if unit not in units or not number.isdigit() or int(number) == 0:
        raise argparse.ArgumentTypeError(f"not a duration: {value!r} (e.g. 30m, 2h, 1d)")
    return timedelta(seconds=int(number) * units[unit])


def _cluster_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("cluster")
    group.add_argument("-f", "--file", dest="files", action="append", default=[], metavar="PATH",
                       help="read objects from YAML/JSON files or directories instead of a live cluster (repeatable)")
    group.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or in-cluster)")
    group.add_argument("--context", help="kubeconfig context")
    group.add_argument("--istio-namespace", default="istio-system", help="Istio root namespace (default istio-system)")
    group.add_argument("--timeout", type=float, default=10.0, help="seconds per Kubernetes/HTTP call (default 10)")
    group.add_argument("--read-ca-secrets", action="store_true",
                       help="also read istio-ca-secret/cacerts (opt-in: they hold the CA private key)")


def build_parser(checks: CheckRegistry | None = None) -> argparse.ArgumentParser:
    """``checks`` (default: every check meshbot has) names the choices of ``meshbot diagnose``."""
    checks = checks or default_checks()
    parser = argparse.ArgumentParser(prog="meshbot", description=__doc__)
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    analyze = sub.add_parser("analyze", help="Istio configuration analysis (istioctl analyze compatible)")
    _cluster_options(analyze)
    analyze.add_argument("--mesh-config", metavar="FILE", help="MeshConfig YAML (like istioctl --meshConfigFile)")
    analyze.add_argument("-n", "--namespace", help="only report findings for this namespace")
    analyze.add_argument("-o", "--output", choices=("text", "json"), default="text")
    analyze.set_defaults(handler=cmd_analyze, checks=checks)

    diagnose = sub.add_parser("diagnose", help="run mesh health checks")
    diagnose.add_argument("check", help=" | ".join((*checks.names(), ALL)))
    _cluster_options(diagnose)
    diagnose.add_argument("-n", "--namespace", help="only report on this namespace")
    diagnose.add_argument("--istiod-url", action="append", default=[], metavar="URL",
                          help="istiod monitoring URL (http://HOST:15014) or a captured directory (repeatable); "
                               "default: discover istiod pods")
    diagnose.add_argument("--envoy-admin", action="append", default=[], metavar="NS/POD=URL",
                          help="Envoy admin URL for a pod, e.g. prod/payment-1=http://127.0.0.1:15000 (repeatable); "
                               "default: port-forward to sidecars")
    diagnose.add_argument("--now", type=parse_now, help="evaluate as of this time (ISO 8601), e.g. a freeze date")
    diagnose.add_argument("--cert-days", default=CERT_DAYS_TEXT, metavar="ERR,WARN,INFO",
                          help=f"certificate expiry thresholds in days (default {CERT_DAYS_TEXT})")
    diagnose.add_argument("-o", "--output", choices=("text", "json"), default="text")
    diagnose.set_defaults(handler=cmd_diagnose, checks=checks)

    timeline = sub.add_parser("timeline", help="when it started, which calls fail and what changed just before")
    _cluster_options(timeline)
    timeline.add_argument("-n", "--namespace", dest="namespaces", action="append", default=[], metavar="NAMESPACE",
                          help="only edges, changes and events of this namespace (repeatable; the Istio namespace "
                               "is always read)")
    timeline.add_argument("--since", type=parse_duration, default=timedelta(minutes=30), metavar="DURATION",
                          help="how far back before --at to look for the onset, e.g. 30m, 2h (default 30m)")
    timeline.add_argument("--at", type=parse_now, help="the alert's time (ISO 8601; default now)")
    timeline.add_argument("--prometheus-url", metavar="URL",
                          help="Prometheus with Istio's metrics (default: $MESHBOT_PROMETHEUS_URL)")
    timeline.add_argument("--demo", action="store_true",
                          help="the bundled demo outage's captured timeline (no cluster, no Prometheus)")
    timeline.add_argument("-o", "--output", choices=("text", "json"), default="text")
    timeline.add_argument("--png", metavar="FILE", help="also draw the failing edges' error ratio, the onset and the "
                                                       "changes into this PNG (needs the `graphs` extra)")
    timeline.set_defaults(handler=cmd_timeline)

    demo = sub.add_parser("demo", help="the whole bot in a browser on the bundled outage (no Slack, no cluster)")
    demo.add_argument("--scenario", default=None, help="scenario.yaml (default: examples/demo/scenario.yaml)")
    shown = demo.add_mutually_exclusive_group()
    shown.add_argument("--once", action="store_true",
                       help="print the scenario's diagnosis and exit (the default when not run from a terminal)")
    shown.add_argument("--serve", action="store_true",
                       help="serve the console until Ctrl-C (the default from a terminal)")
    demo.add_argument("--port", type=int, default=8080, help="console port on 127.0.0.1 (default 8080; 0: any)")
    demo.add_argument("-o", "--output", choices=("text", "json"), default="text", help="with --once")
    demo.set_defaults(handler=cmd_demo, checks=checks)

    plan = sub.add_parser("plan", help="show what a remediation would change and dry-run it (changes nothing)")
    plan.add_argument("action", nargs=argparse.REMAINDER,
                      help="permissive-mtls NS|--mesh, bypass DEPLOY -n NS|namespace NS, restart istiod|DEPLOY -n NS")
    plan.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, in-cluster, ~/.kube/config)")
    plan.add_argument("--context", help="kubeconfig context")
    plan.add_argument("--istio-namespace", default="istio-system", help="Istio root namespace (default istio-system)")
    plan.add_argument("--timeout", type=float, default=10.0, help="seconds per Kubernetes call (default 10)")
    plan.set_defaults(handler=cmd_plan)

    remind = sub.add_parser("remind", help="one certificate scan: print the reminders it would post")
    remind.add_argument("--once", action="store_true", required=True,
                        help="scan once and exit (the daily schedule runs inside `meshbot serve`)")
    remind.add_argument("--now", type=parse_now, help="scan as of this time (ISO 8601), e.g. a freeze date")
    remind.add_argument("--config", help="YAML settings file (environment variables win)")
    remind.add_argument("--all", action="store_true", help="also list certificates with no reminder due")
    remind.set_defaults(handler=cmd_remind)

    serve = sub.add_parser("serve", help="run the Slack bot (HTTP server; Socket Mode when SLACK_APP_TOKEN is set)")
    serve.add_argument("--config", metavar="FILE", help="YAML settings file (environment variables win)")
    serve.set_defaults(handler=cmd_serve)

    incidents = sub.add_parser("incidents", help="the incident log: list, export, verify")
    incidents.add_argument("--db", help="SQLite database (default: $MESHBOT_DB or meshbot.db)")
    incident_sub = incidents.add_subparsers(dest="incidents_command", required=True, metavar="ACTION")
    listing = incident_sub.add_parser("list", help="incidents, newest first")
    listing.add_argument("--all", action="store_true", help="include resolved incidents")
    export = incident_sub.add_parser("export", help="a postmortem-ready timeline")
    export.add_argument("incident_id", type=int, metavar="ID")
    export.add_argument("--format", choices=("md", "json"), default="md")
    postmortem = incident_sub.add_parser("postmortem", help="a Markdown postmortem draft from the incident's timeline "
                                         "(what happened when, who approved what, what changed, time to mitigate "
                                         "and to resolve)")
    postmortem.add_argument("incident_id", type=int, metavar="ID")
    verify = incident_sub.add_parser("verify", help="check the hash chain of the incident log, its anchors and the "
                                     "rows it vouches for; names every finding")
    verify.add_argument("--previous-key-file", action="append", default=[], metavar="FILE",
                        help="an audit key the log was signed with before a rotation (repeatable)")
    rotate = incident_sub.add_parser("rotate-key", help="sign the incident log with a new audit key from now on "
                                     "(a rotation event proven with the current key)")
    rotate.add_argument("--new-key-file", required=True, metavar="FILE",
                        help="the new key (at least 32 characters); set MESHBOT_AUDIT_KEY(_FILE) to it afterwards")
    migrate = incident_sub.add_parser("migrate", help="copy the SQLite log to PostgreSQL, audit chain intact")
    migrate.add_argument("--to", required=True, metavar="URL",
                         help="postgresql://USER@HOST:PORT/DB (password: MESHBOT_DATABASE_PASSWORD(_FILE))")
    incidents.set_defaults(handler=cmd_incidents)

    settings = sub.add_parser("settings", help="list settings")
    settings.add_argument("--markdown", action="store_true", help="as the markdown table in docs/settings.md")
    settings.set_defaults(handler=cmd_settings)

    listed = sub.add_parser("checks", help="list the checks, in report order")
    listed.add_argument("--markdown", action="store_true", help="as the markdown table in docs/codes.md")
    listed.set_defaults(handler=cmd_checks, checks=checks)

    codes = sub.add_parser("codes", help="list finding codes")
    codes.add_argument("--markdown", action="store_true", help="as the markdown table in docs/codes.md")
    codes.set_defaults(handler=cmd_codes)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=(logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)],
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        code = args.handler(args)
    except SettingsError as exc:
        print(f"meshbot: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except InputError as exc:
        print(f"meshbot: error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except UserError as exc:
        print(f"meshbot: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except MeshbotError as exc:
        print(f"meshbot: error: {exc}", file=sys.stderr)
        return EXIT_SOFTWARE
    except KeyboardInterrupt:
        return 130
    if argv is None and getattr(args, "frozen_source", None) is not None:
        _exit_without_freeing(code)
    return code


def _exit_without_freeing(code: int) -> NoReturn:
    """End the process of a one-shot run that froze what it read, leaving its heap to the kernel.

    Freeing 100,000 pods' objects one by one cost 0.9 s of ``analyze -f``'s 10 s budget (issue 26). mypy ends its
    runs the same way (mypy/util.py ``hard_exit``). Only after ``main()`` of the program itself: in-process callers
    pass ``argv`` and get the code back.
    """
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:
        code = 120  # what the interpreter's own exit returns when it cannot flush stdout (Py_RunMain)
    os._exit(code)


# -- handlers --------------------------------------------------------------------


def cmd_analyze(args: argparse.Namespace) -> int:
    from commands import report
    from commands.findings import Level

    source = _source(args, mesh_config=args.mesh_config)
    # One pass over a snapshot read once: the analyzers' indexes and what they cache on the resources (600,000 objects
    # at 100,000 pods) would otherwise be walked by collections that find no garbage, 0.9 s of the 10 s budget
    # (issue 26); what stays cached is frozen with the resources before the collector resumes.
    with collector_paused():
        findings = args.checks.diagnose(["analyze"], source, namespace=args.namespace)
        gc.freeze()
    out = report.analyze_json(findings) if args.output == "json" else report.analyze_text(
        findings, namespace=args.namespace)
    sys.stdout.write(out)
    return EXIT_ISSUES if any(f.level == Level.ERROR for f in findings) else EXIT_OK


def cmd_diagnose(args: argparse.Namespace) -> int:
    names = args.checks.resolve([args.check])
    source = _source(args)
    endpoints = _endpoints(args, source)
    return _diagnose_and_print(names, source, endpoints, args, title_source=", ".join(args.files) or "cluster")


def cmd_demo(args: argparse.Namespace) -> int:
    from commands.cluster.demo import load_scenario

    if _demo_serves(args):
        return _serve_demo(args)
    scenario = load_scenario(args.scenario)
    if args.output == "text":
        print(f"# {scenario.title}\n# {scenario.story}\n", flush=True)
    source, endpoints = scenario.source(), scenario.endpoints()
    args.namespace, args.now, args.cert_days = None, scenario.now, CERT_DAYS_TEXT
    _diagnose_and_print([ALL], source, endpoints, args, title_source=str(scenario.cluster_dir))
    return EXIT_OK


def cmd_timeline(args: argparse.Namespace) -> int:
    """The onset, failing edges, changes and Warning Events around an alert; read-only."""
    from commands.telemetry.timeline import Timeline, captured_timeline, live_timeline, timeline_text

    timeline: Timeline
    if args.demo:
        from commands.cluster.demo import DEFAULT_SCENARIO, load_scenario

        scenario = load_scenario(None)
        directory = DEFAULT_SCENARIO.parent / "timeline"
        timeline = captured_timeline(directory, at=args.at or scenario.now, since=args.since,
                                     namespaces=args.namespaces, istio_namespace=args.istio_namespace)
        source = f"captured in {directory}"
    else:
        from commands.clients.kube import KubeClient

        client = KubeClient.connect(args.kubeconfig, args.context, timeout=args.timeout)
        prometheus = _prometheus(args)
        try:
            timeline = live_timeline(client, prometheus, at=args.at or datetime.now(timezone.utc), since=args.since,
                                     namespaces=args.namespaces, istio_namespace=args.istio_namespace)
        finally:
            if prometheus is not None:
                prometheus.close()
        source = f"Prometheus {prometheus.url}" if prometheus else "no Prometheus"
    if args.png:
        from commands.telemetry.graph import error_ratio_png

        png = error_ratio_png(timeline.telemetry.edges, timeline.changes, timeline.onset)
        try:
            Path(args.png).write_bytes(png)
        except OSError as exc:
            raise UserError(f"cannot write {args.png}: {exc.strerror}") from None
    if args.output == "json":
        import json

        print(json.dumps(timeline.to_dict(), indent=2))
    else:
        sys.stdout.write(timeline_text(timeline, source=source))
    return EXIT_OK


def _prometheus(args: argparse.Namespace):
    """The Prometheus of --prometheus-url or MESHBOT_PROMETHEUS_URL (with its token, CA and limits), or None."""
    from bot.settings import Settings
    from commands.clients.prometheus import PrometheusClient

    settings = Settings.load()
    url = args.prometheus_url or settings.prometheus_url
    if not url:
        return None
    return PrometheusClient(url, timeout=settings.prometheus_timeout, bearer_token=settings.prometheus_token,
                            bearer_token_file=settings.prometheus_token_file, ca_file=settings.prometheus_ca_file,
                            max_series=settings.prometheus_max_series)


def _demo_serves(args: argparse.Namespace) -> bool:
    """The console from a terminal; the printed diagnosis for scripts, pipes and ``-o json``."""
    if args.once or args.output == "json":
        return False
    return args.serve or (sys.stdin.isatty() and sys.stdout.isatty())


def _serve_demo(args: argparse.Namespace) -> int:
    try:
        from bot.demo.run import Demo, serve_until_interrupted
    except ImportError as exc:
        raise UserError(f"the demo console needs the `demo` extra ({exc.name} is missing): "
                        "pip install -e '.[demo]', or scripts/demo.sh") from None
    try:
        serve_until_interrupted(Demo(scenario=args.scenario, port=args.port),
                                announce=lambda line: print(line, flush=True))
    except OSError as exc:
        raise UserError(f"cannot serve the console on 127.0.0.1:{args.port}: {exc.strerror or exc} "
                        "(another program uses the port? try --port 8081)") from None
    return EXIT_OK


def cmd_plan(args: argparse.Namespace) -> int:
    from commands.actions import dry_run, parse_action, plan_action, plan_diff
    from commands.clients.kube import KubeClient

    target = parse_action(args.action, istio_namespace=args.istio_namespace)
    client = KubeClient.connect(args.kubeconfig, args.context, timeout=args.timeout)
    plan = plan_action(client, target)
    print(f"# {plan.summary}\n# plan {plan.hash[:12]} \u00b7 {'reversible' if plan.reversible else 'no rollback'}")
    print(plan_diff(plan))
    for note in plan.notes:
        print(f"note: {note}")
    rehearsal = dry_run(client, plan)
    print("server-side dry run: " + ("passed" if rehearsal.ok else f"FAILED: {rehearsal.error}"))
    print("Nothing was changed. In Slack: /mesh " + target.command)
    return EXIT_OK if rehearsal.ok else EXIT_SOFTWARE


def cmd_remind(args: argparse.Namespace) -> int:
    """Read-only: uses MESHBOT_DB's ledger (when the file exists) to leave out reminders already posted."""
    from pathlib import Path
    from zoneinfo import ZoneInfo

    from bot.cluster import ClusterAccess
    from bot.reminders.blocks import reminder_lines, upcoming_text
    from bot.reminders.service import ReminderService
    from bot.server.schema import open_database
    from bot.settings import Settings

    settings = Settings.load(config_file=args.config)
    database = open_database(settings.db_path) if Path(settings.db_path).exists() else None
    tz = ZoneInfo(settings.timezone)
    service = ReminderService(database=database, cluster=ClusterAccess(settings), channel=settings.channel,
                              days=settings.reminder_days, timezone=tz)
    result = service.plan(args.now)
    print(f"# certificate scan as of {result.now.astimezone(tz):%Y-%m-%d %H:%M %Z}: "
          f"{len(result.expiries)} certificates, {len(result.due)} reminder(s) due")
    for problem in result.problems:
        print(f"# also found: {problem}")
    for reminder in result.due:
        print()
        print("\n".join(reminder_lines(reminder, tz)))
        if reminder.expiry.is_mesh_root and reminder.expiry.expired:
            print("(meshbot serve also opens an incident for an expired mesh root)")
    if args.all:
        print()
        print(upcoming_text(result.expiries, tz, result.now).replace("*", ""))
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    import signal

    from bot.runtime import redaction
    from bot.server.meshbot import freeze_startup_heap
    from bot.server.wiring import build
    from bot.settings import Settings

    settings = Settings.load(config_file=args.config)
    redaction.install(settings.secret_values(), settings.log_level)
    bot = build(settings).start()
    freeze_startup_heap()
    stopping = threading.Event()

    def stop(signum: int, frame: object) -> None:
        if not stopping.is_set():
            stopping.set()
            log.info("signal %s: shutting down (grace %.0fs)", signum, settings.shutdown_grace_seconds)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while bot.serving and not stopping.wait(0.5):
        pass
    if not bot.stop():
        # Work still running past the grace (a slow Kubernetes call) would keep the interpreter alive at
        # exit (it joins the pools' threads); what it recorded is in the database, so exit without it.
        logging.shutdown()
        os._exit(EXIT_OK)
    return EXIT_OK


def cmd_incidents(args: argparse.Namespace) -> int:
    from bot.incidents.audit import load_audit_key
    from bot.incidents.log import IncidentLog
    from bot.server.schema import open_database
    from bot.settings import Settings

    settings = Settings.load()
    path = args.db or settings.db_path
    if settings.database_url and not args.db and args.incidents_command != "migrate":
        # The replicas' PostgreSQL (MESHBOT_DATABASE_URL): its audit key is MESHBOT_AUDIT_KEY, required there.
        if not settings.audit_key:
            raise UserError("MESHBOT_DATABASE_URL is set: set MESHBOT_AUDIT_KEY(_FILE) to the replicas' audit key")
        database = open_database(path, url=settings.database_url, password=settings.database_password)
        # The pod's own anchor file sits next to MESHBOT_DB (its data directory) even when the log is PostgreSQL.
        log_ = IncidentLog(database, key=load_audit_key(settings.audit_key, database.path, create=False),
                           anchor_stores=_audit_anchors(settings, path), previous_keys=_previous_keys(args))
        return _incidents_command(args, log_)
    if not Path(path).exists():
        raise UserError(f"no incident database at {path} (set MESHBOT_DB or pass --db)")
    database = open_database(path)
    log_ = IncidentLog(database, key=load_audit_key(settings.audit_key, path, create=False),
                       anchor_stores=_audit_anchors(settings, path), previous_keys=_previous_keys(args))
    if args.incidents_command == "migrate":
        return _migrate_to(log_, args.to, settings)
    return _incidents_command(args, log_)


def _previous_keys(args: argparse.Namespace) -> tuple:
    from bot.incidents.audit import read_key_file

    return tuple(read_key_file(path) for path in getattr(args, "previous_key_file", None) or ())


def _rotate_key(args: argparse.Namespace, log_) -> int:
    """The explicit rotation: a rotation event signed with the new key and proven with the current one."""
    import getpass

    from bot.incidents.audit import read_key_file
    from bot.incidents.log import AuditKeyError

    try:
        event_id = log_.rotate_key(read_key_file(args.new_key_file), f"cli:{getpass.getuser()}")
    except AuditKeyError as exc:
        raise SettingsError(str(exc)) from None
    print(f"audit key rotated at event #{event_id} (check value {log_.key.check}); set MESHBOT_AUDIT_KEY(_FILE) to the "
          "new key on every replica now, and keep the old one to verify the events before the rotation")
    return EXIT_OK


def _incidents_command(args: argparse.Namespace, log_) -> int:
    from bot.incidents.report import to_json, to_markdown

    now = datetime.now(timezone.utc)
    if args.incidents_command == "rotate-key":
        return _rotate_key(args, log_)
    if args.incidents_command == "list":
        incidents = log_.list_all() if args.all else log_.list_open()
        if not incidents:
            print("no open incidents" if not args.all else "no incidents")
        for incident in incidents:
            print(f"#{incident.id:<5} {incident.status:<8} {incident.severity:<8} {incident.duration(now):>10}  "
                  f"{incident.title}")
        return EXIT_OK
    if args.incidents_command == "export":
        incident = log_.get(args.incident_id)
        alerts = log_.alerts(incident.id)
        events = log_.timeline(incident.id)
        sys.stdout.write(to_json(incident, alerts, events) if args.format == "json"
                         else to_markdown(incident, alerts, events, now))
        return EXIT_OK
    if args.incidents_command == "postmortem":
        return _postmortem(log_, args.incident_id, now)
    from bot.approvals.authority import verify_with_approvals

    report = verify_with_approvals(log_)  # the chain, its anchors, incident rows, then the approval rows
    print("\n".join(report.lines()), file=sys.stdout if report.intact else sys.stderr)
    if report.wrong_key:
        return EXIT_CONFIG  # not evidence of tampering: the key given is not the log's
    return EXIT_OK if report.intact else 1


def _postmortem(log_, incident_id: int, now: datetime) -> int:
    from bot.incidents.lifecycle import LifecycleStore
    from bot.incidents.postmortem import postmortem_markdown

    incident = log_.get(incident_id)
    lifecycle = LifecycleStore(log_.database)
    sys.stdout.write(postmortem_markdown(incident, log_.alerts(incident.id), log_.timeline(incident.id),
                                         lifecycle.get(incident.id), lifecycle.follow_ups(incident.id), now))
    return EXIT_OK


def _migrate_to(source_log, url: str, settings) -> int:
    """Copy the SQLite log into PostgreSQL, then verify the copied chain with the same key to the same head."""
    from bot.incidents.log import IncidentLog
    from bot.server.schema import open_database, open_intake_for
    from bot.settings import _database_url
    from bot.storage.copy import copy_database

    try:
        url = _database_url(url)
    except ValueError as exc:
        raise UserError(f"--to {exc}") from None
    source_report = source_log.verify(anchors=())
    if not source_report.intact:
        raise UserError("the SQLite log does not verify; nothing copied: " + source_report.lines()[0])
    target = open_database(settings.db_path, url=url, password=settings.database_password)
    report = copy_database(source_log.database, target, open_intake_for(source_log.database))
    copied = IncidentLog(target, key=source_log.key, anchor_stores=())
    check = copied.verify()
    source_head, target_head = source_log.head(), copied.head()
    same_head = (source_head and target_head and (source_head.event_id, source_head.hash_prefix)
                 == (target_head.event_id, target_head.hash_prefix)) or source_head is target_head is None
    print("\n".join(report.lines()))
    if not (check.intact and same_head):
        print("\n".join(check.lines()), file=sys.stderr)
        return 1
    head = f"event #{target_head.event_id} \u00b7 {target_head.hash_prefix}" if target_head else "no events yet"
    print(f"audit chain verified on {target.path}: {check.events} events, same head as the SQLite log ({head})")
    if source_log.key.source != "MESHBOT_AUDIT_KEY":
        print(f"every replica needs this log's audit key: set MESHBOT_AUDIT_KEY(_FILE) from {source_log.key.source}")
    return EXIT_OK


def _audit_anchors(settings, db_path: str) -> tuple:
    """The anchors ``verify`` compares the chain with: the file next to the database, and the Lease if used."""
    import socket

    from bot.cluster import ClusterAccess
    from bot.incidents.anchors import LeaseAnchorStore, default_anchor_stores
    from commands.clients.lease import LeaderElector

    stores = default_anchor_stores(db_path)
    if settings.leader_election:  # read only: verify never takes the lease
        elector = LeaderElector(ClusterAccess(settings).client(), settings.lease_namespace,
                                settings.pod_name or socket.gethostname())
        stores += (LeaseAnchorStore(elector),)
    return stores


def cmd_settings(args: argparse.Namespace) -> int:
    from bot.settings import Settings, settings_table

    if args.markdown:
        print(settings_table())
    else:
        print(repr(Settings.load()))
    return EXIT_OK


def cmd_checks(args: argparse.Namespace) -> int:
    if args.markdown:
        print(args.checks.markdown_table())
        return EXIT_OK
    for spec in args.checks:
        print(f"{spec.name:<14}  {spec.summary}")
    return EXIT_OK


def cmd_codes(args: argparse.Namespace) -> int:
    from commands.codes import ALL_CODES, markdown_table

    if args.markdown:
        print(markdown_table())
        return EXIT_OK
    for entry in ALL_CODES.values():
        print(f"{entry.code}  {entry.level:<7}  {entry.check:<12}  {entry.name}")
    return EXIT_OK


# -- helpers ---------------------------------------------------------------------


def _diagnose_and_print(names, source, endpoints, args, *, title_source: str) -> int:
    from commands import report
    from commands.findings import Level
    from commands.suggestions import unknown_namespace

    names = args.checks.resolve(names)
    now = args.now or datetime.now(timezone.utc)
    if args.namespace:
        # A typo'd -n must be an error with suggestions, never a clean report of an empty namespace (issue 27).
        listed = source.snapshot({"Namespace"})
        refusal = unknown_namespace(args.namespace, listed.namespaces()) if listed.can_trust_absence("Namespace") \
            else None
        if refusal:
            raise UserError(refusal.replace("`", "'"))
    findings = args.checks.diagnose(names, source, namespace=args.namespace, now=now,
                                    thresholds=_thresholds(args.cert_days), endpoints=endpoints)
    if args.output == "json":
        sys.stdout.write(report.diagnose_json(findings))
    else:
        scope = f"namespace {args.namespace}" if args.namespace else "all namespaces"
        title = (f"meshbot diagnose {' '.join(names)} | {scope} | {title_source} | "
                 f"as of {now.strftime('%Y-%m-%d %H:%M:%S %Z')}")
        sys.stdout.write(report.diagnose_text(findings, title=title, scope=args.namespace or "all namespaces",
                                              checks=names))
    return EXIT_ISSUES if any(f.level == Level.ERROR for f in findings) else EXIT_OK


def _thresholds(cert_days: str) -> Thresholds:
    try:
        error, warning, info = (int(x) for x in cert_days.split(","))
    except ValueError:
        raise UserError(f"--cert-days {cert_days!r}: expected three whole numbers, e.g. {CERT_DAYS_TEXT}") from None
    if not 0 <= error <= warning <= info:
        raise UserError(f"--cert-days {cert_days!r}: need 0 <= error <= warning <= info days")
    return Thresholds(cert_error_days=error, cert_warning_days=warning, cert_info_days=info)


def _source(args: argparse.Namespace, *, mesh_config: str | None = None):
    if args.files:
        from commands.cluster.sources.files import FileSource

        # A one-shot run keeps what it read until it exits: frozen before the collector runs again, those objects
        # are never walked by it, which otherwise cost as much as the analyzers at 100,000 pods (docs/benchmarks.md),
        # and main() holds them on ``args`` so that the program can leave them to the kernel rather than free them
        # object by object when the handler returns (_exit_without_freeing).
        with collector_paused():
            source = FileSource(args.files, istio_namespace=args.istio_namespace, mesh_config=mesh_config)
            gc.freeze()
        args.frozen_source = source
        return source
    if mesh_config:
        raise UserError("--mesh-config applies to files (-f); a live cluster's mesh config is read from it")
    from commands.cluster.sources.kube import live_source

    # -n lists pods, their metrics, Events and Deployments only there and in the Istio namespace (issue 26).
    return live_source(kubeconfig=args.kubeconfig, context=args.context, timeout=args.timeout,
                       istio_namespace=args.istio_namespace, read_ca_secrets=args.read_ca_secrets,
                       namespace=getattr(args, "namespace", None))


def _endpoints(args: argparse.Namespace, source):
    from commands.clients.http import HttpEndpoint
    from commands.cluster.endpoints import EndpointResolver, parse_envoy_admin_option

    admin_urls = dict(parse_envoy_admin_option(v) for v in args.envoy_admin)
    forwarder = getattr(source, "port_forwarder", None)
    return EndpointResolver(http=lambda url: HttpEndpoint(url, timeout=args.timeout), envoy_admin_urls=admin_urls,
                            istiod_urls=list(args.istiod_url), port_forwarder=forwarder,
                            direct_pod_ips=bool(getattr(source, "in_cluster", False)))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
