"""Pausing the cyclic garbage collector while files are decoded (commands/cluster/sources/collector.py)."""

from __future__ import annotations

import gc
import threading

from commands.cluster.sources.collector import collector_paused


def test_the_collector_is_off_inside_and_back_on_after():
    assert gc.isenabled()
    with collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()


def test_overlapping_pauses_from_two_threads_re_enable_the_collector_only_when_both_end():
    first_inside, second_done = threading.Event(), threading.Event()

    def second() -> None:
        first_inside.wait(5)
        with collector_paused():
            pass
        second_done.set()

    thread = threading.Thread(target=second)
    thread.start()
    with collector_paused():
        first_inside.set()
        second_done.wait(5)
        assert not gc.isenabled()  # the other thread's pause ended first and must not have turned it back on
    thread.join(5)
    assert gc.isenabled()


def test_a_collector_that_was_off_stays_off():
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
