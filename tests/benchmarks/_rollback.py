"""``python -m tests.benchmarks --rollback``: one Schemathesis suite on four base
classes, side by side, with 36 extra tables for the flush to truncate.

The suite is written twice: with ``@given`` on the test method (Hypothesis
runs Django's set-up and teardown around every example) and with ``@given``
nested inside the test method (one set-up and teardown for all examples). Each
runs on Hypothesis's ``LiveServerTestCase``, django-safelive's pool server, the
rollback server, and Schemathesis's in-process WSGI transport inside
Hypothesis's ``TestCase``; round-robin, the median of --repeat runs, with the
test database's client sessions sampled throughout. Not a test: nothing here
asserts.
"""

from __future__ import annotations

import os
import statistics
import time
import unittest
from dataclasses import dataclass
from typing import Any

import schemathesis
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections, connections
from hypothesis import HealthCheck, given, settings
from hypothesis.extra import django as hypothesis_django

from django_safelive import hypothesis as safelive_hypothesis
from tests.benchmarks import _floor, _report, _suites
from tests.benchmarks._run import wait_empty
from tests.benchmarks._sessions import sampled
from tests.benchmarks.flushapp.models import TABLES
from tests.testapp.views import OPENAPI, TOKEN

AUTH = {"Authorization": f"Bearer {TOKEN}"}
SHAPES = ("method", "nested")
REFERENCE = "hypothesis"  # the ratios' first reference, (a)
IN_PROCESS = "wsgi"  # and their second, (d)
ROLLBACK = "rollback"


@dataclass(frozen=True)
class Variant:
    """A base class for the suite, and how the suite calls the application."""

    name: str
    label: str
    base: type[unittest.TestCase]
    http: bool


VARIANTS = [
    Variant(
        "hypothesis",
        "(a) hypothesis.extra.django.LiveServerTestCase",
        hypothesis_django.LiveServerTestCase,
        True,
    ),
    Variant(
        "pool",
        "(b) django_safelive.hypothesis.LiveServerTestCase",
        safelive_hypothesis.LiveServerTestCase,
        True,
    ),
    Variant(
        "rollback",
        "(c) django_safelive.hypothesis.RollbackLiveServerTestCase",
        safelive_hypothesis.RollbackLiveServerTestCase,
        True,
    ),
    Variant(
        "wsgi",
        "(d) hypothesis.extra.django.TestCase + Schemathesis WSGI",
        hypothesis_django.TestCase,
        False,
    ),
]


class InProcessApp(WSGIHandler):
    """Django's WSGI application as its test client calls it: without
    ``close_old_connections``, which inside the test's transaction (autocommit
    off) would take the connection for a broken one and close it."""

    def __call__(self, environ: Any, start_response: Any) -> Any:
        request_started.disconnect(close_old_connections)
        request_finished.disconnect(close_old_connections)
        try:
            response = super().__call__(environ, start_response)
            body = b"".join(response)
            response.close()  # request_finished, as the test client sends it
            return [body]
        finally:
            request_started.connect(close_old_connections)
            request_finished.connect(close_old_connections)


@dataclass
class Counts:
    calls: int = 0
    failures: int = 0


def suite(variant: Variant, shape: str, examples: int, counts: Counts) -> type:
    """The suite's test case class on `variant`'s base class, in `shape`."""
    app = InProcessApp()
    schema = (
        schemathesis.openapi.from_dict(OPENAPI)
        if variant.http
        else schemathesis.openapi.from_wsgi("/openapi.json", app)
    )
    strategy = schema.as_strategy()
    examples_settings = settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,  # the same examples on every variant
        suppress_health_check=list(HealthCheck),
    )

    def call(test: Any, case: Any) -> None:
        counts.calls += 1
        try:
            if variant.http:
                case.call_and_validate(base_url=test.live_server_url, headers=AUTH)
            else:
                case.call_and_validate(headers=AUTH)
        except Exception:  # a failed check: count it, no shrinking
            counts.failures += 1

    if shape == "method":

        class OnTheMethod(variant.base):  # type: ignore[name-defined,misc]
            @given(case=strategy)
            @examples_settings
            def test_api(self, case: Any) -> None:
                call(self, case)

        return OnTheMethod

    class Nested(variant.base):  # type: ignore[name-defined,misc]
        def test_api(self) -> None:
            @given(case=strategy)
            @examples_settings
            def example(case: Any) -> None:
                call(self, case)

            example()

    return Nested


