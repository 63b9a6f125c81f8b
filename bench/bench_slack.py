"""Benchmark: 1,000 signed `/mesh diagnose` requests, 50 at a time, each diagnosis taking ~2 s.

The bot runs in its own process (so its peak RSS is its own) against the
fake Slack Web API of the tests; every diagnosis is the real demo-scenario
diagnosis padded to 2 s, and every request names its own namespace so no two
share a run.  Reported: acks, ack latency percentiles, thread replies
delivered, time to drain, the bot's peak RSS.

    .venv/bin/python bench/bench_slack.py [requests] [concurrency]
"""

from __future__ import annotations

import http.client
import multiprocessing
import os
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DIAGNOSIS_SECONDS = 2.0
WORKERS = int(os.environ.get("MESHBOT_WORKERS", "16"))  # the default of the setting


def run_bot(api_url: str, db_path: str, ports: multiprocessing.Queue, stop: multiprocessing.Event) -> None:
    from bot.diagnosis import Diagnostician
    from bot.server import build
    from commands.checks import diagnose
    from tests.support.bot import DEMO_SCENARIO
    from tests.support.slack import BOT_TOKEN, SIGNING_SECRET
    from bot.settings import Settings

    settings = Settings(slack_bot_token=BOT_TOKEN, slack_signing_secret=SIGNING_SECRET, slack_api_url=api_url,
                        host="127.0.0.1", port=0, db_path=db_path, scenario=DEMO_SCENARIO, workers=WORKERS,
                        http_threads=16, log_level="WARNING")
    meshbot = build(settings)
    cluster = meshbot.services.diagnostician.cluster

    def slow_diagnosis(checks, namespace):
        started = time.monotonic()
        findings = diagnose(checks, cluster.source(), namespace=namespace, now=cluster.now(),
                            endpoints=cluster.endpoints())
        time.sleep(max(DIAGNOSIS_SECONDS - (time.monotonic() - started), 0))
        return findings

    meshbot.services.diagnostician = Diagnostician(cluster, runner=slow_diagnosis)
    meshbot.start()
    ports.put(meshbot.server.effective_port)
    stop.wait()
    meshbot.stop(timeout=30)


def run_fake_slack(urls: multiprocessing.Queue, stop: multiprocessing.Event) -> None:
    from tests.support.slack import start_fake_slack

    fake, server = start_fake_slack()
    urls.put(fake.url)
    stop.wait()
    server.shutdown()


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _ack_histogram(metrics_url: str) -> tuple[float, float]:
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
    ports: multiprocessing.Queue = multiprocessing.Queue()
    stop = multiprocessing.Event()
    slack = multiprocessing.Process(target=run_fake_slack, args=(ports, stop))
    slack.start()
    fake_url = ports.get(timeout=30)
    with tempfile.TemporaryDirectory() as tmp:
        bot = multiprocessing.Process(target=run_bot, args=(f"{fake_url}/api/", f"{tmp}/bench.db", ports, stop))
        bot.start()
        url = f"http://127.0.0.1:{ports.get(timeout=60)}/slack/events"

        clients = threading.local()
        port = int(url.split(":")[2].split("/")[0])
        # Signed up front (valid for 5 minutes) so the load generator spends its CPU on sending only;
        # http.client keep-alive connections, one per sender, are much lighter than httpx.
        signed = []
        for i in range(requests):
            body = slash_command_body(f"diagnose ns-{i:04d}", user_id=f"U{i:06d}",
                                      response_url=f"{fake_url}/response/r{i}")
            signed.append((body, {"Content-Type": "application/x-www-form-urlencoded", **sign(body)}))

        def send(i: int) -> tuple[int, float]:
            if not hasattr(clients, "http"):
                clients.http = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            body, headers = signed[i]
            started = time.perf_counter()
            clients.http.request("POST", "/slack/events", body=body, headers=headers)
            response = clients.http.getresponse()
            response.read()
            return response.status, time.perf_counter() - started

        started = time.monotonic()
        with ThreadPoolExecutor(concurrency) as pool:
            results = list(pool.map(send, range(requests)))
        sent_in = time.monotonic() - started

        def delivered() -> dict[str, int]:
            return httpx.get(f"{fake_url}/_stats").json()

        def replies() -> int:
            return delivered()["thread_replies"]

        deadline = time.monotonic() + requests * DIAGNOSIS_SECONDS
        while delivered()["top_level"] < requests and time.monotonic() < deadline:
            time.sleep(0.1)
        announced_in = time.monotonic() - started
        while replies() < requests and time.monotonic() < deadline:
            time.sleep(0.5)
        drained_in = time.monotonic() - started
        updates = delivered()["updates"]
        rss = peak_rss_mb(bot.pid)
        server_side = _ack_histogram(url.replace("/slack/events", "/metrics"))
        final = delivered()
        stop.set()
        bot.join(60)
    slack.join(30)

    latencies = sorted(seconds for _, seconds in results)
    acked = sum(1 for status, _ in results if status == 200)

    def pct(p: float) -> float:
        return latencies[min(int(len(latencies) * p), len(latencies) - 1)] * 1000

    print(f"requests {requests} at concurrency {concurrency}, each diagnosis ~{DIAGNOSIS_SECONDS:.0f} s, "
          f"{WORKERS} diagnosis workers")
    print(f"acknowledged        {acked}/{requests} (all sent in {sent_in:.1f} s)")
    print(f"ack latency ms      p50 {pct(0.50):.1f}  p99 {pct(0.99):.1f}  max {latencies[-1] * 1000:.1f}  "
          f"mean {statistics.mean(latencies) * 1000:.1f}")
    print(f"over 3 s            {sum(1 for s in latencies if s > 3)}")
    print(f"running messages    {final['top_level']}/{requests}, all visible {announced_in:.1f} s after the first "
          "request")
    print(f"thread replies      {final['thread_replies']}/{requests}, top-level updates {updates}/{requests}, "
          f"all done after {drained_in:.1f} s")
    print(f"bot-side ack ms     mean {server_side[0]:.2f}, share under 300 ms {server_side[1]:.4f} "
          "(meshbot_slack_ack_seconds)")
    print(f"bot peak RSS        {rss:.0f} MB")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
