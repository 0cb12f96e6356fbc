"""``python -m tests.benchmarks --quick``: every variant measured, the bounds kept,
the targets reported."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from django_safelive._tools.cluster import find_bindir

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = [
    "stock@0",
    "stock+pgpool@0",
    "single@0",
    "pool-4@0",
    "stock@600",
    "single@600",
    "pool-4@600",
    "from_wsgi",
]
SAFELIVE = {"single@0": 1, "pool-4@0": 4, "single@600": 1, "pool-4@600": 4}
HTTP = [name for name in VARIANTS if name != "from_wsgi"]
BREAKDOWN = {
    f"{client}_{figure}"
    for client in ("keepalive", "fresh")
    for figure in ("server_ms", "app_ms", "connects", "empty_reads")
}
RESET = {
    "reset_ms",
    "reset_full_ms",
    "reset_empty_ms",
    "reset_empty_full_ms",
    "reset_sessions",
    "reset_exit_after_ms",
    "reset_peak_sessions",
}
FIGURES = {
    "fresh_ms",
    "keepalive_ms",
    "fresh_req_s",
    "fresh_errors",
    "fresh_peak_sessions",
    *BREAKDOWN,
    *RESET,
    "read_req_s",
    "write_req_s",
    "read_errors",
    "write_errors",
    "peak_sessions",
    "schemathesis_s",
    "schemathesis_calls",
    "schemathesis_failures",
    "schemathesis_peak_sessions",
    "drain_sessions",
    "terminate_s",
    "drain_s",
    "drain_left",
}
ASGI_PHASES = ("one", "http", "ws", "both")
MACHINE = {"platform", "cpu_count", "python", "django", "driver", "postgresql"}


def run_benchmark(
    tmp_path_factory: pytest.TempPathFactory, label: str, *args: str
) -> tuple[str, dict[str, Any]]:
    """Run ``python -m tests.benchmarks *args --json FILE`` on a database of its own
    (no other process can create or drop it); its output and its JSON."""
    path = tmp_path_factory.mktemp("bench") / f"{label}.json"
    base = os.environ.get("SAFELIVE_TEST_DB_NAME", "test_safelive")
    name = f"{base}_{label}_{uuid.uuid4().hex[:8]}"
    done = subprocess.run(
        [sys.executable, "-m", "tests.benchmarks", *args, "--json", str(path)],
        cwd=ROOT,
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "SAFELIVE_TEST_DB_NAME": name,
        },
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result: dict[str, Any] = json.loads(path.read_text())
    return done.stdout, result


# Session scope: under pytest-xdist another group's test may run between two
# of this module's, which would tear a module fixture down and run it again.
@pytest.fixture(scope="session")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The JSON of one quick benchmark run."""
    output, result = run_benchmark(tmp_path_factory, "bench", "--quick")
    headings = ("fresh connection", "Requests/s", "Targets", "targets met", "floor")
    for heading in headings:
        assert heading in output, output
    return result


def test_every_variant_and_figure(report: dict[str, Any]) -> None:
    """The JSON has every variant, each with every figure, and the machine."""
    assert list(report["variants"]) == VARIANTS
    for name, variant in report["variants"].items():
        assert set(variant["median"]) >= FIGURES, name
        assert len(variant["runs"]) == 1, name
    assert set(report["machine"]) >= MACHINE


def test_http_variants_measured_at_every_client_count(report: dict[str, Any]) -> None:
    """Live servers get 1, 8 and 32 keep-alive clients and 1 and 32 fresh ones;
    in-process WSGI one client only, and no fresh connection."""
    for name, variant in report["variants"].items():
        expected = ["1"] if name == "from_wsgi" else ["1", "8", "32"]
        for figure in ("read_req_s", "write_req_s", "peak_sessions"):
            assert list(variant["median"][figure]) == expected, (name, figure)
        fresh = [] if name == "from_wsgi" else ["1", "32"]
        for figure in ("fresh_req_s", "fresh_errors", "fresh_peak_sessions"):
            assert list(variant["median"][figure]) == fresh, (name, figure)


def test_variants_run_under_their_database_settings(report: dict[str, Any]) -> None:
    """CONN_MAX_AGE 0 and 600 side by side; the psycopg pool only under 0."""
    ages = {
        name: variant["conn_max_age"] for name, variant in report["variants"].items()
    }
    assert ages == {
        name: 600 if name.endswith("600") or name == "from_wsgi" else 0
        for name in VARIANTS
    }
    pooled = [
        name for name, variant in report["variants"].items() if variant["pg_pool"]
    ]
    assert pooled == ["stock+pgpool@0"]


