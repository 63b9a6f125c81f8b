"""The background loops' pacing (bot.runtime.loops): wake-ups are never lost, and a burst of them is coalesced."""

from __future__ import annotations

import time

from bot.runtime.loops import WakeableLoop


def passes_during_a_burst(min_gap: float) -> tuple[list[float], float]:
    """The passes' start times, and how long the burst of 50 wake-ups took (longer on a loaded machine)."""
    passes: list[float] = []
    loop = WakeableLoop("test", lambda: passes.append(time.monotonic()) and None, idle=30, min_gap=min_gap)
    loop.start()
    try:
        deadline = time.monotonic() + 5
        while not passes and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.3)  # past the first pass's gap
        burst_began = time.monotonic()
        for _ in range(50):  # ~100 ms of wake-ups, as an alert storm's stored notifications wake the outbox
            loop.wake()
            time.sleep(0.002)
        burst = time.monotonic() - burst_began
        time.sleep(min_gap + 0.3)
    finally:
        loop.stop()
    return passes, burst


def test_a_burst_of_wake_ups_costs_a_pass_or_two_when_passes_keep_a_minimum_gap():
    passes, burst = passes_during_a_burst(min_gap=0.25)
    # The first pass, then at most one per gap while the burst lasts, and one for its last wake-up.
    assert 2 <= len(passes) <= 3 + int(burst / 0.25), (passes, burst)
    gaps = [later - earlier for earlier, later in zip(passes, passes[1:])]
    assert all(gap >= 0.24 for gap in gaps), gaps
    assert passes[-1] >= passes[0] + 0.3, "the burst's wake-ups got a pass"


def test_without_a_gap_every_wake_up_during_a_pass_gets_a_pass_of_its_own():
    passes, _ = passes_during_a_burst(min_gap=0.0)
    assert len(passes) >= 10
