"""Benchmark: the alert storm against three ``meshbot serve`` replicas on one PostgreSQL (issue 16).

The same storm shape as bench_alert_storm.py (notifications for 20 groups that
repeat and grow), sent by 10 concurrent senders round-robin over the replicas.
Reported: webhook latency percentiles, incidents and threads (must equal the
groups), nothing unprocessed, pending or duplicated, the smallest gap between
two posts in the channel across all replicas (paced at one per second), and
how long until everything was posted.  A real PostgreSQL is started for it
(tests/support/postgres.py), the fake Slack runs in this process.

    .venv/bin/python bench/bench_ha_storm.py [notifications] [groups]
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import percentile  # noqa: E402
from tests.support.postgres import PASSWORD, start_postgres, with_password  # noqa: E402
from tests.support.replicas import (
    CHANNEL,
    Storm,
    notification,
    start_replicas,
    stop_replicas,
    wait_drained,  # noqa: E402
)
from tests.support.slack import start_fake_slack  # noqa: E402


def main() -> None:
    total = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    groups = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    bodies = [notification(i % groups, i // groups) for i in range(total)]
    server, stop_postgres = start_postgres()
    fake, slack_server = start_fake_slack()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            password_file = work / "password"
            password_file.write_text(PASSWORD)
            url = server.create()
            replicas = start_replicas(3, database_url=url, password_file=password_file,
                                      slack_api_url=f"{fake.url}/api/", work=work,
                                      # as bench_alert_storm.py runs the single replica: the default batching
                                      extra_env={"MESHBOT_THREAD_BATCH_SECONDS": "30", "MESHBOT_WORKERS": "8"})
            try:
                storm = Storm(replicas)
                started = time.monotonic()
                with ThreadPoolExecutor(10) as pool:
                    list(pool.map(lambda item: storm.send(*item), enumerate(bodies)))
                sent_in = time.monotonic() - started
                done = wait_drained(with_password(url, PASSWORD), timeout=900)
                drained_in = time.monotonic() - started
            finally:
                stop_replicas(replicas)
    finally:
        slack_server.shutdown()
        stop_postgres()

    stats = fake.stats()
    posted = Counter((m.get("channel"), m.get("thread_ts"), m.get("text")) for m in fake.messages())
    duplicated = sum(n - 1 for n in posted.values() if n > 1)
    channel_posts = [c for c in fake.of("chat.postMessage") if c.args.get("_ok") and c.args["channel"] == CHANNEL]
    gaps = [later.at - earlier.at for earlier, later in zip(channel_posts, channel_posts[1:])]
    latencies = sorted(storm.latencies)
    p99 = percentile(latencies, .99) * 1000
    print(f"replicas            3 x meshbot serve on one PostgreSQL {server_version()}")
    print(f"notifications       {total} for {groups} groups, 10 concurrent senders, all sent in {sent_in:.1f} s")
    print(f"accepted            {storm.sent}/{total}; stored {done['notifications']}, "
          f"unprocessed {done['unprocessed']}")
    print(f"webhook latency ms  p50 {percentile(latencies, .5) * 1000:.1f}  p99 {p99:.1f}  "
          f"max {latencies[-1] * 1000:.1f}")
    print(f"incidents           {done['incidents']} (threads: {stats['top_level']} top-level messages)")
    print(f"slack messages      {stats['top_level'] + stats['thread_replies']} posts, {stats['updates']} updates, "
          f"{done['failed']} failed, {done['pending']} pending, {duplicated} duplicated; smallest gap between posts "
          f"in the channel {min(gaps) if gaps else float('nan'):.2f} s")
    print(f"everything done     {drained_in:.1f} s after the first notification")


def server_version() -> str:
    from tests.support.postgres import PG_BIN
    return PG_BIN.parts[-2]


if __name__ == "__main__":
    main()
