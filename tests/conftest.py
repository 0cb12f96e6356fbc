from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from hypothesis import settings

# No example database on disk: runs stay independent and the tree stays clean.
settings.register_profile("safelive-tests", database=None, deadline=None)
settings.load_profile("safelive-tests")

BACKEND = os.environ.get("SAFELIVE_TEST_DB", "postgres")
# The modules each backend runs. Plain PostgreSQL runs everything but the pool's
# own tests; the other backends run the shared behaviour tests (and the pool its
# own), since the rest read PostgreSQL-only figures such as application_name.
_ONLY = {
    "postgres-pool": ("test_shared.py", "test_pool.py"),
    "mariadb": ("test_shared.py",),
    "sqlite": ("test_shared.py",),
    "sqlite-memory": ("test_shared.py",),
}


# The command-line tools' tests (demo, watch, doctor, benchmarks) do not depend
# on the Django version; the nox matrix runs them once, on its newest pair, with
# SAFELIVE_TEST_TOOLING=1 there and 0 elsewhere. Unset, they run.
TOOLING = ("test_demo.py", "test_watch.py", "test_doctor.py", "test_benchmarks.py")
RUN_TOOLING = os.environ.get("SAFELIVE_TEST_TOOLING", "1") != "0"


def pytest_ignore_collect(collection_path: Path) -> bool | None:
    name = collection_path.name
    if not (name.startswith("test_") and name.endswith(".py")):
        return None
    if name in TOOLING and not RUN_TOOLING:
        return True
    if BACKEND in _ONLY:
        return name not in _ONLY[BACKEND] or None
    return name == "test_pool.py" or None


def pytest_report_header() -> str:
    modules = ", ".join(_ONLY[BACKEND]) if BACKEND in _ONLY else "all but test_pool.py"
    tooling = (
        "" if RUN_TOOLING else f"; not {', '.join(TOOLING)} (SAFELIVE_TEST_TOOLING=0)"
    )
    return (
        f"django-safelive tests: SAFELIVE_TEST_DB={BACKEND}, running {modules}"
        + tooling
    )


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the figures the reliability tests measured (tests/test_faults.py)."""
    module = sys.modules.get("tests.test_faults")
    if module is not None and module.FIGURES:
        terminalreporter.write_sep("-", "django-safelive reliability figures")
        for line in module.FIGURES:
            terminalreporter.write_line(line)
