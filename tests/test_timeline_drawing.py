"""The timeline graph drawn in a child process (bot/timeline/drawing.py): the same picture as drawn in place, and a
child that dies or hangs costs one graph, never the timeline's words or the next graph."""

from __future__ import annotations

import os

import pytest

from bot.timeline.drawing import GraphProcess
from commands.errors import UserError
from commands.telemetry.graph import error_ratio_png
from tests.test_timeline_graph import ONSET, _edge


@pytest.fixture
def drawer():
    process = GraphProcess()
    yield process
    process.close()


def test_the_child_draws_byte_for_byte_the_picture_drawn_in_place(drawer):
    assert drawer.error_ratio_png([_edge()], [], ONSET) == error_ratio_png([_edge()], [], ONSET)


def test_the_drawing_runs_in_another_process(drawer):
    drawer.error_ratio_png([_edge()], [], ONSET)
    children = [p.pid for p in drawer._pool._processes.values()]  # the pool's own record of its children
    assert children and os.getpid() not in children


def test_a_child_that_died_costs_one_graph_and_the_next_one_is_drawn_by_a_new_child(drawer):
    drawer.error_ratio_png([_edge()], [], ONSET)
    first = drawer._pool
    for process in first._processes.values():
        process.kill()
        process.join(10)
    with pytest.raises(UserError, match="ended"):
        drawer.error_ratio_png([_edge()], [], ONSET)
    assert drawer.error_ratio_png([_edge()], [], ONSET).startswith(b"\x89PNG")
    assert drawer._pool is not first


def test_a_graph_that_takes_too_long_is_given_up_and_the_stuck_child_replaced():
    drawer = GraphProcess(timeout=0.001)  # shorter than starting a child and importing matplotlib
    try:
        with pytest.raises(UserError, match="longer than"):
            drawer.error_ratio_png([_edge()], [], ONSET)
        assert drawer._pool is None
    finally:
        drawer.close()


def test_the_child_ends_once_no_graph_was_drawn_for_the_idle_time_and_the_next_graph_starts_one():
    drawer = GraphProcess(idle_seconds=0.5)
    try:
        drawer.error_ratio_png([_edge()], [], ONSET)
        child = next(iter(drawer._pool._processes.values()))
        assert drawer.running
        child.join(15)  # ended by the idle timer, not by this test
        assert not child.is_alive() and not drawer.running
        assert drawer.error_ratio_png([_edge()], [], ONSET).startswith(b"\x89PNG")
    finally:
        drawer.close()
