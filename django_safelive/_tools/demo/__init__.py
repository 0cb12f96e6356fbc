"""``python -m django_safelive demo``: the problem and the fix, side by side.

The same Schemathesis property test (django_safelive/_tools/demo/suite.py) runs twice
against a small bundled JSON API: on Hypothesis's ``LiveServerTestCase`` (Django's
threaded live server) and on django-safelive's. Each run is a subprocess with
its own test database, while a sampler counts that database's sessions in
``pg_stat_activity``. By default both run on a throwaway PostgreSQL with a small
``max_connections``, removed afterwards; ``--database-url`` uses an existing
server; with no PostgreSQL at all, the demo says so and runs on SQLite, where
sessions are counted in-process.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django_safelive._tools.cluster import Cluster, ClusterError
from django_safelive._tools.messages import ToolError
from django_safelive._tools.watch.plot import plot_writer
from django_safelive._tools.watch.sampling import Sample, Sampler, Timeline
from django_safelive._tools.watch.target import Target, connect, target_from_url

DEFAULT_MAX_CONNECTIONS = 12
RUNS = [
    ("stock", "hypothesis.extra.django.LiveServerTestCase"),
    ("safelive", "django_safelive.hypothesis.LiveServerTestCase"),
]


@dataclass
class Outcome:
    """One run of the suite, as the sampler and the suite saw it."""

    label: str
    returncode: int
    output: str
    report: dict[str, Any]
    peak: int
    timeline: Timeline | None

    @property
    def refused(self) -> int:
        """How often the output shows PostgreSQL refusing a session."""
        return self.output.count("too many clients")

    @property
    def requests_per_second(self) -> float:
        wall = self.report.get("wall", 0.0)
        return self.report.get("calls", 0) / wall if wall else 0.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url",
        metavar="URL",
        help="use this PostgreSQL server (postgresql://user:pass@host:port/db) "
        "instead of a throwaway one",
    )
    parser.add_argument(
        "--max-connections",
        type=int,
        default=DEFAULT_MAX_CONNECTIONS,
        metavar="N",
        help="max_connections of the throwaway server (default %(default)s)",
    )
    parser.add_argument(
        "--examples",
        type=int,
        default=30,
        metavar="N",
        help="Hypothesis examples per operation (default %(default)s)",
    )
    parser.add_argument(
        "--plot", metavar="FILE.png", help="write both session timelines to a PNG"
    )
    parser.epilog = (
        "Needs django-safelive's [all] extra (Hypothesis, Schemathesis, a "
        "PostgreSQL driver), and matplotlib for --plot."
    )


def _bad(message: str) -> int:
    print(f"django-safelive demo: {message}", file=sys.stderr)
    return 2


# Lines of a failed run's output printed after the table.
OUTPUT_TAIL = 40


def run(args: argparse.Namespace) -> int:
    """Run the suite on both servers and print the table; 0 if ours passed."""
    if args.max_connections < 5:
        return _bad("--max-connections must be at least 5 (3 are reserved).")
    if args.examples < 1:
        return _bad("--examples must be at least 1.")
    try:
        write_plot = plot_writer() if args.plot else None
    except ToolError as error:
        return _bad(str(error))

    with ExitStack() as cleanup:
        workdir = Path(tempfile.mkdtemp(prefix="safelive-demo-"))
        cleanup.callback(shutil.rmtree, workdir, ignore_errors=True)
        try:
            url, where = _database(args, workdir, cleanup)
            outcomes = [
                _run_suite(impl, label, url, args.examples, workdir)
                for impl, label in RUNS
            ]
        except ToolError as error:
            return _bad(str(error))

    _print_table(outcomes, where, args.examples)
    if write_plot is not None:
        _plot(outcomes, Path(args.plot))
        print(f"\nSession timelines written to {args.plot}")
    safe = outcomes[-1]
    if safe.returncode != 0:
        # Django's server failing is the point of the demo; ours failing is a
        # question, so say why.
        tail = "\n".join(safe.output.strip().splitlines()[-OUTPUT_TAIL:])
        print(f"\nThe end of {safe.label}'s output:\n{tail}")
    return 0 if safe.returncode == 0 else 1


def _database(
    args: argparse.Namespace, workdir: Path, cleanup: ExitStack
) -> tuple[str, str]:
    """The database to run on, and how to name it: --database-url, else a
    throwaway PostgreSQL (stopped by `cleanup`), else SQLite in `workdir`."""
    if args.database_url:
        return args.database_url, "the PostgreSQL at --database-url"
    try:
        cluster = Cluster(max_connections=args.max_connections)
        cleanup.callback(cluster.stop)
        print(
            "Starting a throwaway PostgreSQL with max_connections = "
            f"{args.max_connections}...",
            flush=True,
        )
        cluster.start()
    except ClusterError as error:
        print(
            f"No PostgreSQL to run on: {error}.\nRunning on SQLite instead: "
            "sessions are counted in-process, and no server refuses them.",
            flush=True,
        )
        return f"sqlite:///{workdir / 'demo.sqlite3'}", "SQLite"
    where = f"a throwaway PostgreSQL, max_connections = {args.max_connections}"
    return cluster.url, where


def _run_suite(
    impl: str, label: str, url: str, examples: int, workdir: Path
) -> Outcome:
    print(f"Running the suite on {label}...", flush=True)
    test_db = f"test_safelive_demo_{impl}_{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "django_safelive._tools.demo.settings",
        "SAFELIVE_DEMO_DATABASE": url,
        "SAFELIVE_DEMO_TEST_DB": test_db,
        "SAFELIVE_DEMO_IMPL": impl,
        "SAFELIVE_DEMO_EXAMPLES": str(examples),
    }
    command = [sys.executable, "-m", "django_safelive._tools.demo.run"]
    postgres = not url.startswith("sqlite:")
    timeline = None
    if postgres:
        target = target_from_url(url, "the demo")
        with Sampler(connect(target), interval=0.02).running() as timeline:
            done = _subprocess(command, env, workdir)
        _drop_leftovers(target, test_db)
        # Only this run's test database: the server may serve others too.
        timeline.samples = [
            Sample(sample.at, tuple(r for r in sample.rows if r.datname == test_db))
            for sample in timeline.samples
        ]
    else:
        done = _subprocess(command, env, workdir)
    output = done.stdout + done.stderr
    report: dict[str, Any] = {}
    for line in done.stdout.splitlines():
        if line.startswith("SAFELIVE-DEMO "):
            report = json.loads(line.removeprefix("SAFELIVE-DEMO "))
    if timeline is not None:
        peak = max((sample.total for sample in timeline.samples), default=0)
    else:
        peak = int(report.get("in_process_peak", 0))
    return Outcome(label, done.returncode, output, report, peak, timeline)


def _subprocess(
    command: list[str], env: dict[str, str], cwd: Path
) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            command, env=env, cwd=cwd, capture_output=True, text=True, timeout=300
        )
    except subprocess.TimeoutExpired as error:
        raise ToolError(f"the demo suite did not finish in {error.timeout}s") from None


def _drop_leftovers(target: Target, test_db: str) -> None:
    """Django's server can leave sessions behind that keep its test database
    from being dropped; end them and drop it, leaving the server as it was."""
    connection = connect(target)
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s",
                [test_db],
            )
            cursor.execute(f'DROP DATABASE IF EXISTS "{test_db}"')
    finally:
        connection.close()


def _print_table(outcomes: list[Outcome], where: str, examples: int) -> None:
    print(
        f"\nSchemathesis: 3 operations x {examples} examples, CONN_MAX_AGE = 600, "
        f"clients that never close their sessions; on {where}.\n"
    )
    header = (
        f"{'live server':<46} {'result':<7} {'peak sessions':>13} "
        f"{'too many clients':>16} {'5xx':>4} {'requests':>8} {'req/s':>6} "
        f"{'wall':>6}"
    )
    print(header)
    print("-" * len(header))
    for outcome in outcomes:
        result = "passed" if outcome.returncode == 0 else "FAILED"
        print(
            f"{outcome.label:<46} {result:<7} {outcome.peak:>13} "
            f"{outcome.refused:>16} {outcome.report.get('server_errors', 0):>4} "
            f"{outcome.report.get('calls', 0):>8} "
            f"{outcome.requests_per_second:>6.0f} "
            f"{outcome.report.get('wall', 0.0):>5.1f}s"
        )


def _plot(outcomes: list[Outcome], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 4), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for outcome in outcomes:
        if outcome.timeline is None:
            continue
        samples = outcome.timeline.samples
        axes.plot(
            [sample.at for sample in samples],
            [sample.total for sample in samples],
            drawstyle="steps-post",
            label=f"{outcome.label} (peak {outcome.peak})",
        )
    axes.set_xlabel("seconds since the run started")
    axes.set_ylabel("sessions on the test database")
    axes.set_ylim(bottom=0)
    axes.legend()
    axes.grid(alpha=0.3)
    figure.savefig(path, format="png", dpi=100)
    figure.clear()
