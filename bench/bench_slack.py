"""Benchmark: 1,000 signed `/mesh diagnose` requests, 50 at a time, each diagnosis taking ~2 s.

The bot runs in its own process (so its peak RSS is its own) against the
fake Slack Web API of the tests, itself in a third process; every diagnosis
is the real demo-scenario diagnosis padded to 2 s, and every request names
its own namespace so no two share a run.  Reported: acks, ack latency
percentiles (client and bot side), the "Running…" messages, thread replies
delivered, time to drain, the bot's peak RSS.

    .venv/bin/python bench/bench_slack.py [requests] [concurrency]
"""

from __future__ import annotations

import http.client
import os
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import Processes, peak_rss_mb, percentile  # noqa: E402

DIAGNOSIS_SECONDS = 2.0
WORKERS = int(os.environ.get("MESHBOT_WORKERS", "16"))  # the setting's default


def diagnoses_padded_to_two_seconds(settings):
    """The bot's diagnosis runner: the real demo-scenario diagnosis, then a sleep up to 2 s."""
    from bot.cluster import ClusterAccess
    from commands.catalog import default_checks

    cluster, registry = ClusterAccess(settings), default_checks()

    def slow_diagnosis(checks, namespace, pods=()):
        started = time.monotonic()
        findings = registry.diagnose(checks, cluster.source(), namespace=namespace, now=cluster.now(),
                                     endpoints=cluster.endpoints())
        time.sleep(max(DIAGNOSIS_SECONDS - (time.monotonic() - started), 0))
        return findings

    return slow_diagnosis


def ack_histogram(metrics_url: str) -> tuple[float, float]:
    """(mean ack ms, share of acks under 300 ms) as the bot itself measured them."""
    import httpx

    values = {}
    for line in httpx.get(metrics_url).text.splitlines():
        if line.startswith("meshbot_slack_ack_seconds_"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    count = values.get("meshbot_slack_ack_seconds_count", 0) or 1
    under = values.get('meshbot_slack_ack_seconds_bucket{le="0.3"}', 0)
    return values.get("meshbot_slack_ack_seconds_sum", 0) / count * 1000, under / count


def main() -> None:
    import httpx

    from tests.support.slack import sign, slash_command_body

    requests = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    concurrency = int(sys.argv[2]) if len(sys.argv) > 2 else 50
    with tempfile.TemporaryDirectory() as tmp, \
            Processes(f"{tmp}/bench.db", {"workers": WORKERS, "http_threads": 16},
                      runner=diagnoses_padded_to_two_seconds) as procs:
        port = int(procs.bot_url.rsplit(":", 1)[1])
        # Signed up front (valid for 5 minutes) so the load generator spends its CPU on sending only;
        # http.client keep-alive connections, one per sender, are much lighter than httpx.
        signed = []
        for i in range(requests):
            body = slash_command_body(f"diagnose ns-{i:04d}", user_id=f"U{i:06d}",
                                      response_url=f"{procs.slack_url}/response/r{i}")
            signed.append((body, {"Content-Type": "application/x-www-form-urlencoded", **sign(body)}))
        clients = threading.local()

        def send(i: int) -> tuple[int, float]:
            if not hasattr(clients, "http"):
                clients.http = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            body, headers = signed[i]
            started = time.perf_counter()
            clients.http.request("POST", "/slack/events", body=body, headers=headers)
            response = clients.http.getresponse()
            response.read()
            return response.status, time.perf_counter() - started

        def delivered() -> dict:
            return httpx.get(f"{procs.slack_url}/_stats").json()

        started = time.monotonic()
        with ThreadPoolExecutor(concurrency) as pool:
            results = list(pool.map(send, range(requests)))
        sent_in = time.monotonic() - started
        deadline = time.monotonic() + requests * DIAGNOSIS_SECONDS
        while delivered()["top_level"] < requests and time.monotonic() < deadline:
            time.sleep(0.1)
        announced_in = time.monotonic() - started
        while delivered()["thread_replies"] < requests and time.monotonic() < deadline:
            time.sleep(0.5)
        drained_in = time.monotonic() - started
        final = delivered()
        rss = peak_rss_mb(procs.bot.pid)
        bot_side = ack_histogram(f"{procs.bot_url}/metrics")

    latencies = sorted(seconds for _, seconds in results)
    acked = sum(1 for status, _ in results if status == 200)
    print(f"requests {requests} at concurrency {concurrency}, each diagnosis ~{DIAGNOSIS_SECONDS:.0f} s, "
          f"{WORKERS} diagnosis workers")
    print(f"acknowledged        {acked}/{requests} (all sent in {sent_in:.1f} s)")
    print(f"ack latency ms      p50 {percentile(latencies, .5) * 1000:.1f}  p99 {percentile(latencies, .99) * 1000:.1f}"
          f"  max {latencies[-1] * 1000:.1f}  mean {statistics.mean(latencies) * 1000:.1f}")
    print(f"over 3 s            {sum(1 for s in latencies if s > 3)}")
    print(f"running messages    {final['top_level']}/{requests}, all visible {announced_in:.1f} s after the first "
          "request")
    print(f"thread replies      {final['thread_replies']}/{requests}, top-level updates {final['updates']}/{requests}"
          f", all done after {drained_in:.1f} s")
    print(f"bot-side ack ms     mean {bot_side[0]:.2f}, share under 300 ms {bot_side[1]:.4f} "
          "(meshbot_slack_ack_seconds)")
    print(f"bot peak RSS        {rss:.0f} MB")


if __name__ == "__main__":
    main()
