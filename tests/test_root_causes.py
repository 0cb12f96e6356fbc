"""Each measured root cause: Django's stock server over the bound, ours within it.

Every scenario in tests/scenarios/ runs twice in a subprocess, once on Django's
(or Hypothesis's) classes and once on django-safelive's, each on its own test
database, while a sampler counts that database's sessions in pg_stat_activity.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests._cluster import Cluster
from tests._sampler import PGHOST, PGPORT, Sampler, connect

ROOT = Path(__file__).resolve().parent.parent
BUDGET = 8  # the default SAFELIVE["MAX_CONNECTIONS"]


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


def assert_stock_over_ours_within(scenario: str) -> tuple[Outcome, Outcome]:
    """Run `scenario` on both; stock must exceed the budget, ours pass within it."""
    stock = run(scenario, "stock")
    safe = run(scenario, "safelive")
    assert stock.peak > BUDGET, stock.output
    assert safe.returncode == 0, safe.output
    assert 1 <= safe.peak <= BUDGET
    return stock, safe


def test_keep_alive_clients_pin_sessions() -> None:
    """Twenty idle keep-alive clients: stock holds a session each, ours is bounded."""
    assert_stock_over_ours_within("keepalive")


def test_concurrent_clients_get_a_session_each() -> None:
    """Thirty-two concurrent clients: stock opens ~33 sessions, ours <= the budget."""
    assert_stock_over_ours_within("concurrent")


def test_abandoned_slow_request_outlives_the_server() -> None:
    """A request its client gave up on: stock leaves its session behind, ours waits."""
    stock = run("abandoned", "stock")
    safe = run("abandoned", "safelive")
    assert stock.value("left") >= 1, stock.output
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


@pytest.fixture(scope="module")
def small_cluster() -> Iterator[Cluster]:
    """A throwaway PostgreSQL with max_connections = 12."""
    cluster = Cluster(max_connections=12)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def test_server_connection_limit(small_cluster: Cluster) -> None:
    """Under max_connections = 12, keep-alive clients break stock and not ours."""
    stock = run("keepalive", "stock", small_cluster.host, small_cluster.port)
    safe = run("keepalive", "safelive", small_cluster.host, small_cluster.port)
    assert stock.returncode != 0
    assert "too many clients" in stock.output or stock.value("errors") > 0
    assert safe.returncode == 0, safe.output
    assert safe.peak <= BUDGET


def test_schemathesis_suite_under_a_small_server(small_cluster: Cluster) -> None:
    """The ROOT_CAUSES Schemathesis test: fails on Hypothesis's class, not ours."""
    stock = run("schemathesis_shop", "stock", small_cluster.host, small_cluster.port)
    safe = run("schemathesis_shop", "safelive", small_cluster.host, small_cluster.port)
    assert stock.returncode != 0
    assert stock.peak >= 11, stock.output
    assert safe.returncode == 0, safe.output
    assert safe.value("calls") == 90
    assert safe.peak <= BUDGET


def test_schemathesis_helper_under_a_small_server(small_cluster: Cluster) -> None:
    """The same test written with the helper passes, in unittest and pytest form."""
    safe = run(
        "schemathesis_helper", "safelive", small_cluster.host, small_cluster.port
    )
    assert safe.returncode == 0, safe.output
    assert "4 passed" in safe.output, safe.output
    assert safe.peak <= BUDGET
