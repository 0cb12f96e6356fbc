"""``python -m django_safelive watch``: run a command, count PostgreSQL sessions.

Any command works (a whole test suite, with or without django-safelive): one
session of our own samples ``pg_stat_activity`` while it runs, and the peak,
its breakdown and a timeline are printed to stderr when it ends.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple
from urllib.parse import parse_qsl, quote, unquote, urlsplit

TAKES_COMMAND = True
APPLICATION_NAME = "django-safelive watch"
DEFAULT_INTERVAL = 0.05
SPARKLINE_WIDTH = 60
# Rows shown per breakdown table; the rest are only counted.
TOP_ROWS = 10
BLOCKS = "▁▂▃▄▅▆▇█"
PLOT_INSTALL_HINT = "pip install 'django-safelive[plot]'"

Field = Literal["datname", "application_name", "state"]
FIELDS: tuple[Field, ...] = ("datname", "application_name", "state")

# Every watch's own session is left out, not only this one's: another watch
# running, or one that just closed its session, is tooling, not the command.
_SAMPLE = """
    SELECT coalesce(datname, ''), coalesce(application_name, ''),
           coalesce(state, ''), count(*)
    FROM pg_stat_activity
    WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
      AND application_name IS DISTINCT FROM %s
    GROUP BY 1, 2, 3
"""


class WatchError(Exception):
    """Bad input or an unreachable server: reported in one line, exit status 2."""


class Row(NamedTuple):
    """Sessions sharing a database, an application_name and a state."""

    datname: str
    application_name: str
    state: str
    sessions: int


@dataclass(frozen=True)
class Sample:
    """What pg_stat_activity showed `at` seconds after the command started."""

    at: float
    rows: tuple[Row, ...]

    @property
    def total(self) -> int:
        """Client sessions at that moment, ours excluded."""
        return sum(row.sessions for row in self.rows)


@dataclass
class Timeline:
    """Every sample of one run, and what the run was measured against."""

    max_connections: int
    interval: float
    samples: list[Sample] = field(default_factory=list)
    duration: float = 0.0
    # Why sampling stopped before the command ended (the server went away), if it did.
    error: str | None = None

    def peak(self) -> Sample | None:
        """The first sample with the most sessions."""
        return max(self.samples, key=lambda sample: sample.total, default=None)


# -- pure functions -------------------------------------------------------------


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


def _clip(value: str, limit: int = 40) -> str:
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
    shown_command = " ".join(command)
    lines = [
        f"django-safelive watch: {_clip(shown_command, 60)!r} "
        + ("was interrupted (Ctrl-C) and " if interrupted else "")
        + f"exited with status {status} after {timeline.duration:.2f}s",
        f"PostgreSQL {target}: max_connections {timeline.max_connections}; "
        f"{len(timeline.samples)} sample(s), every {timeline.interval:g}s; "
        "client backends only, this watcher's own session excluded",
    ]
    if timeline.error:
        lines.append(f"sampling stopped early: {timeline.error}")
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


# -- where to connect -------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """Connection parameters for the sampler, and how to show them safely."""

    params: dict[str, Any]
    shown: str  # a URL with the password masked
    source: str  # where it came from, to say what to change

    @property
    def address(self) -> str:
        host = self.params.get("host") or "the default host"
        return f"{host}:{self.params.get('port') or 5432}"


def _display_url(
    user: str | None, password: str | None, host: str | None, port: int | None
) -> str:
    credentials = quote(user or "", safe="") + (":***" if password else "")
    at = "@" if credentials else ""
    location = (host or "") + (f":{port}" if port else "")
    return f"postgresql://{credentials}{at}{location}/"


def _params(
    user: str | None,
    password: str | None,
    host: str | None,
    port: int | None,
    extra: dict[str, str] | None = None,
) -> dict[str, Any]:
    return {
        **(extra or {}),
        "host": host or None,
        "port": port or None,
        "user": user or None,
        "password": password or None,
        # Always the maintenance database: pg_stat_activity shows every database,
        # and a test database being dropped must not have us connected to it.
        "dbname": "postgres",
        "application_name": APPLICATION_NAME,
        "connect_timeout": 5,
    }


def target_from_url(url: str, source: str) -> Target:
    """Parse a ``postgres://`` or ``postgresql://`` URL; the database path is unused."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise WatchError(f"bad database URL from {source}: {error}") from None
    password = unquote(parts.password) if parts.password else None
    user = unquote(parts.username) if parts.username else None
    host = unquote(parts.hostname) if parts.hostname else None
    shown = _display_url(user, password, host, port)
    if parts.scheme.lower() not in ("postgres", "postgresql"):
        scheme = parts.scheme or "no scheme"
        raise WatchError(
            f"the database URL from {source} uses {scheme!r}; watch reads "
            "PostgreSQL's pg_stat_activity, so give a postgres:// or postgresql:// "
            "URL, e.g. --database-url postgresql://postgres@127.0.0.1:5432/"
        )
    extra = dict(parse_qsl(parts.query))
    return Target(_params(user, password, host, port, extra), shown, source)


