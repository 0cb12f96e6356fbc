"""A pytest plugin (``-p record_pytest``, this directory on PYTHONPATH) that
writes every test's start and outcome to ``SAFELIVE_PEERS_OUTCOMES`` as JSON
lines, in django_runner.py's format, so that run.py reads both suites alike."""

from __future__ import annotations

import json
import os

import pytest


def _write(record: dict[str, str]) -> None:
    path = os.environ.get("SAFELIVE_PEERS_OUTCOMES")
    if path:
        with open(path, "a", encoding="utf-8") as file:
            file.write(json.dumps(record) + "\n")


def pytest_runtest_logstart(nodeid: str) -> None:
    _write({"event": "start", "id": nodeid})


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call":
        if hasattr(report, "wasxfail"):
            outcome = "xfailed" if report.skipped else "xpassed"
        else:
            outcome = report.outcome
    elif report.failed:
        outcome = "error"  # in setup or teardown
    elif report.skipped:
        outcome = "skipped"
    else:
        return
    detail = ""
    if report.failed:
        lines = report.longreprtext.strip().splitlines()
        errors = [line for line in lines if line.startswith("E ")]
        detail = (errors[-1][1:].strip() if errors else lines[-1] if lines else "")[
            :300
        ]
    elif report.skipped and isinstance(report.longrepr, tuple):
        detail = str(report.longrepr[2])
    _write(
        {"event": "outcome", "id": report.nodeid, "outcome": outcome, "detail": detail}
    )
