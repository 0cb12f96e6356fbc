"""``python -m tests.benchmarks._sessions DATNAME``: sample a database's client
sessions from a process of its own.

A sampler thread inside the benchmark's process waits for the GIL behind the
in-process variants, whose test thread never sleeps, and samples every 20 to
30 ms instead. This one samples every 2 ms plus the query's time; it prints
``ready`` once connected, samples until its input ends, then prints its peak,
the number of samples and the mean and longest interval between two, as JSON.
"""

from __future__ import annotations

import json
import sys
import threading
import time

from tests._sampler import connect, count_sessions


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


if __name__ == "__main__":
    main(sys.argv[1])