def target_from_settings() -> Target:
    """The server of the ``default`` alias in DJANGO_SETTINGS_MODULE."""
    module = os.environ["DJANGO_SETTINGS_MODULE"]
    source = f"settings.DATABASES['default'] of DJANGO_SETTINGS_MODULE={module}"
    try:
        import django
        from django.conf import settings
        from django.db import connections

        django.setup()
        if "default" not in settings.DATABASES:
            raise WatchError(f"{source} is not set; pass --database-url")
        default: dict[str, Any] = dict(settings.DATABASES["default"])
        vendor = connections["default"].vendor
    except WatchError:
        raise
    except Exception as error:
        raise WatchError(
            f"cannot load DJANGO_SETTINGS_MODULE={module}: {_one_line(error)}"
        ) from None
    if vendor != "postgresql":
        raise WatchError(
            f"{source} uses {default.get('ENGINE')!r} ({vendor}), not PostgreSQL; "
            "pass --database-url postgresql://user@host:port/ instead"
        )
    port = int(default["PORT"]) if str(default.get("PORT") or "").isdigit() else None
    user, password = default.get("USER"), default.get("PASSWORD")
    host = default.get("HOST")
    shown = _display_url(user, password, host, port)
    return Target(_params(user, password, host, port), shown, source)


def find_target(url: str | None) -> Target:
    """--database-url, else DATABASE_URL, else the settings' default alias."""
    if url is not None:
        return target_from_url(url, "--database-url")
    if os.environ.get("DATABASE_URL"):
        return target_from_url(os.environ["DATABASE_URL"], "DATABASE_URL")
    if os.environ.get("DJANGO_SETTINGS_MODULE"):
        return target_from_settings()
    raise WatchError(
        "no database to watch: pass --database-url postgresql://user@host:port/, "
        "or set DATABASE_URL or DJANGO_SETTINGS_MODULE"
    )


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def connect(target: Target) -> Any:
    """An autocommit connection to the target's ``postgres`` database."""
    try:
        import psycopg
    except ImportError:
        import psycopg2

        driver_error: type[Exception] = psycopg2.Error
        try:
            connection = psycopg2.connect(**target.params)
        except driver_error as error:
            raise _unreachable(target, error) from None
        connection.autocommit = True
        return connection
    try:
        return psycopg.connect(**target.params, autocommit=True)
    except psycopg.Error as error:
        raise _unreachable(target, error) from None


def _unreachable(target: Target, error: Exception) -> WatchError:
    return WatchError(
        f"cannot connect to PostgreSQL at {target.address} ({target.shown}, from "
        f"{target.source}): {_one_line(error)} -- start PostgreSQL there, or point "
        "--database-url (or DATABASE_URL) at the server your command uses"
    )


# -- sampling -------------------------------------------------------------------


