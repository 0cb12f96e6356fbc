"""The report printed when the watched command ends: the peak, what made it up,
and a timeline."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from django_safelive._tools.watch.sampling import Sample, Timeline

SPARKLINE_WIDTH = 60
# Rows shown per breakdown table; the rest are only counted.
TOP_ROWS = 10
BLOCKS = "▁▂▃▄▅▆▇█"

Field = Literal["datname", "application_name", "state"]
FIELDS: tuple[Field, ...] = ("datname", "application_name", "state")


def sparkline(values: Sequence[int], width: int = SPARKLINE_WIDTH) -> str:
    """`values` as at most `width` block characters, scaled from their min to max.

    Downsampling keeps each column's maximum, so a short peak is never lost.
    """
    if not values or width < 1:
        return ""
    if len(values) > width:
        size = len(values)
        values = [
            max(values[column * size // width : (column + 1) * size // width])
            for column in range(width)
        ]
    low, high = min(values), max(values)
    if high == low:
        return BLOCKS[0] * len(values)
    top = len(BLOCKS) - 1
    return "".join(BLOCKS[round((v - low) * top / (high - low))] for v in values)


def breakdown(
    samples: Sequence[Sample], by: Sequence[Field] = FIELDS
) -> list[tuple[tuple[str, ...], int]]:
    """For each combination of the `by` fields, its highest count in any one sample.

    Most sessions first, then by name. With one sample, its own counts.
    """
    peaks: dict[tuple[str, ...], int] = {}
    for sample in samples:
        counts: dict[tuple[str, ...], int] = {}
        for row in sample.rows:
            key = tuple(getattr(row, name) for name in by)
            counts[key] = counts.get(key, 0) + row.sessions
        for key, count in counts.items():
            peaks[key] = max(peaks.get(key, 0), count)
    return sorted(peaks.items(), key=lambda item: (-item[1], item[0]))


def _table(
    rows: list[tuple[tuple[str, ...], int]], headers: Sequence[str]
) -> list[str]:
    """Aligned columns, most sessions first; past TOP_ROWS rows, just how many more."""
    shown = [
        ([_clip_left(value or "-") for value in key], str(count))
        for key, count in rows[:TOP_ROWS]
    ]
    widths = [
        max([len(header), *(len(key[i]) for key, _ in shown)])
        for i, header in enumerate(headers[:-1])
    ]
    last = max([len(headers[-1]), *(len(count) for _, count in shown)])

    def line(cells: Sequence[str], count: str) -> str:
        padded = [cell.ljust(width) for cell, width in zip(cells, widths, strict=True)]
        return "  " + "  ".join([*padded, count.rjust(last)])

    if not rows:
        return ["  (no client sessions)"]
    lines = [line(headers[:-1], headers[-1])]
    lines += [line(key, count) for key, count in shown]
    if len(rows) > TOP_ROWS:
        lines.append(f"  ... and {len(rows) - TOP_ROWS} more row(s)")
    return lines


def _clip_left(value: str, limit: int = 40) -> str:
    """Keep the end: django-safelive's application_name ends in its tag and role."""
    return value if len(value) <= limit else "…" + value[-(limit - 1) :]


def clip(value: str, limit: int = 40) -> str:
    """Keep the start of `value`, at most `limit` characters."""
    return value if len(value) <= limit else value[: limit - 1] + "…"


def render_report(
    timeline: Timeline,
    *,
    target: str,
    command: Sequence[str],
    status: int,
    interrupted: bool = False,
    width: int = SPARKLINE_WIDTH,
) -> str:
    """The report printed when the command has ended."""
    lines = _heading(timeline, target, command, status, interrupted)
    peak = timeline.peak()
    if peak is None:
        lines.append("No sample was taken: the command ended first.")
        return "\n".join(lines) + "\n"
    share = 100 * peak.total / timeline.max_connections
    lines += [
        f"Peak: {peak.total} session(s) at {peak.at:.2f}s "
        f"({share:.0f}% of max_connections {timeline.max_connections})",
        "",
        f"At the peak ({peak.at:.2f}s):",
        *_table(breakdown([peak]), [*FIELDS, "sessions"]),
        "",
        "Over the whole run (each row's highest count in one sample):",
        *_table(breakdown(timeline.samples), [*FIELDS, "peak"]),
    ]
    for name in FIELDS:
        lines += [
            "",
            f"Peak by {name}:",
            *_table(breakdown(timeline.samples, [name]), [name, "peak"]),
        ]
    totals = [sample.total for sample in timeline.samples]
    lines += [
        "",
        f"Timeline (0s to {timeline.samples[-1].at:.2f}s, "
        f"{min(len(totals), width)} column(s)):",
        f"  min {min(totals)} {sparkline(totals, width)} max {max(totals)}",
    ]
    return "\n".join(lines) + "\n"


def _heading(
    timeline: Timeline,
    target: str,
    command: Sequence[str],
    status: int,
    interrupted: bool,
) -> list[str]:
    """What ran, how it ended, what was sampled, and why sampling stopped early."""
    lines = [
        f"django-safelive watch: {clip(' '.join(command), 60)!r} "
        + ("was interrupted (Ctrl-C) and " if interrupted else "")
        + f"exited with status {status} after {timeline.duration:.2f}s",
        f"PostgreSQL {target}: max_connections {timeline.max_connections}; "
        f"{len(timeline.samples)} sample(s), every {timeline.interval:g}s; "
        "client backends only, this watcher's own session excluded",
    ]
    if timeline.error:
        lines.append(f"sampling stopped early: {timeline.error}")
    return lines
