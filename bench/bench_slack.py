"""Benchmark: the `/mesh` ack path under a storm of 1,000 signed `/mesh diagnose` requests, 50 at a time.

What it measures is the ack: Slack gives an app 3 s to answer a slash command, and meshbot answers before
it diagnoses, so the acks must stay fast while diagnoses pile up behind the queue (at most
MESHBOT_MAX_DIAGNOSES at once, 4 by default).  The requests ask for 24 different diagnoses (six subcommands, each about the
demo's three namespaces and the whole mesh), as an outage's responders do (many people, a few questions):
a request whose diagnosis is already running or queued joins it, the others queue and post their
"Queued behind N" note.  The requests come from 100 channels: meshbot posts at most one message per second
per channel (Slack's chat.postMessage limit), so from one channel the 1,000 results alone would take over
16 minutes to deliver whatever the ack path does.  Every diagnosis is the real
demo-scenario diagnosis padded to ~2 s; the results' delivery is reported as far as it got in 3 minutes.

The bot runs in its own process (so its peak RSS is its own) against the fake Slack Web API of the tests,
itself in a third process.  Reported: acks, ack latency percentiles (client and bot side), the "Running…"
messages, results and queued notes delivered, time to drain, the bot's peak RSS.

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
MAX_DIAGNOSES = int(os.environ.get("MESHBOT_MAX_DIAGNOSES", "4"))  # the setting's default
CHANNELS = 100
DRAIN_SECONDS = 180.0
# The demo scenario's namespaces (a namespace that does not exist is refused at once, never diagnosed).
SCOPES = [f"{check} {namespace}".strip() for check in ("diagnose", "status", "certs", "envoy", "analyze", "proxy-status")
          for namespace in ("prod", "legacy", "istio-system", "")]


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
            Processes(f"{tmp}/bench.db", {"workers": WORKERS, "http_threads": 16, "max_diagnoses": MAX_DIAGNOSES},
                      runner=diagnoses_padded_to_two_seconds) as procs:
        port = int(procs.bot_url.rsplit(":", 1)[1])
        # Signed up front (valid for 5 minutes) so the load generator spends its CPU on sending only;
        # http.client keep-alive connections, one per sender, are much lighter than httpx.
        signed = []
        for i in range(requests):
            body = slash_command_body(SCOPES[i % len(SCOPES)], user_id=f"U{i:06d}", channel_id=f"CBENCH{i % CHANNELS:03d}",
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
        # Every request's "Running…" message is updated with its outcome when its (possibly shared) run ends, through
        # the outbox; its delivery is reported as far as it got in DRAIN_SECONDS, since the acks are the measure.
        deadline = time.monotonic() + DRAIN_SECONDS
        while delivered()["top_level"] < requests and time.monotonic() < deadline:
            time.sleep(0.1)
        announced_in = time.monotonic() - started
        while delivered()["updates"] < requests and time.monotonic() < deadline:
            time.sleep(0.5)
        drained_in = time.monotonic() - started
        final = delivered()
        rss = peak_rss_mb(procs.bot.pid)
        bot_side = ack_histogram(f"{procs.bot_url}/metrics")

    latencies = sorted(seconds for _, seconds in results)
    acked = sum(1 for status, _ in results if status == 200)
    print(f"requests {requests} at concurrency {concurrency} for {len(SCOPES)} different diagnoses, each "
          f"diagnosis ~{DIAGNOSIS_SECONDS:.0f} s, {WORKERS} workers, at most {MAX_DIAGNOSES} diagnoses at once")
    print(f"acknowledged        {acked}/{requests} (all sent in {sent_in:.1f} s)")
    print(f"ack latency ms      p50 {percentile(latencies, .5) * 1000:.1f}  p99 {percentile(latencies, .99) * 1000:.1f}"
          f"  max {latencies[-1] * 1000:.1f}  mean {statistics.mean(latencies) * 1000:.1f}")
    print(f"over 3 s            {sum(1 for s in latencies if s > 3)}")
    print(f"running messages    {final['top_level']}/{requests}, all visible {announced_in:.1f} s after the first "
          "request")
    print(f"outcomes            {final['updates']}/{requests} messages updated after {drained_in:.1f} s "
          f"(waited at most {DRAIN_SECONDS:.0f} s)")
    print(f"thread replies      {final['thread_replies']} (a result per request, plus one queued note per run that "
          "waited for its turn)")
    print(f"bot-side ack ms     mean {bot_side[0]:.2f}, share under 300 ms {bot_side[1]:.4f} "
          "(meshbot_slack_ack_seconds)")
    print(f"bot peak RSS        {rss:.0f} MB")


if __name__ == "__main__":
    main()
