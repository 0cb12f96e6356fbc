"""``python -m tests.benchmarks --classes``: what starting and stopping its live
server costs a test case class, on Django's server and on ours.

Each class is driven as unittest drives it around its tests: ``setUpClass()``
(start), then ``tearDownClass()`` and the class cleanups (stop), with no test
in between, so the figures are the server's alone: Django's
``LiveServerTestCase`` (Hypothesis's is the same server), ours in pool and in
single mode, the rollback class, our ASGI class and, with the ``daphne``
package, Channels' ``ChannelsLiveServerTestCase``. Each figure is the median
of --repeat cycles, the classes taken round-robin. Not a test: nothing here
asserts.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time
from typing import Any

import django.test

import django_safelive

KINDS: dict[str, str] = {
    "django": "django.test.LiveServerTestCase",
    "pool": "django_safelive.LiveServerTestCase (pool mode, the default)",
    "single": "django_safelive.LiveServerTestCase, single mode",
    "rollback": "django_safelive.RollbackLiveServerTestCase",
    "asgi": "django_safelive.ASGILiveServerTestCase",
    "channels": "channels.testing.ChannelsLiveServerTestCase (Daphne, a child process)",
}


def _nothing(self: Any) -> None:
    """The test method of the classes below, never run."""


def case_class(kind: str) -> Any:
    """A test case class of `kind` with one test that never runs."""
    attributes: dict[str, Any] = {"runTest": _nothing}
    base: type
    if kind == "django":
        base = django.test.LiveServerTestCase
    elif kind in ("pool", "single"):
        base = django_safelive.LiveServerTestCase
        attributes["server_mode"] = kind
    elif kind == "rollback":
        base = django_safelive.RollbackLiveServerTestCase
    elif kind == "asgi":
        base = django_safelive.ASGILiveServerTestCase
    else:
        from channels.testing import ChannelsLiveServerTestCase

        base = ChannelsLiveServerTestCase
    return type(f"Bench{kind.title()}", (base,), attributes)


def cycle(kind: str) -> dict[str, Any]:
    """Start and stop a fresh class of `kind` once: the times, in ms."""
    cls = case_class(kind)
    began = time.perf_counter()
    try:
        cls.setUpClass()
    except BaseException:
        cls.doClassCleanups()
        raise
    started = time.perf_counter()
    try:
        cls.tearDownClass()
    finally:
        cls.doClassCleanups()
    stopped = time.perf_counter()
    if cls.tearDown_exceptions:
        raise cls.tearDown_exceptions[0][1]
    return {
        "start_ms": (started - began) * 1000,
        "stop_ms": (stopped - started) * 1000,
        "total_ms": (stopped - began) * 1000,
        "wall_s": stopped - began,
        "load_average": round(os.getloadavg()[0], 2),
    }


def kinds() -> list[str]:
    """The classes measured: Channels' only where Daphne is installed."""
    have_daphne = importlib.util.find_spec("daphne") is not None
    return [kind for kind in KINDS if kind != "channels" or have_daphne]


def table(medians: dict[str, dict[str, float]], *, markdown: bool) -> str:
    """The medians, with each total's ratio to Django's."""
    header = ["class", "start ms", "stop ms", "start + stop ms", "x Django's"]
    reference = medians["django"]["total_ms"]
    rows = [
        [
            kind,
            f"{figures['start_ms']:.1f}",
            f"{figures['stop_ms']:.1f}",
            f"{figures['total_ms']:.1f}",
            f"{figures['total_ms'] / reference:.3f}x",
        ]
        for kind, figures in medians.items()
    ]
    if markdown:
        lines = [header, ["---", *["--:"] * (len(header) - 1)], *rows]
        return "\n".join("| " + " | ".join(line) + " |" for line in lines)
    widths = [max(len(line[i]) for line in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True))
        for line in [header, *rows]
    )


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tests.benchmarks --classes",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: 3 cycles per class"
    )
    parser.add_argument(
        "--repeat", type=int, help="cycles per class (default 11, --quick 3)"
    )
    parser.add_argument("--json", metavar="FILE", help="write medians and cycles")
    parser.add_argument("--markdown", metavar="FILE", help="write the table")
    args = parser.parse_args(argv)
    repeat = args.repeat or (3 if args.quick else 11)
    if repeat < 1:
        parser.error("--repeat must be at least 1")

    from tests.benchmarks import _report, _suites

    about = _report.machine()
    began = time.monotonic()
    with _suites.test_database():
        # Untimed: each class's imports and first start.
        for kind in kinds():
            cycle(kind)
        runs, loads = _suites.round_robin(
            repeat, ["classes"], kinds(), lambda _group, kind: cycle(kind)
        )
    cycles = runs["classes"]
    medians = {
        kind: {
            figure: statistics.median(done[figure] for done in cycles[kind])
            for figure in ("start_ms", "stop_ms", "total_ms")
        }
        for kind in cycles
    }
    about["elapsed_s"] = round(time.monotonic() - began)
    print(
        f"A test case class's live server started and stopped, median of {repeat} "
        f"cycles; {_report.suite_conditions(about, loads)}\n"
    )
    print(table(medians, markdown=False))
    print()
    for kind in medians:
        print(f"{kind}: {KINDS[kind]}")
    _suites.write_outputs(
        args,
        lambda: table(medians, markdown=True),
        {
            "machine": about,
            "repeat": repeat,
            "classes": {kind: KINDS[kind] for kind in medians},
            "medians": medians,
            "cycles": cycles,
        },
    )


if __name__ == "__main__":
    main(sys.argv[1:])
