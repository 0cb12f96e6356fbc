"""``--plot``: the sessions over time, drawn to a PNG with matplotlib."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from django_safelive._tools.messages import ToolError
from django_safelive._tools.watch.report import clip
from django_safelive._tools.watch.sampling import Timeline

PLOT_INSTALL_HINT = "pip install 'django-safelive[plot]'"


def plot_writer() -> Callable[[Timeline, Path, str], None]:
    """Import matplotlib now, before the command runs, and return the writer."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ToolError(
            f"--plot needs matplotlib, which is not installed: {PLOT_INSTALL_HINT}"
        ) from None

    def write(timeline: Timeline, path: Path, title: str) -> None:
        # A bare Figure on the Agg canvas: no pyplot, so no GUI backend and no
        # global figure registry to leak from.
        figure = Figure(figsize=(10, 4), layout="constrained")
        FigureCanvasAgg(figure)
        axes = figure.add_subplot()
        times = [sample.at for sample in timeline.samples]
        totals = [sample.total for sample in timeline.samples]
        axes.plot(times, totals, drawstyle="steps-post", label="client sessions")
        peak = timeline.peak()
        if peak is not None:
            axes.plot([peak.at], [peak.total], "o", color="C3")
            axes.annotate(
                f"peak {peak.total}",
                (peak.at, peak.total),
                textcoords="offset points",
                xytext=(6, 6),
            )
        axes.set_xlabel("seconds since the command started")
        axes.set_ylabel("client sessions")
        axes.set_ylim(bottom=0, top=max([1, *totals]) * 1.15)
        axes.set_title(
            f"{clip(title, 80)} (max_connections {timeline.max_connections})"
        )
        axes.grid(alpha=0.3)
        figure.savefig(path, format="png", dpi=100)
        figure.clear()

    return write