class Sampler:
    """Sample pg_stat_activity from one session in a thread, into a Timeline."""

    def __init__(self, connection: Any, interval: float) -> None:
        self._connection = connection
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="django-safelive watch", daemon=True
        )
        self._started = 0.0
        with connection.cursor() as cursor:
            cursor.execute("SHOW max_connections")
            (max_connections,) = cursor.fetchone()
        self.timeline = Timeline(int(max_connections), interval)

    def _query(self) -> tuple[Row, ...]:
        with self._connection.cursor() as cursor:
            cursor.execute(_SAMPLE, [APPLICATION_NAME])
            return tuple(Row(*row) for row in cursor.fetchall())

    def _run(self) -> None:
        while True:
            try:
                rows = self._query()
            except Exception as error:
                self.timeline.error = _one_line(error)
                return
            at = time.monotonic() - self._started
            self.timeline.samples.append(Sample(at, rows))
            if self._stop.wait(self.timeline.interval):
                return

    @contextmanager
    def running(self) -> Iterator[Timeline]:
        """Sample until the block exits, however it exits; then close the session."""
        self._started = time.monotonic()
        try:
            self._thread.start()
            yield self.timeline
        finally:
            self._stop.set()
            if self._thread.is_alive():
                self._thread.join()
            self.timeline.duration = time.monotonic() - self._started
            self._connection.close()


# -- running the command ----------------------------------------------------------


@contextmanager
def _forward_sigterm(process: subprocess.Popen[bytes]) -> Iterator[None]:
    """Pass SIGTERM on to the command, so that we still report and clean up."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(
        signal.SIGTERM, lambda signum, frame: process.send_signal(signum)
    )
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_command(command: Sequence[str]) -> tuple[int, bool]:
    """Run `command` with our stdin/stdout/stderr; its status, and whether ^C came.

    The terminal sends Ctrl-C to the whole process group, so the command gets
    it too: we wait for it to finish its own cleanup, and kill it on a second ^C.
    """
    interrupted = False
    with subprocess.Popen(command) as process, _forward_sigterm(process):
        while True:
            try:
                status = process.wait()
                break
            except KeyboardInterrupt:
                if interrupted:
                    process.kill()
                interrupted = True
    # Killed by signal N: report it as a shell would, 128 + N.
    return (128 - status if status < 0 else status), interrupted


# -- the plot --------------------------------------------------------------------


def plot_writer() -> Callable[[Timeline, Path, str], None]:
    """Import matplotlib now, before the command runs, and return the writer."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise WatchError(
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
            f"{_clip(title, 80)} (max_connections {timeline.max_connections})"
        )
        axes.grid(alpha=0.3)
        figure.savefig(path, format="png", dpi=100)
        figure.clear()

    return write


# -- command line ----------------------------------------------------------------


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


def _fail(message: str) -> int:
    print(f"django-safelive watch: error: {message}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    """Run the command under observation; return the exit status."""
    command: list[str] = args.command or []
    if not command:
        return _fail(
            "no command to run: put it after --, e.g. "
            "python -m django_safelive watch -- pytest"
        )
    try:
        write_plot = plot_writer() if args.plot else None
        if args.plot and not args.plot.parent.is_dir():
            raise WatchError(f"--plot: no directory {str(args.plot.parent)!r}")
        target = find_target(args.database_url)
        sampler = Sampler(connect(target), args.interval)
    except WatchError as error:
        return _fail(str(error))

    with sampler.running() as timeline:
        try:
            status, interrupted = run_command(command)
        except OSError as error:
            message = f"cannot run {command[0]!r}: {error.strerror or error}"
            print(f"django-safelive watch: error: {message}", file=sys.stderr)
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
    peak = timeline.peak()
    peak_total = 0 if peak is None else peak.total
    if write_plot is not None:
        try:
            write_plot(timeline, args.plot, " ".join(command))
        except OSError as error:
            print(
                f"django-safelive watch: error: cannot write {str(args.plot)!r}: "
                f"{error.strerror or error}",
                file=sys.stderr,
            )
            status = status or 2
        else:
            print(f"Plot written to {args.plot}", file=sys.stderr)
    if args.fail_above is not None and peak_total > args.fail_above:
        print(
            f"django-safelive watch: the peak of {peak_total} session(s) exceeded "
            f"--fail-above {args.fail_above}",
            file=sys.stderr,
        )
        status = status or 3
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m django_safelive watch ...``, with `argv` after ``watch``."""
    from django_safelive.__main__ import main as cli

    return cli(["watch", *(sys.argv[1:] if argv is None else argv)])
