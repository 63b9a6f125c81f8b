"""A small PNG of the failing edges' error ratio with the onset and the changes marked (pure: data in, bytes out).

Drawn with matplotlib's object API on its Agg canvas (no pyplot: no global figure state, safe from the
bot's worker threads, no display needed).  matplotlib is the ``graphs`` extra: without it the caller gets
a ``UserError`` saying how to install it, and everything else works.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import datetime, timezone

from commands.errors import UserError
from commands.telemetry.changes import Change
from commands.telemetry.edges import FailingEdge

MAX_EDGES = 5
"""Lines drawn: more than five colours in a small picture cannot be told apart."""
DPI = 100


def error_ratio_png(edges: Sequence[FailingEdge], changes: Sequence[Change], onset: datetime | None, *,
                    width: int = 800, height: int = 320, title: str = "Error ratio of the failing edges") -> bytes:
    """PNG bytes, ``width`` x ``height`` pixels: one line per edge (its share of failed requests), a red line at
    the onset and a grey one per change, labelled with the changed object."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.dates import DateFormatter, date2num
        from matplotlib.figure import Figure
    except ImportError:
        raise UserError("the error-rate graph needs matplotlib: pip install 'meshbot[graphs]'") from None
    figure = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    drawn = [e for e in edges if e.ratio][:MAX_EDGES]
    for edge in drawn:
        axes.plot(date2num([_moment(t) for t, _ in edge.ratio]), [100 * v for _, v in edge.ratio], linewidth=1.5,
                  label=f"{edge.edge} ({_top_code(edge)})")
    if onset:
        axes.axvline(float(date2num(onset)), color="tab:red", linestyle="--", linewidth=1.2, label=f"onset {onset:%H:%M}")
    stamps = [t for edge in drawn for t, _ in edge.ratio]
    # Only the changes inside the plotted window: one from an hour earlier would squeeze the errors to a sliver.
    shown = [c for c in changes if not stamps or min(stamps) <= c.at.timestamp() <= max(stamps)]
    for change in shown:
        at = float(date2num(change.at))
        axes.axvline(at, color="grey", linestyle=":", linewidth=1)
        axes.annotate(change.object.split(" ", 1)[-1], (at, 0.03), xycoords=("data", "axes fraction"),
                      rotation=90, fontsize=7, color="dimgrey", va="bottom", ha="right")
    axes.set_ylabel("failed requests (%)")
    peak = max((100 * v for edge in drawn for _, v in edge.ratio), default=0.0)
    axes.set_ylim(0, max(peak * 1.35, 1.0))  # headroom for the legend above the lines
    axes.set_title(title, fontsize=10)
    axes.xaxis.set_major_formatter(DateFormatter("%H:%M", tz=timezone.utc))
    axes.grid(True, alpha=0.3)
    if drawn or onset:
        axes.legend(fontsize=7, loc="upper left")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def _moment(unix_seconds: float) -> datetime:
    return datetime.fromtimestamp(unix_seconds, tz=timezone.utc)


def _top_code(edge: FailingEdge) -> str:
    return max(edge.codes.items(), key=lambda item: item[1])[0] if edge.codes else "errors"
