from __future__ import annotations

import os
import sys
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pluggy
import pytest
from hypothesis import settings

from tests._cluster import Cluster

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


# Tests whose outcome does not depend on the Django version or the database
# driver: the command-line tools (demo, watch, doctor, benchmarks) and the
# pytest-xdist budget split, a plugin feature measured in pytest runs of their
# own, the real-browser test and the Channels import swap (a Channels
# project's test run on Daphne and on ours); and the tests marked
# stock_baseline, which measure Django's own server. The nox matrix runs them
# once, on its newest pair, with SAFELIVE_TEST_ONCE=1 there and 0 elsewhere.
# Unset, they run.
ONCE = (
    "test_demo.py",
    "test_watch.py",
    "test_doctor.py",
    "test_benchmarks.py",
    "test_xdist.py",
    "test_browser.py",
    "test_server_budget.py",
    "test_channels_swap.py",
)
RUN_ONCE = os.environ.get("SAFELIVE_TEST_ONCE", "1") != "0"


# Modules whose tests watch or change the whole database server (the tools), or
# share one expensive run (the benchmark): under pytest-xdist their tests run
# one after the other on one worker, as they would without it.
WHOLE_MODULES = (
    "test_watch.py",
    "test_doctor.py",
    "test_demo.py",
    "test_benchmarks.py",
    "test_server_budget.py",
)


# Tests run once, like the ONCE modules, by marker.
ONCE_MARKERS = {
    "stock_baseline": "the half of a root-cause pair that runs Django's own "
    "server (measures Django, not the library)",
    "once": "a costly variant of a test that runs on every pair (the newest "
    "pair checks it; the others would only add time)",
}


def pytest_configure(config: pytest.Config) -> None:
    for name, meaning in ONCE_MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {meaning}; run once, like ONCE")


def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> None:
    """Leave out the tests marked to run once where ONCE tests are left out."""
    if RUN_ONCE:
        return
    kept: list[pytest.Item] = []
    once: list[pytest.Item] = []
    for item in items:
        marked = any(item.get_closest_marker(name) for name in ONCE_MARKERS)
        (once if marked else kept).append(item)
    if once:
        config.hook.pytest_deselected(items=once)
        items[:] = kept


def work_unit(nodeid: str) -> str:
    """The tests pytest-xdist runs together with test `nodeid`, on one worker:
    a module of WHOLE_MODULES, a test case class (whose live server then
    starts once), or a module-level test alone."""
    module, _, rest = nodeid.partition("::")
    if module.endswith(WHOLE_MODULES):
        return module
    cls, nested, _ = rest.partition("::")
    return f"{module}::{cls}" if nested else nodeid


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """pytest-xdist's scope scheduling, with work_unit as the scope.

    Not ``--dist loadgroup`` with xdist_group marks: from pytest 9.2 the node
    id suffix it groups by is lost (pytest-dev/pytest-xdist#1386), silently.
    """
    # pytest-xdist ships no type information.
    from xdist.scheduler import LoadScopeScheduling  # type: ignore[import-untyped]

    class WorkUnitScheduling(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

    return WorkUnitScheduling(config, log)


def pytest_ignore_collect(collection_path: Path) -> bool | None:
    name = collection_path.name
    if not (name.startswith("test_") and name.endswith(".py")):
        return None
    if name in ONCE and not RUN_ONCE:
        return True
    if BACKEND in _ONLY:
        return name not in _ONLY[BACKEND] or None
    return name == "test_pool.py" or None


def pytest_report_header() -> str:
    modules = ", ".join(_ONLY[BACKEND]) if BACKEND in _ONLY else "all but test_pool.py"
    once = (
        ""
        if RUN_ONCE
        else f"; not {', '.join(ONCE)} nor the stock baselines (SAFELIVE_TEST_ONCE=0)"
    )
    return (
        f"django-safelive tests: SAFELIVE_TEST_DB={BACKEND}, running {modules}" + once
    )


# The figures the reliability tests measured (tests/test_faults.py's record()),
# carried in the test reports, which pytest-xdist brings to the controller.
_FIGURES_PROPERTY = "safelive_figures"
_figures: list[str] = []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pluggy.Result[pytest.TestReport], None]:
    outcome = yield
    module = sys.modules.get("tests.test_faults")
    if module is not None and module.FIGURES:
        outcome.get_result().user_properties.append(
            (_FIGURES_PROPERTY, list(module.FIGURES))
        )
        module.FIGURES.clear()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    for name, value in report.user_properties:
        if name == _FIGURES_PROPERTY and isinstance(value, list):
            _figures.extend(value)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the figures the reliability tests measured."""
    if _figures:
        terminalreporter.write_sep("-", "django-safelive reliability figures")
        for line in _figures:
            terminalreporter.write_line(line)


@pytest.fixture(scope="module")
def small_cluster() -> Iterator[Cluster]:
    """A throwaway PostgreSQL with max_connections = 12, for one module."""
    cluster = Cluster(max_connections=12)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