def test_latency_breakdown_and_reset_figures(report: dict[str, Any]) -> None:
    """Every live server has a latency and its server-side breakdown; only
    django-safelive a reset cost; in-process WSGI a latency only."""
    for name, variant in report["variants"].items():
        median = variant["median"]
        assert median["keepalive_ms"] > 0, name
        if name in HTTP:
            assert median["fresh_ms"] > 0, name
            for figure in ("keepalive_server_ms", "fresh_server_ms", "fresh_app_ms"):
                assert median[figure] > 0, (name, figure)
        else:
            assert median["fresh_ms"] is None
        for figure in RESET - {"reset_exit_after_ms"}:
            assert (median[figure] is not None) == (name in SAFELIVE), (name, figure)


def test_targets_reported_for_safelive_variants(report: dict[str, Any]) -> None:
    """Five targets per django-safelive variant, each with a verdict: all have
    stock@0 (and stock+pgpool@0) to compare with."""
    targets = report["targets"]
    assert {target["variant"] for target in targets} == set(SAFELIVE)
    assert len(targets) == 5 * len(SAFELIVE)
    assert all(isinstance(target["met"], bool) for target in targets), targets


def test_schemathesis_floor(report: dict[str, Any]) -> None:
    """The Schemathesis floor counts every HTTP request the run sent and puts
    a server that cost nothing between the in-process run and stock@0's."""
    floor = report["schemathesis_floor"]
    variants = report["variants"]
    examples = variants["stock@0"]["median"]["schemathesis_calls"]
    for name in VARIANTS[:-1]:
        # At least the call of every example; Schemathesis's checks add more.
        assert variants[name]["median"]["schemathesis_requests"] >= examples, name
    assert variants["from_wsgi"]["median"]["schemathesis_requests"] is None
    assert floor["examples"] == examples
    assert floor["http_ms"] > floor["wsgi_ms"] > 0
    assert floor["connect_ms"] > 0
    in_process = variants["from_wsgi"]["median"]["schemathesis_s"]
    assert in_process < floor["least_s"]
    assert floor["least_ratio"] == pytest.approx(
        floor["least_s"] / variants["stock@0"]["median"]["schemathesis_s"]
    )


def test_safelive_sessions_stay_within_workers(report: dict[str, Any]) -> None:
    """django-safelive never has more than its workers plus the test thread's."""
    for name, workers in SAFELIVE.items():
        for run in report["variants"][name]["runs"]:
            peaks = [*run["peak_sessions"].values(), run["drain_sessions"]]
            peaks += run["fresh_peak_sessions"].values()
            peaks.append(run["schemathesis_peak_sessions"])
            peaks.append(run["reset_peak_sessions"])
            assert max(peaks) <= workers + 1, (name, run)


def test_safelive_serves_without_errors(report: dict[str, Any]) -> None:
    """Ours answer every request, 32 clients too, fresh connections or kept
    alive: extra clients queue, never fail."""
    for name in SAFELIVE:
        run = report["variants"][name]["runs"][0]
        errors = [
            *run["read_errors"].values(),
            *run["write_errors"].values(),
            *run["fresh_errors"].values(),
        ]
        assert (sum(errors), run["schemathesis_failures"]) == (0, 0), name


@pytest.fixture(scope="session")
def rollback_report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The JSON of one quick ``--rollback`` run."""
    output, result = run_benchmark(
        tmp_path_factory, "rb", "--rollback", "--quick", "--examples", "3"
    )
    assert "Targets" in output, output
    assert "HTTP floor" in output, output
    return result


def test_rollback_suite_on_every_base_class(rollback_report: dict[str, Any]) -> None:
    """Both suites run on the four base classes, every example called and
    passing its checks, the flush app's tables installed."""
    assert list(rollback_report["variants"]) == [
        "hypothesis",
        "pool",
        "rollback",
        "wsgi",
    ]
    assert rollback_report["machine"]["extra_tables"] >= 30
    for shape in ("method", "nested"):
        for name, done in rollback_report["results"][shape].items():
            assert done["median"]["calls"] >= 3, (shape, name)
            assert done["median"]["failures"] == 0, (shape, name)
            sent = done["median"]["http_requests"]
            if name == "wsgi":
                assert sent == 0, shape
            else:
                assert sent >= done["median"]["calls"], (shape, name)
    assert len(rollback_report["targets"]) == 3


def test_rollback_http_floor(rollback_report: dict[str, Any]) -> None:
    """The HTTP floor adds the rollback run's requests at the measured cost
    per call to the in-process run."""
    floor = rollback_report["http_floor"]
    method = rollback_report["results"]["method"]
    assert floor["requests"] == method["rollback"]["median"]["http_requests"]
    assert floor["http_ms"] > floor["wsgi_ms"] > 0
    in_process = method["wsgi"]["median"]["wall_s"]
    assert floor["least_s"] == pytest.approx(
        in_process + floor["requests"] * floor["gap_ms"] / 1000
    )
    assert floor["least_ratio"] > 1


