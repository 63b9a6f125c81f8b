"""Shared by the benchmarks: the fake Slack and the bot, each in its own process."""

from __future__ import annotations

import multiprocessing
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def run_fake_slack(urls: multiprocessing.Queue, stop: multiprocessing.Event) -> None:
    from tests.support.slack import start_fake_slack

    fake, server = start_fake_slack()
    urls.put(fake.url)
    stop.wait()
    server.shutdown()


def run_bot(api_url: str, db_path: str, ports: multiprocessing.Queue, stop: multiprocessing.Event,
            overrides: dict, runner: Callable | None = None) -> None:
    """``runner(settings)``, when given, returns the diagnosis runner the bot uses instead of its own."""
    from bot.server.meshbot import freeze_startup_heap
    from bot.server.wiring import build
    from bot.settings import Settings
    from tests.support.bot import DEMO_SCENARIO
    from tests.support.slack import BOT_TOKEN, SIGNING_SECRET

    values = dict(slack_bot_token=BOT_TOKEN, slack_signing_secret=SIGNING_SECRET, slack_api_url=api_url,
                  host="127.0.0.1", port=0, db_path=db_path, scenario=DEMO_SCENARIO, log_level="WARNING",
                  reminders=False)  # the demo's expiring certificates would add reminder posts to the counts
    values.update(overrides)
    import logging
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)  # "Task queue depth" is the point of a load test
    settings = Settings(**values)
    meshbot = build(settings, runner=runner(settings) if runner else None)
    meshbot.start()
    freeze_startup_heap()  # as `meshbot serve` does
    ports.put(meshbot.server.effective_port)
    stop.wait()
    meshbot.stop(timeout=30)


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentile(sorted_values: list[float], p: float) -> float:
    return sorted_values[min(int(len(sorted_values) * p), len(sorted_values) - 1)]


class Processes:
    """Starts the fake Slack and the bot; stops both on exit."""

    def __init__(self, db_path: str, overrides: dict, runner: Callable | None = None):
        self.stop = multiprocessing.Event()
        queue: multiprocessing.Queue = multiprocessing.Queue()
        self.slack = multiprocessing.Process(target=run_fake_slack, args=(queue, self.stop))
        self.slack.start()
        self.slack_url = queue.get(timeout=30)
        self.bot = multiprocessing.Process(target=run_bot, args=(f"{self.slack_url}/api/", db_path, queue,
                                                                 self.stop, overrides, runner))
        self.bot.start()
        self.bot_url = f"http://127.0.0.1:{queue.get(timeout=60)}"

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.bot.join(60)
        self.slack.join(30)
