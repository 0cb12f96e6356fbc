"""``python -m tests.benchmarks._sessions DATNAME``: sample a database's client
sessions from a process of its own.

A sampler thread inside the benchmark's process waits for the GIL behind the
in-process variants, whose test thread never sleeps, and samples every 20 to
30 ms instead. This one samples every 2 ms plus the query's time; it prints
``ready`` once connected, samples until its input ends, then prints its peak,
the number of samples and the mean and longest interval between two, as JSON.
``sampled`` runs it around a block.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests._sampler import connect, count_sessions

ROOT = Path(__file__).resolve().parents[2]


def main(datname: str) -> None:
    conn = connect()
    stop = threading.Event()

    def wait_for_end_of_input() -> None:
        sys.stdin.read()
        stop.set()

    threading.Thread(target=wait_for_end_of_input, daemon=True).start()
    print("ready", flush=True)
    peak = samples = 0
    longest = 0.0
    began = last = time.perf_counter()
    try:
        while not stop.is_set():
            peak = max(peak, count_sessions(conn, datname))
            samples += 1
            now = time.perf_counter()
            longest = max(longest, now - last)
            last = now
            time.sleep(0.002)
    finally:
        conn.close()
    elapsed = time.perf_counter() - began
    print(
        json.dumps(
            {
                "peak": peak,
                "samples": samples,
                "mean_interval_ms": elapsed * 1000 / max(samples, 1),
                "max_interval_ms": longest * 1000,
            }
        ),
        flush=True,
    )


@contextmanager
def sampled(datname: str) -> Iterator[dict[str, Any]]:
    """Sample `datname`'s client sessions from a process of its own; its
    figures, once the block has ended."""
    sampler = subprocess.Popen(
        [sys.executable, "-m", "tests.benchmarks._sessions", datname],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert sampler.stdout is not None
    if sampler.stdout.readline().strip() != "ready":
        sampler.kill()
        sampler.wait()
        raise RuntimeError("the session sampler did not start")
    found: dict[str, Any] = {}
    try:
        yield found
    finally:
        out, _ = sampler.communicate(timeout=60)  # ends its input: it stops
        found.update(json.loads(out))


if __name__ == "__main__":
    main(sys.argv[1])