def run_once(
    variant: Variant, shape: str, examples: int, datname: str
) -> dict[str, Any]:
    """Run the suite once: wall time (class set-up and teardown included),
    calls, failed checks, peak client sessions on the test database."""
    counts = Counts()
    case = suite(variant, shape, examples, counts)("test_api")
    result = unittest.TestResult()
    # From no session: the previous run's may linger a moment after closing.
    connections.close_all()
    wait_empty(datname)
    with sampled(datname) as sampler, _floor.counting_requests() as sent:
        began = time.perf_counter()
        unittest.TestSuite([case]).run(result)
        wall = time.perf_counter() - began
    problems = [text for _, text in (*result.errors, *result.failures)]
    if problems:
        raise RuntimeError(f"{variant.name}/{shape} failed:\n" + "\n".join(problems))
    return {
        "wall_s": wall,
        "calls": counts.calls,
        "http_requests": sent[0],
        "failures": counts.failures,
        "peak_sessions": sampler["peak"],
        "samples": sampler["samples"],
        "sample_interval_ms": sampler["mean_interval_ms"],
        "max_sample_interval_ms": sampler["max_interval_ms"],
        "load_average": round(os.getloadavg()[0], 2),
    }


def _medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "wall_s": statistics.median(run["wall_s"] for run in runs),
        "calls": max(run["calls"] for run in runs),
        "http_requests": max(run["http_requests"] for run in runs),
        "failures": max(run["failures"] for run in runs),
        "peak_sessions": max(run["peak_sessions"] for run in runs),
        "sample_interval_ms": max(run["sample_interval_ms"] for run in runs),
        "max_sample_interval_ms": max(run["max_sample_interval_ms"] for run in runs),
    }


def _ratio(value: float, reference: float) -> str:
    return f"{value / reference:.2f}x"


def table(results: dict[str, dict[str, dict[str, Any]]], markdown: bool) -> str:
    """Per shape and variant: median wall time, ratios, calls, peak sessions."""
    header = [
        "suite",
        "variant",
        "wall s (median)",
        "runs s",
        "/ (a)",
        "/ (d)",
        "calls",
        "failed checks",
        "peak sessions",
        "sampling interval ms (mean / longest)",
    ]
    rows = []
    for shape in SHAPES:
        done = results[shape]
        for variant in VARIANTS:
            median = done[variant.name]["median"]
            rows.append(
                [
                    f"@given {'on the method' if shape == 'method' else 'nested'}",
                    variant.label,
                    f"{median['wall_s']:.2f}",
                    " / ".join(
                        f"{r['wall_s']:.2f}" for r in done[variant.name]["runs"]
                    ),
                    _ratio(median["wall_s"], done[REFERENCE]["median"]["wall_s"]),
                    _ratio(median["wall_s"], done[IN_PROCESS]["median"]["wall_s"]),
                    str(median["calls"]),
                    str(median["failures"]),
                    str(median["peak_sessions"]),
                    f"{median['sample_interval_ms']:.1f} / "
                    f"{median['max_sample_interval_ms']:.0f}",
                ]
            )
    return _report.grid(header, rows, markdown=markdown)