def test_rollback_suite_on_one_session(rollback_report: dict[str, Any]) -> None:
    """The rollback server and in-process WSGI never had a second session."""
    for shape in ("method", "nested"):
        for name in ("rollback", "wsgi"):
            run = rollback_report["results"][shape][name]["runs"][0]
            assert run["samples"] > 0, (shape, name)
            assert run["peak_sessions"] == 1, (shape, name)


@pytest.fixture(scope="session")
def asgi_report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The JSON of one quick ``--asgi`` run, on a throwaway PostgreSQL."""
    if find_bindir() is None:
        pytest.skip("no PostgreSQL server binaries for the --asgi mode's cluster")
    output, result = run_benchmark(
        tmp_path_factory, "asgi", "--asgi", "--quick", "--messages", "3"
    )
    assert "peak 1/H/W/B" in output, output
    return result


def test_asgi_servers_in_every_phase(asgi_report: dict[str, Any]) -> None:
    """Ours in pool and single mode under CONN_MAX_AGE 0 and 600, and
    Channels' where daphne is installed, each measured in every phase."""
    daphne = importlib.util.find_spec("daphne") is not None
    expected = [
        f"{kind}@{age}"
        for age in (0, 600)
        for kind in ("channels", "pool", "single")
        if daphne or kind != "channels"
    ]
    assert list(asgi_report["variants"]) == expected
    assert asgi_report["machine"]["max_connections"] == 100
    for name, variant in asgi_report["variants"].items():
        summary = variant["summary"]
        for figure in ("one_http_ms", "http_req_s", "ws_msg_s", "both_msg_s"):
            assert summary[figure] > 0, (name, figure)
        assert summary["http_msg_s"] is None and summary["ws_req_s"] is None, name


def test_asgi_ours_within_workers_without_errors(asgi_report: dict[str, Any]) -> None:
    """Ours answer every request and message, and never have more sessions
    than their HTTP and WebSocket workers (the test process holds none)."""
    for name, variant in asgi_report["variants"].items():
        if name.startswith("channels"):
            continue
        workers = 4 if name.startswith("pool") else 1
        run = variant["runs"][0]
        assert [run[f"{phase}_errors"] for phase in ASGI_PHASES] == [0] * 4, name
        assert max(run["one_peak"], run["http_peak"]) <= workers, name
        assert run["ws_peak"] <= 1, name
        assert run["both_peak"] <= workers + 1, name


@pytest.fixture(scope="session")
def newuser_report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The JSON of one quick ``--newuser`` run (it fails if the suite does)."""
    output, result = run_benchmark(tmp_path_factory, "nu", "--newuser", "--quick")
    assert "as written" in output, output
    return result


def test_newuser_suite_passes_with_each_import(newuser_report: dict[str, Any]) -> None:
    """The django-ninja suite runs as written and with each swapped import,
    both of its tests, under Django's default CONN_MAX_AGE."""
    assert newuser_report["machine"]["conn_max_age"] == 0
    assert list(newuser_report["results"]) == ["EveryOperationTests", "APITests"]
    for test, by_variant in newuser_report["results"].items():
        assert list(by_variant) == ["hypothesis", "safelive", "rollback"], test
        for name, done in by_variant.items():
            assert done["runs"][0]["samples"] > 0, (test, name)


def test_newuser_suite_rollback_on_one_session(newuser_report: dict[str, Any]) -> None:
    """The rollback class never had a second session; Hypothesis's server,
    one per request, more than that."""
    for test, by_variant in newuser_report["results"].items():
        assert by_variant["rollback"]["runs"][0]["peak_sessions"] == 1, test
        assert by_variant["hypothesis"]["runs"][0]["peak_sessions"] >= 2, test


@pytest.fixture(scope="session")
def classes_report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The JSON of one quick ``--classes`` run."""
    output, result = run_benchmark(
        tmp_path_factory, "classes", "--classes", "--quick", "--repeat", "2"
    )
    assert "start + stop ms" in output, output
    return result


def test_classes_started_and_stopped(classes_report: dict[str, Any]) -> None:
    """Django's class and each of ours (and Channels' where Daphne is
    installed) started and stopped every cycle, each figure measured."""
    daphne = importlib.util.find_spec("daphne") is not None
    expected = ["django", "pool", "single", "rollback", "asgi"]
    assert list(classes_report["medians"]) == expected + (
        ["channels"] if daphne else []
    )
    for kind, cycles in classes_report["cycles"].items():
        assert len(cycles) == 2, kind
        for done in cycles:
            assert 0 < done["start_ms"] < done["total_ms"], kind
            assert 0 < done["stop_ms"] < done["total_ms"], kind
