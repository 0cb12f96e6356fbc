"""Each measured root cause: Django's stock server over the bound, ours within it.

Every scenario in tests/scenarios/ runs in a subprocess, on Django's (or
Hypothesis's) classes and on django-safelive's, each on its own test database,
while a sampler counts that database's sessions in pg_stat_activity.

The stock half of each pair (marked ``stock_baseline``) measures Django, not
the library: it shows the scenario really reproduces the root cause. The nox
matrix runs it once, on its newest pair (tests/conftest.py); our half runs on
every pair.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests._cluster import Cluster
from tests._sampler import PGHOST, PGPORT, Sampler, connect

ROOT = Path(__file__).resolve().parent.parent
BUDGET = 8  # the default SAFELIVE["MAX_SESSIONS"]


@dataclass
class Outcome:
    peak: int
    returncode: int
    output: str
    datname: str

    def value(self, key: str) -> int:
        found = re.search(rf"SCENARIO .*\b{key}=(\d+)", self.output)
        assert found, f"scenario reported no {key}:\n{self.output}"
        return int(found.group(1))


def run(
    scenario: str,
    impl: str,
    host: str = PGHOST,
    port: int = PGPORT,
    *,
    args: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> Outcome:
    """Run tests/scenarios/<scenario>.py on `impl`, sampling its databases' sessions.

    The sampler counts every database whose name starts with the scenario's test
    database name, so pytest-xdist's per-worker copies (``_gw0``...) count too.
    """
    datname = f"test_safelive_{scenario}_{impl}_{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "SCENARIO_IMPL": impl,
        "SAFELIVE_TEST_DB_NAME": datname,
        "PGHOST": host,
        "PGPORT": str(port),
        **(env or {}),
    }
    # The scenario is a pytest run of its own, not one of our xdist workers.
    env.pop("PYTEST_XDIST_WORKER", None)
    env.pop("PYTEST_XDIST_WORKER_COUNT", None)
    if impl == "safelive":
        # Only read by scenarios that use pytest-django's own live_server.
        env["PYTEST_ADDOPTS"] = "--safelive-live-server"
    command = [
        sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider",
        f"tests/scenarios/{scenario}.py", *args,
    ]  # fmt: skip
    with Sampler(datname, host, port, prefix=True) as sampler:
        done = subprocess.run(
            command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
        )
    assert sampler.samples > 10
    return Outcome(sampler.peak, done.returncode, done.stdout + done.stderr, datname)


def database_exists(datname: str, host: str = PGHOST, port: int = PGPORT) -> bool:
    conn = connect(host, port)
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [datname])
            return cursor.fetchone() is not None
    finally:
        conn.close()


stock_baseline = pytest.mark.stock_baseline


def assert_ours_within(
    scenario: str, host: str = PGHOST, port: int = PGPORT
) -> Outcome:
    """Run `scenario` on our classes: it must pass, with 1 to BUDGET sessions."""
    safe = run(scenario, "safelive", host, port)
    assert safe.returncode == 0, safe.output
    assert 1 <= safe.peak <= BUDGET, safe.output
    return safe


@stock_baseline
def test_keep_alive_clients_pin_sessions_on_stock() -> None:
    """Twenty idle keep-alive clients: stock holds a session each, over the budget."""
    stock = run("keepalive", "stock")
    assert stock.peak > BUDGET, stock.output


def test_keep_alive_clients_stay_within_the_budget() -> None:
    """Twenty idle keep-alive clients: ours pass within the budget."""
    assert_ours_within("keepalive")


@stock_baseline
def test_concurrent_clients_get_a_session_each_on_stock() -> None:
    """Thirty-two concurrent clients: stock opens about 33 sessions."""
    stock = run("concurrent", "stock")
    assert stock.peak > BUDGET, stock.output


def test_concurrent_clients_stay_within_the_budget() -> None:
    """Thirty-two concurrent clients: ours pass within the budget."""
    assert_ours_within("concurrent")


@stock_baseline
def test_abandoned_slow_request_outlives_the_stock_server() -> None:
    """A request its client gave up on: stock leaves its session behind."""
    stock = run("abandoned", "stock")
    assert stock.value("left") >= 1, stock.output


def test_abandoned_slow_request_is_waited_for() -> None:
    """A request its client gave up on: ours waits for it, nothing is left."""
    safe = run("abandoned", "safelive")
    assert safe.returncode == 0, safe.output
    assert safe.value("left") == 0


def test_hung_request_is_named_and_ended() -> None:
    """A request hung past the drain timeout fails loudly, and the database drops."""
    safe = run("stuck", "safelive")
    assert safe.returncode != 0
    assert "RequestStuck" in safe.output
    assert "GET /hang/ on safelive-worker-" in safe.output
    assert "being accessed by other users" not in safe.output
    assert not database_exists(safe.datname)


@stock_baseline
def test_server_connection_limit_breaks_stock(small_cluster: Cluster) -> None:
    """Under max_connections = 12, keep-alive clients break stock."""
    stock = run("keepalive", "stock", small_cluster.host, small_cluster.port)
    assert stock.returncode != 0
    assert "too many clients" in stock.output or stock.value("errors") > 0


def test_server_connection_limit_holds_ours(small_cluster: Cluster) -> None:
    """Under max_connections = 12, keep-alive clients pass on ours."""
    assert_ours_within("keepalive", small_cluster.host, small_cluster.port)


@stock_baseline
def test_schemathesis_suite_under_a_small_server_fails_on_stock(
    small_cluster: Cluster,
) -> None:
    """The ROOT_CAUSES Schemathesis test fails on Hypothesis's class."""
    stock = run("schemathesis_shop", "stock", small_cluster.host, small_cluster.port)
    assert stock.returncode != 0
    assert stock.peak >= 11, stock.output


def test_schemathesis_suite_under_a_small_server(small_cluster: Cluster) -> None:
    """The ROOT_CAUSES Schemathesis test passes on ours, every call made."""
    safe = assert_ours_within(
        "schemathesis_shop", small_cluster.host, small_cluster.port
    )
    assert safe.value("calls") == 90


def test_schemathesis_helper_under_a_small_server(small_cluster: Cluster) -> None:
    """The same test written with the helper passes, in unittest and pytest form."""
    safe = assert_ours_within(
        "schemathesis_helper", small_cluster.host, small_cluster.port
    )
    assert "4 passed" in safe.output, safe.output