def targets(results: dict[str, dict[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Issue 13's targets, on the ``@given``-on-the-method suite."""
    method = {name: done["median"] for name, done in results["method"].items()}
    rollback = method[ROLLBACK]["wall_s"]
    rounds = zip(
        results["method"][ROLLBACK]["runs"],
        results["method"][IN_PROCESS]["runs"],
        strict=True,
    )
    paired = ", ".join(f"{c['wall_s'] / d['wall_s']:.2f}x" for c, d in rounds)
    peak = max(results[shape][ROLLBACK]["median"]["peak_sessions"] for shape in SHAPES)
    return [
        {
            "target": "rollback <= 1.3x the in-process WSGI run (@given on the method)",
            "value": f"{rollback / method[IN_PROCESS]['wall_s']:.2f}x "
            f"(round by round: {paired})",
            "met": rollback <= 1.3 * method[IN_PROCESS]["wall_s"],
        },
        {
            "target": "rollback <= 0.2x Hypothesis's LiveServerTestCase (@given on "
            "the method)",
            "value": f"{rollback / method[REFERENCE]['wall_s']:.2f}x",
            "met": rollback <= 0.2 * method[REFERENCE]["wall_s"],
        },
        {
            "target": "rollback: peak 1 session per alias, every run of both suites",
            "value": str(peak),
            "met": peak == 1,
        },
    ]


def http_floor(
    results: dict[str, dict[str, dict[str, Any]]], per_call: dict[str, float]
) -> dict[str, float]:
    """The least any live server adds to the in-process run of the suite with
    ``@given`` on the method: what its client alone costs over real HTTP (see
    ``_floor``), for the requests the rollback server's run sent."""
    method = results["method"]
    in_process = method[IN_PROCESS]["median"]["wall_s"]
    floor = _floor.least(
        in_process, method[ROLLBACK]["median"]["http_requests"], per_call
    )
    return {**floor, "least_ratio": floor["least_s"] / in_process}


def main(argv: list[str]) -> None:
    args = _suites.arguments(
        "python -m tests.benchmarks --rollback",
        __doc__,
        argv,
        examples_help="per suite",
        examples=(100, 5),
    )
    about = _report.machine()
    about["conn_max_age"] = connections["default"].settings_dict["CONN_MAX_AGE"]
    about["extra_tables"] = TABLES
    began = time.monotonic()
    with _suites.test_database() as datname:
        # Untimed: imports, Hypothesis's and Schemathesis's first strategies.
        run_once(VARIANTS[-1], "nested", min(args.examples, 10), datname)
        by_name = {variant.name: variant for variant in VARIANTS}
        runs, loads = _suites.round_robin(
            args.repeat,
            list(SHAPES),
            list(by_name),
            lambda shape, name: run_once(by_name[name], shape, args.examples, datname),
        )
        per_call = _floor.per_call_ms(30 if args.quick else 300, AUTH)
    results = {
        shape: {
            name: {"median": _medians(done), "runs": done}
            for name, done in by_variant.items()
        }
        for shape, by_variant in runs.items()
    }
    about["load_average_range"] = [min(loads), max(loads)]
    about["elapsed_s"] = round(time.monotonic() - began)
    found = targets(results)
    floor = http_floor(results, per_call)
    print(
        f"{args.examples} examples per suite, median of {args.repeat} runs; "
        f"{TABLES} extra tables; CONN_MAX_AGE {about['conn_max_age']}; "
        f"{_report.suite_conditions(about, loads)}\n"
    )
    print(table(results, markdown=False))
    print(
        f"\nHTTP floor: one call through Schemathesis's HTTP transport to a "
        f"server that answers at once took {floor['http_ms']:.2f} ms, through "
        f"its in-process transport to an app that answers at once "
        f"{floor['wsgi_ms']:.2f} ms. Over real HTTP, the {floor['requests']} "
        f"requests of the suite with @given on the method cost at least "
        f"{floor['requests'] * floor['gap_ms'] / 1000:.2f} s more than in-process "
        f"whatever the server: {floor['least_ratio']:.2f}x the in-process run "
        f"at best."
    )
    print("\nTargets")
    for target in found:
        verdict = "met" if target["met"] else "NOT met"
        print(f"  {target['target']}: {target['value']}, {verdict}")
    _suites.write_outputs(
        args,
        lambda: table(results, markdown=True),
        {
            "machine": about,
            "examples": args.examples,
            "repeat": args.repeat,
            "variants": {v.name: v.label for v in VARIANTS},
            "results": results,
            "http_floor": floor,
            "targets": found,
        },
    )
