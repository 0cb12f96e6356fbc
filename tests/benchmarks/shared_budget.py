"""Wall time of test processes sharing one PostgreSQL server under
SERVER_BUDGET, against the same processes run one after the other.

Each process is a pytest run of tests/scale/shared_server.py (a live server
of its own with 2 workers, a budget of 3 sessions, rounds of 4 concurrent
requests), on a throwaway PostgreSQL with max_connections = 12::

    python -m tests.benchmarks.shared_budget [--processes 4] [--rounds 10] [--repeat 3]

"shared" starts every process at once with SERVER_BUDGET = 8 (each takes 4
slots: two run at a time, the others wait for slots); "one after the other"
runs them in turn without it. The peak counts every client session on the
cluster but the sampler's, the waiting processes' coordinators included.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from django_safelive._tools.cluster import Cluster

ROOT = Path(__file__).resolve().parent.parent
SERVER_BUDGET = 8
PER_PROCESS = {"SAFELIVE_MAX_SESSIONS": "3", "SAFELIVE_WORKERS": "2"}


class Peak:
    """The most client sessions on the cluster at once, sampled every 5 ms."""

    def __init__(self, cluster: Cluster) -> None:
        import psycopg

        self.peak = 0
        self._conn: Any = psycopg.connect(
            host=cluster.host, port=cluster.port, user="postgres", autocommit=True
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        query = (
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = "
            "'client backend' AND pid <> pg_backend_pid()"
        )
        while not self._stop.is_set():
            (count,) = self._conn.execute(query).fetchone()
            self.peak = max(self.peak, int(count))
            time.sleep(0.005)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        self._conn.close()
        return self.peak


def start(cluster: Cluster, rounds: int, env: dict[str, str]) -> subprocess.Popen[str]:
    datname = f"test_safelive_scale_bench_{uuid.uuid4().hex[:8]}"
    environ = {**os.environ, **PER_PROCESS, **env,
               "PGHOST": cluster.host, "PGPORT": str(cluster.port),
               "SCALE_ROUNDS": str(rounds),
               "SAFELIVE_TEST_DB_NAME": datname}  # fmt: skip
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
               "tests/scale/shared_server.py"]  # fmt: skip
    return subprocess.Popen(
        command, cwd=ROOT, env=environ, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def finish(process: subprocess.Popen[str]) -> None:
    output, _ = process.communicate(timeout=600)
    if process.returncode != 0:
        raise SystemExit(f"a test process failed:\n{output}")


def timed(
    cluster: Cluster, processes: int, rounds: int, shared: bool
) -> tuple[float, int]:
    """Wall time and peak sessions of one run of `processes` processes."""
    peak = Peak(cluster)
    started = time.monotonic()
    try:
        if shared:
            env = {"SAFELIVE_SERVER_BUDGET": str(SERVER_BUDGET)}
            running = [start(cluster, rounds, env) for _ in range(processes)]
            for process in running:
                finish(process)
        else:
            for _ in range(processes):
                finish(start(cluster, rounds, {}))
    finally:
        elapsed = time.monotonic() - started
        most = peak.stop()
    return elapsed, most


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks.shared_budget")
    parser.add_argument("--processes", type=int, default=4, help="default 4")
    parser.add_argument(
        "--rounds", type=int, default=10, help="rounds of requests each (default 10)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="default 3")
    args = parser.parse_args()
    times: dict[str, list[float]] = {"shared": [], "one after the other": []}
    peaks: dict[str, list[int]] = {name: [] for name in times}
    with Cluster(max_connections=12) as cluster:
        for _ in range(args.repeat):  # alternated, so that load hits both alike
            for name in times:
                elapsed, peak = timed(
                    cluster, args.processes, args.rounds, name == "shared"
                )
                times[name].append(elapsed)
                peaks[name].append(peak)
                print(f"{name}: {elapsed:.1f} s, peak {peak}", file=sys.stderr)
    print(
        f"{args.processes} processes, {args.rounds} rounds each, median of "
        f"{args.repeat}, {os.cpu_count()} CPUs:\n"
        "| run | wall time (s) | peak sessions |\n|---|---|---|"
    )
    for name in times:
        print(f"| {name} | {statistics.median(times[name]):.1f} | {max(peaks[name])} |")


if __name__ == "__main__":
    main()
