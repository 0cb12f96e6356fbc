"""``python -m django_safelive watch``: run a command, count PostgreSQL sessions.

Any command works (a whole test suite, with or without django-safelive): one
session of our own samples ``pg_stat_activity`` while it runs, and the peak,
its breakdown and a timeline are printed to stderr when it ends.

``target`` finds the server, ``sampling`` samples it, ``command`` runs the
command, ``report`` and ``plot`` show what was seen; this module is the command
line.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from django_safelive._tools.messages import ToolError, fail, print_error
from django_safelive._tools.watch.command import run_command
from django_safelive._tools.watch.plot import PLOT_INSTALL_HINT, plot_writer
from django_safelive._tools.watch.report import render_report
from django_safelive._tools.watch.sampling import Sampler, Timeline
from django_safelive._tools.watch.target import connect, find_target

TAKES_COMMAND = True
DEFAULT_INTERVAL = 0.05

PlotWriter = Callable[[Timeline, Path, str], None]


def _interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be a number of seconds, got {text!r}"
        ) from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(
            f"must be a positive number of seconds, got {text!r}"
        )
    return value


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0, got {text!r}")
    return int(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``watch``; the command to run comes after ``--``."""
    parser.usage = (
        "python -m django_safelive watch [--database-url URL] "
        "[--interval SECONDS] [--plot FILE.png] [--fail-above N] -- COMMAND ..."
    )
    parser.description = (
        "Run COMMAND (your test suite, say) and count the PostgreSQL server's client "
        "sessions in pg_stat_activity every --interval seconds, from one separate "
        "session. When COMMAND ends, print the peak, what made it up, and a "
        "timeline to stderr. COMMAND's own output is passed through unchanged."
    )
    parser.epilog = (
        "The server is --database-url, else $DATABASE_URL, else the 'default' "
        "database of $DJANGO_SETTINGS_MODULE.\n\n"
        "Exit status: COMMAND's own; 3 if it succeeded but the peak went above "
        "--fail-above; 2 on bad input or an unreachable server.\n\n"
        "example: python -m django_safelive watch --plot sessions.png -- "
        "pytest -n 4"
    )
    parser.add_argument(
        "--database-url",
        metavar="URL",
        help="postgresql://user:password@host:port/ of the server to watch",
    )
    parser.add_argument(
        "--interval",
        type=_interval,
        default=DEFAULT_INTERVAL,
        metavar="SECONDS",
        help=f"time between samples (default {DEFAULT_INTERVAL})",
    )
    parser.add_argument(
        "--plot",
        type=Path,
        metavar="FILE.png",
        help=f"also draw sessions over time to a PNG (needs {PLOT_INSTALL_HINT})",
    )
    parser.add_argument(
        "--fail-above",
        type=_count,
        metavar="N",
        help="exit non-zero (3 if COMMAND succeeded) if the peak exceeds N sessions",
    )


def run(args: argparse.Namespace) -> int:
    """Run the command under observation; return the exit status."""
    command: list[str] = args.command or []
    if not command:
        return fail(
            "watch",
            "no command to run: put it after --, e.g. "
            "python -m django_safelive watch -- pytest",
        )
    try:
        write_plot = _plot_writer(args.plot)
        target = find_target(args.database_url)
        sampler = Sampler(connect(target), args.interval)
    except ToolError as error:
        return fail("watch", str(error))

    with sampler.running() as timeline:
        try:
            status, interrupted = run_command(command)
        except OSError as error:
            message = f"cannot run {command[0]!r}: {error.strerror or error}"
            print_error("watch", message)
            # As a shell would: 127 not found, 126 found but not runnable.
            return 127 if isinstance(error, FileNotFoundError) else 126

    sys.stderr.write(
        render_report(
            timeline,
            target=f"{target.address} ({target.shown})",
            command=command,
            status=status,
            interrupted=interrupted,
        )
    )
    if write_plot is not None:
        status = _write_plot(write_plot, timeline, args.plot, command, status)
    return _check_peak(timeline, args.fail_above, status)


def _plot_writer(path: Path | None) -> PlotWriter | None:
    """The writer for --plot, checked before the command runs; None without it."""
    if path is None:
        return None
    write_plot = plot_writer()
    if not path.parent.is_dir():
        raise ToolError(f"--plot: no directory {str(path.parent)!r}")
    return write_plot


def _write_plot(
    write_plot: PlotWriter,
    timeline: Timeline,
    path: Path,
    command: Sequence[str],
    status: int,
) -> int:
    """Write the plot; the exit status, 2 if the command's was 0 and it failed."""
    try:
        write_plot(timeline, path, " ".join(command))
    except OSError as error:
        print_error("watch", f"cannot write {str(path)!r}: {error.strerror or error}")
        return status or 2
    print(f"Plot written to {path}", file=sys.stderr)
    return status


def _check_peak(timeline: Timeline, fail_above: int | None, status: int) -> int:
    """The exit status, 3 if the command's was 0 and the peak exceeded --fail-above."""
    peak = timeline.peak()
    peak_total = 0 if peak is None else peak.total
    if fail_above is None or peak_total <= fail_above:
        return status
    print(
        f"django-safelive watch: the peak of {peak_total} session(s) exceeded "
        f"--fail-above {fail_above}",
        file=sys.stderr,
    )
    return status or 3


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m django_safelive watch ...``, with `argv` after ``watch``."""
    from django_safelive.__main__ import main as cli

    return cli(["watch", *(sys.argv[1:] if argv is None else argv)])
