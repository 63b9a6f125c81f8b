"""`meshbot demo`: serves the console until Ctrl-C and stops cleanly; `--once` prints and exits."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading

import httpx

from bot.demo.run import Demo
from tests.support.bot import threads_left


def test_demo_stops_every_thread_it_started():
    before = set(threading.enumerate())
    demo = Demo(port=0).start()
    assert httpx.get(demo.url + "/").status_code == 200
    started = set(threading.enumerate()) - before
    assert started  # the bot, the console, the cluster and the controller run in threads

    demo.stop()

    assert threads_left(before, settle=10) == []


def test_meshbot_demo_serves_until_ctrl_c_and_exits_0():
    process = subprocess.Popen([sys.executable, "-m", "bot.cli", "demo", "--serve", "--port", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        assert "open http://127.0.0.1:" in line, line + process.stderr.read()
        url = line.split("open ", 1)[1].split()[0]
        page = httpx.get(url + "/")
        assert page.status_code == 200 and "meshbot demo" in page.text
        assert "script-src 'self'" in page.headers["Content-Security-Policy"]

        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        process.kill() if process.poll() is None else None
    assert process.returncode == 0, err
    assert "stopping" in out
    assert "Traceback" not in err


def test_meshbot_demo_once_prints_the_diagnosis_and_exits():
    result = subprocess.run([sys.executable, "-m", "bot.cli", "demo", "--once"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("# 3 AM") and "MB3001" in result.stdout
