"""``python -m tests.benchmarks --asgi``: Channels' ``ChannelsLiveServerTestCase``
(Daphne in a child process) against django-safelive's, in pool and in single
mode, under CONN_MAX_AGE 0 and 600, on the tests' ASGI app (tests.asgiapp).

Each server is measured in three phases, each on a server started for it as
its test case's setUpClass starts it: 24 keep-alive HTTP clients (GET
/asgi/items/, an async view on the async ORM, and GET /asgi/create/, a sync
view writing a row, in turn); 8 WebSockets sending messages to /ws/items/ (a
Channels consumer writing a row through database_sync_to_async); both at
once. The clients run in a process of their own. Figures: requests/s and
messages/s, median latency, the peak of sessions on the test database
(sampled from an independent session in another process), errors (non-200s,
failed requests, unanswered messages) and the sessions PostgreSQL refused
("too many clients", from its log); each the median of --repeat runs,
round-robin.

Channels' class under CONN_MAX_AGE 600 may open a session per request: so
this mode runs on a throwaway PostgreSQL (``Cluster``, max_connections
--max-connections) and never on the configured server, which other test runs
may share. Without the ``daphne`` package, Channels' rows are left out. Not a
test: nothing here asserts.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from django_safelive._tools.cluster import Cluster, ClusterError

ROOT = Path(__file__).resolve().parents[2]
# (normal, --quick): requests per HTTP client, messages per WebSocket, runs.
DEFAULTS = {"requests": (40, 4), "messages": (50, 5), "repeat": (3, 1)}
KINDS = ("channels", "pool", "single")
AGES = (0, 600)
VARIANTS = [f"{kind}@{age}" for age in AGES for kind in KINDS]


class LoggedCluster(Cluster):
    """The throwaway cluster, and where its server log is."""

    @property
    def log(self) -> Path:
        """The server's log: a refused session is a line of it."""
        return self._dir / "log"


def arguments(argv: list[str]) -> argparse.Namespace:
    """The --asgi mode's options (its measuring process parses them again)."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.benchmarks --asgi",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: 4 requests per HTTP client, 5 messages per WebSocket, 1 run",
    )
    parser.add_argument(
        "--requests", type=int, help="per HTTP client and phase (default 40)"
    )
    parser.add_argument(
        "--messages", type=int, help="per WebSocket and phase (default 50)"
    )
    parser.add_argument("--http-clients", type=int, default=24, help="default 24")
    parser.add_argument("--websockets", type=int, default=8, help="default 8")
    parser.add_argument("--repeat", type=int, help="runs per server (default 3)")
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help="comma-separated, default %(default)s",
    )
    parser.add_argument(
        "--max-connections",
        type=int,
        default=100,
        help="of the throwaway PostgreSQL (default %(default)s)",
    )
    parser.add_argument("--json", metavar="FILE", help="write medians and runs")
    parser.add_argument(
        "--markdown", metavar="FILE", help="write the table as Markdown"
    )
    args = parser.parse_args(argv)
    for name, (normal, quick) in DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else normal)
    unknown = set(args.variants.split(",")) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}; choose from {VARIANTS}")
    if args.max_connections < 10:
        parser.error("--max-connections must be at least 10")
    return args


def main(argv: list[str]) -> int:
    """Start the throwaway cluster, measure in a process pointed at it, stop it."""
    # --help and bad options before a cluster starts.
    max_connections = arguments(argv).max_connections
    try:
        cluster = LoggedCluster(max_connections=max_connections)
    except ClusterError as error:
        print(f"--asgi needs a throwaway PostgreSQL: {error}", file=sys.stderr)
        return 2
    print(
        f"Starting a throwaway PostgreSQL, max_connections = {max_connections}...",
        file=sys.stderr,
        flush=True,
    )
    with cluster:
        env = {
            **os.environ,
            # The settings and the samplers read where the server is.
            "PGHOST": cluster.host,
            "PGPORT": str(cluster.port),
            "PGUSER": "postgres",
            "SAFELIVE_TEST_DB": "postgres",
            "SAFELIVE_TEST_PG_NAME": "postgres",
            "SAFELIVE_BENCH_PG_LOG": str(cluster.log),
        }
        env.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
        env.setdefault("SAFELIVE_TEST_DB_NAME", "test_safelive_bench_asgi")
        command = [sys.executable, "-m", "tests.benchmarks._asgi_run", *argv]
        return subprocess.run(command, env=env, cwd=ROOT).returncode
