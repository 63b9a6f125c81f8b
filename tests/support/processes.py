"""Helpers for the real programs tests run as child processes (Envoy, Alertmanager)."""

from __future__ import annotations

import subprocess


def stop_process(process: subprocess.Popen, timeout: float = 5.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout``; always reaped."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
