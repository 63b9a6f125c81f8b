"""Benchmark: an alert storm of 1,000 Alertmanager notifications for 20 groups (issue 15: p99 under 100 ms).

Each group's notifications repeat (Alertmanager re-sends) and grow (new alerts
join the group, up to 8 per body), sent by 10 concurrent senders as fast as the
bot answers.
Reported: webhook latency percentiles, incidents and threads created (must be
exactly 20), notifications stored vs processed (nothing lost), Slack messages
delivered and the smallest gap between two posts in the incident channel
(the outbox paces at one per second), the bot's peak RSS.

    .venv/bin/python bench/bench_alert_storm.py [notifications] [groups]
"""

from __future__ import annotations

import http.client
import sqlite3
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import Processes, peak_rss_mb, percentile  # noqa: E402
from bot.storage.intake import intake_path  # noqa: E402
from tests.support import replicas  # noqa: E402

TOKEN = "bench-alertmanager-token"
MAX_ALERTS = 8
ALERTNAMES = ["EnvoySidecarCrashLoop", "IstiodHighMemory", "EnvoyHighMemoryUsage", "EnvoyCircuitBreakerOpen",
              "ServiceMeshHighErrorRate"]


def notification(group: int, sequence: int) -> bytes:
    """The ``sequence``-th notification of a group: up to MAX_ALERTS alerts, one joining every sixth."""
    return replicas.notification(group, sequence, new_alert_every=6, max_alerts=MAX_ALERTS, alertnames=ALERTNAMES)


def main() -> None:
    import httpx

    total = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    groups = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    bodies = [notification(i % groups, i // groups) for i in range(total)]
    with tempfile.TemporaryDirectory() as tmp:
        db_path = f"{tmp}/storm.db"
        intake_db = intake_path(db_path)  # where webhooks store notifications (bot/storage/intake.py)
        with Processes(db_path, {"alertmanager_token": TOKEN, "channel": "CINCIDENT", "workers": 8}) as procs:
            port = int(procs.bot_url.rsplit(":", 1)[1])
            clients = threading.local()

            def send(i: int) -> tuple[int, float]:
                if not hasattr(clients, "http"):
                    clients.http = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                started = time.perf_counter()
                clients.http.request("POST", "/alertmanager", body=bodies[i],
                                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"})
                response = clients.http.getresponse()
                response.read()
                return response.status, time.perf_counter() - started

            started = time.monotonic()
            with ThreadPoolExecutor(10) as pool:
                results = list(pool.map(send, range(total)))
            sent_in = time.monotonic() - started

            def pending() -> tuple[int, int, int]:
                with sqlite3.connect(intake_db, timeout=30) as intake:
                    unprocessed = intake.execute("SELECT COUNT(*) FROM notifications WHERE processed_at IS NULL")
                with sqlite3.connect(db_path, timeout=30) as db:
                    outbox = db.execute("SELECT COUNT(*) FROM outbox WHERE state = 'pending'")
                    undiagnosed = db.execute("SELECT COUNT(*) FROM incidents WHERE diagnosed = 0")
                    return unprocessed.fetchone()[0], outbox.fetchone()[0], undiagnosed.fetchone()[0]

            deadline = time.monotonic() + 600
            while any(pending()) and time.monotonic() < deadline:
                time.sleep(0.5)
            drained_in = time.monotonic() - started
            stats = httpx.get(f"{procs.slack_url}/_stats").json()
            rss = peak_rss_mb(procs.bot.pid)
            with sqlite3.connect(intake_db) as intake:
                stored = intake.execute("SELECT COUNT(*) FROM notifications").fetchone()[0]
                processed = intake.execute("SELECT COUNT(*) FROM notifications WHERE processed_at IS NOT NULL"
                                           ).fetchone()[0]
            with sqlite3.connect(db_path) as db:
                incidents = db.execute("SELECT COUNT(*) FROM incidents").fetchone()[0]
                failed = db.execute("SELECT COUNT(*) FROM outbox WHERE state = 'failed'").fetchone()[0]

    latencies = sorted(seconds for _, seconds in results)
    accepted = sum(1 for status, _ in results if status == 200)
    print(f"notifications       {total} for {groups} groups, 10 concurrent senders, all sent in {sent_in:.1f} s")
    print(f"accepted            {accepted}/{total}; stored {stored}, processed {processed}")
    p99 = percentile(latencies, .99) * 1000
    print(f"webhook latency ms  p50 {percentile(latencies, .5) * 1000:.1f}  p99 {p99:.1f}"
          f"  max {latencies[-1] * 1000:.1f}  (target p99 < 100 ms: {'met' if p99 < 100 else 'MISSED'})")
    print(f"incidents           {incidents} (threads: {stats['top_level']} top-level messages)")
    print(f"slack messages      {stats['top_level'] + stats['thread_replies']} posts, {stats['updates']} updates, "
          f"{failed} failed; smallest gap between posts in the channel {stats['min_post_gap_seconds']:.2f} s")
    print(f"everything done     {drained_in:.1f} s after the first notification")
    print(f"bot peak RSS        {rss:.0f} MB")


if __name__ == "__main__":
    main()
