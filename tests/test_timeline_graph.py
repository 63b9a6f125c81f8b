"""The error-ratio PNG: real matplotlib output, checked by decoding the PNG header."""

from __future__ import annotations

import struct
import zlib
from datetime import datetime, timedelta, timezone

from commands.telemetry.changes import Change, ChangeKind
from commands.telemetry.edges import Edge, FailingEdge, Workload
from commands.telemetry.graph import error_ratio_png
from commands.telemetry.onset import Onset

ONSET = datetime(2026, 12, 1, 9, 50, tzinfo=timezone.utc)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _edge() -> FailingEdge:
    start = (ONSET - timedelta(minutes=20)).timestamp()
    ratio = tuple((start + 30 * i, 0.0 if i < 40 else 0.5) for i in range(70))
    return FailingEdge(edge=Edge(Workload("shop", "frontend"), Workload("shop", "payments")), service="payments",
                       reporter="source", errors=4500, total=21000, codes={"403": 4500}, flags={"-": 4500},
                       onset=Onset(at=ONSET, baseline=0.0, peak=0.5), ratio=ratio)


def _header(png: bytes) -> tuple[int, int]:
    """Width and height from the IHDR chunk, after checking the signature and the chunk's CRC."""
    assert png[:8] == PNG_SIGNATURE
    length, kind = struct.unpack(">I4s", png[8:16])
    assert kind == b"IHDR" and length == 13
    data, crc = png[16:29], struct.unpack(">I", png[29:33])[0]
    assert zlib.crc32(kind + data) == crc
    width, height = struct.unpack(">II", data[:8])
    return width, height


def test_the_graph_is_a_png_of_the_asked_size():
    change = Change(ONSET - timedelta(minutes=2), ChangeKind.CONFIG, "AuthorizationPolicy shop/deny-all", "applied",
                    "argocd-controller")

    png = error_ratio_png([_edge()], [change], ONSET, width=640, height=240)

    assert _header(png) == (640, 240)
    assert png.endswith(b"IEND\xaeB`\x82")


def test_a_graph_with_nothing_failing_is_still_a_picture():
    assert _header(error_ratio_png([], [], None)) == (800, 320)


def test_changes_outside_the_plotted_window_do_not_stretch_it():
    old = Change(ONSET - timedelta(hours=5), ChangeKind.ROLLOUT, "Deployment shop/payments", "rolled out", "helm")

    assert error_ratio_png([_edge()], [old], ONSET) == error_ratio_png([_edge()], [], ONSET)
