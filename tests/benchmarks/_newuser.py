"""``python -m tests.benchmarks --newuser``: a user's Schemathesis suite, run
as it is on Hypothesis's live server and with only its import swapped for
django-safelive's, as a new user tries the library.

The suite is ``tests/benchmarks/ninjaapp/suite.py``: a django-ninja API of
twelve operations behind Bearer tokens kept in the database, under Django's
default CONN_MAX_AGE = 0, with the flush app's thirty-six extra tables. Its
source is run three times, its one import line replaced; round-robin, the
median of --repeat runs, with the test database's client sessions sampled
throughout. Not a test: nothing here asserts.
"""

from __future__ import annotations

import os
import statistics
import time
import types
import unittest
from pathlib import Path
from typing import Any

from django.db import connections

from tests.benchmarks import _report, _suites
from tests.benchmarks._run import wait_empty
from tests.benchmarks._sessions import sampled
from tests.benchmarks.flushapp.models import TABLES

SUITE = Path(__file__).with_name("ninjaapp") / "suite.py"
IMPORT = "from hypothesis.extra.django import LiveServerTestCase\n"
EXAMPLES = "EXAMPLES = 25"
# (name, what the import line becomes, label)
VARIANTS = [
    ("hypothesis", IMPORT, "as written: hypothesis.extra.django.LiveServerTestCase"),
    (
        "safelive",
        "from django_safelive.hypothesis import LiveServerTestCase\n",
        "django_safelive.hypothesis.LiveServerTestCase",
    ),
    (
        "rollback",
        "from django_safelive.hypothesis import RollbackLiveServerTestCase "
        "as LiveServerTestCase\n",
        "django_safelive.hypothesis.RollbackLiveServerTestCase",
    ),
]
REFERENCE = "hypothesis"
# The suite's test cases: (class, test), and how the table names them.
TESTS = [
    ("EveryOperationTests", "test_operations", "12 operations x {n}, nested @given"),
    ("APITests", "test_api", "{all} examples, @given on the method"),
]


def load(name: str, import_line: str, examples: int) -> types.ModuleType:
    """The suite's module with its import line replaced by `import_line`."""
    source = SUITE.read_text()
    if source.count(IMPORT) != 1:
        raise RuntimeError(f"{SUITE} no longer has the line {IMPORT!r} once")
    if source.count(EXAMPLES) != 1:
        raise RuntimeError(f"{SUITE} no longer has the line {EXAMPLES!r} once")
    source = source.replace(IMPORT, import_line)
    # The one other line --examples changes: the suite's size.
    source = source.replace(EXAMPLES, f"EXAMPLES = {examples}")
    module = types.ModuleType(f"suite_{name}")
    module.__file__ = str(SUITE)
    exec(compile(source, str(SUITE), "exec"), module.__dict__)  # noqa: S102
    return module


def run_once(
    module: types.ModuleType, test: tuple[str, str, str], datname: str
) -> dict[str, Any]:
    """Run one test of the suite: wall time (class set-up and teardown
    included), peak client sessions on the test database."""
    cls_name, method, _ = test
    case = getattr(module, cls_name)(method)
    result = unittest.TestResult()
    connections.close_all()
    wait_empty(datname)
    with sampled(datname) as sampler:
        began = time.perf_counter()
        unittest.TestSuite([case]).run(result)
        wall = time.perf_counter() - began
    problems = [text for _, text in (*result.errors, *result.failures)]
    if problems:
        raise RuntimeError(
            f"{module.__name__}.{cls_name} failed:\n" + "\n".join(problems)
        )
    return {
        "wall_s": wall,
        "peak_sessions": sampler["peak"],
        "samples": sampler["samples"],
        "load_average": round(os.getloadavg()[0], 2),
    }


def table(
    results: dict[str, dict[str, dict[str, Any]]], examples: int, markdown: bool
) -> str:
    """Per test and variant: median wall time, runs, ratio, peak sessions."""
    header = [
        "test",
        "base class",
        "wall s (median)",
        "runs s",
        "/ as written",
        "peak sessions",
    ]
    rows = []
    for cls_name, _, label in TESTS:
        done = results[cls_name]
        reference = done[REFERENCE]["median"]
        for name, _, base in VARIANTS:
            median = done[name]["median"]
            rows.append(
                [
                    label.format(n=examples, all=4 * examples),
                    base,
                    f"{median:.2f}",
                    " / ".join(f"{run['wall_s']:.2f}" for run in done[name]["runs"]),
                    f"{median / reference:.2f}x",
                    str(max(run["peak_sessions"] for run in done[name]["runs"])),
                ]
            )
    return _report.grid(header, rows, markdown=markdown)


def main(argv: list[str]) -> None:
    args = _suites.arguments(
        "python -m tests.benchmarks --newuser",
        __doc__,
        argv,
        examples_help="per operation, the suite's EXAMPLES",
        examples=(25, 2),
    )
    about = _report.machine()
    about["conn_max_age"] = connections["default"].settings_dict["CONN_MAX_AGE"]
    about["extra_tables"] = TABLES
    began = time.monotonic()
    modules = {name: load(name, line, args.examples) for name, line, _ in VARIANTS}
    tests = {test[0]: test for test in TESTS}
    with _suites.test_database() as datname:
        # Untimed: imports, Hypothesis's and Schemathesis's first strategies.
        run_once(load("warm_up", VARIANTS[-1][1], 2), TESTS[0], datname)
        runs, loads = _suites.round_robin(
            args.repeat,
            list(tests),
            list(modules),
            lambda test, name: run_once(modules[name], tests[test], datname),
        )
    results = {
        cls_name: {
            name: {
                "median": statistics.median(run["wall_s"] for run in done),
                "runs": done,
            }
            for name, done in by_variant.items()
        }
        for cls_name, by_variant in runs.items()
    }
    about["load_average_range"] = [min(loads), max(loads)]
    about["elapsed_s"] = round(time.monotonic() - began)
    print(
        f"{args.examples} examples per operation, median of {args.repeat} runs; "
        f"{TABLES} extra tables; CONN_MAX_AGE {about['conn_max_age']}; "
        f"{_report.suite_conditions(about, loads)}\n"
    )
    print(table(results, args.examples, markdown=False))
    _suites.write_outputs(
        args,
        lambda: table(results, args.examples, markdown=True),
        {
            "machine": about,
            "examples": args.examples,
            "repeat": args.repeat,
            "results": results,
        },
    )
