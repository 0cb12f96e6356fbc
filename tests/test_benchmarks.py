"""``python -m benchmarks --quick``: every variant measured, the bounds kept."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = ["stock", "single", "pool-2", "pool-4", "pool-8", "from_wsgi"]
SAFELIVE = {"single": 1, "pool-2": 2, "pool-4": 4, "pool-8": 8}
FIGURES = {
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
MACHINE = {"platform", "cpu_count", "python", "django", "driver", "postgresql"}


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The JSON of one quick benchmark run, on a database of its own."""
    path = tmp_path_factory.mktemp("bench") / "bench.json"
    name = os.environ.get("SAFELIVE_TEST_DB_NAME", "test_safelive") + "_bench"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--json", str(path)],
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
    assert "Requests/s" in done.stdout, done.stdout
    result: dict[str, Any] = json.loads(path.read_text())
    return result


def test_every_variant_and_figure(report: dict[str, Any]) -> None:
    """The JSON has every variant, each with every figure, and the machine."""
    assert list(report["variants"]) == VARIANTS
    for name, variant in report["variants"].items():
        assert set(variant["median"]) >= FIGURES, name
        assert len(variant["runs"]) == 1, name
    assert set(report["machine"]) >= MACHINE


def test_http_variants_measured_at_every_client_count(report: dict[str, Any]) -> None:
    """Live servers get 1, 8 and 32 clients; in-process WSGI one client only."""
    for name, variant in report["variants"].items():
        expected = ["1"] if name == "from_wsgi" else ["1", "8", "32"]
        for figure in ("read_req_s", "write_req_s", "peak_sessions"):
            assert list(variant["median"][figure]) == expected, (name, figure)


def test_safelive_sessions_stay_within_workers(report: dict[str, Any]) -> None:
    """django-safelive never has more than its workers plus the test thread's."""
    for name, workers in SAFELIVE.items():
        for run in report["variants"][name]["runs"]:
            peaks = [*run["peak_sessions"].values(), run["drain_sessions"]]
            peaks.append(run["schemathesis_peak_sessions"])
            assert max(peaks) <= workers + 1, (name, run)


def test_safelive_serves_without_errors(report: dict[str, Any]) -> None:
    """Ours answer every request, 32 clients too: extra clients queue, never fail."""
    for name in SAFELIVE:
        run = report["variants"][name]["runs"][0]
        errors = [*run["read_errors"].values(), *run["write_errors"].values()]
        assert (sum(errors), run["schemathesis_failures"]) == (0, 0), name
