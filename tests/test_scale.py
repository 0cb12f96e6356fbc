"""Django's ``manage.py test --parallel`` splitting TOTAL_MAX_SESSIONS
across its processes, and the server budget's settings refused when wrong.

The runs are real ones (Django's runner in a process of its own) on real
PostgreSQL, with a sampler reading pg_stat_activity meanwhile. The processes
sharing one server under SERVER_BUDGET are in tests/test_server_budget.py.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from tests._sampler import PGHOST, PGPORT, Sampler

ROOT = Path(__file__).resolve().parent.parent


class Run:
    """One test process, started now; its output goes to a temporary file."""

    def __init__(
        self, command: list[str], host: str, port: int, env: dict[str, str]
    ) -> None:
        self.datname = f"test_safelive_scale_{uuid.uuid4().hex[:8]}"
        environ = {**os.environ, "PGHOST": host, "PGPORT": str(port),
                   "SAFELIVE_TEST_DB_NAME": self.datname, **env}  # fmt: skip
        # A run of its own, not one of our pytest-xdist workers.
        environ.pop("PYTEST_XDIST_WORKER", None)
        environ.pop("PYTEST_XDIST_WORKER_COUNT", None)
        handle, self._path = tempfile.mkstemp(prefix=f"{self.datname}-", suffix=".log")
        with os.fdopen(handle, "w") as log:
            self.process = subprocess.Popen(
                command, cwd=ROOT, env=environ, stdout=log, stderr=log
            )

    def output(self) -> str:
        return Path(self._path).read_text(encoding="utf-8")

    def wait(self, timeout: float = 180) -> tuple[int, str]:
        """Its exit code and output; killed if still running after `timeout`."""
        try:
            code = self.process.wait(timeout)
        finally:
            self.close()
        return code, self.output()

    def close(self) -> None:
        """Kill the process if it still runs (a failed test), and reap it."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


@contextmanager
def reaped(runs: list[Run]) -> Iterator[list[Run]]:
    """The runs, every one reaped and its log removed when the block exits."""
    try:
        yield runs
    finally:
        for run in runs:
            run.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(run._path)


# -- manage.py test --parallel ------------------------------------------------


# ``python -m django`` with the processes of ``--parallel`` started as on macOS
# (and from Python 3.14 on Linux), not forked: each imports Django afresh.
SPAWN = (
    "import multiprocessing, sys; multiprocessing.set_start_method('spawn'); "
    "from django.core.management import execute_from_command_line; "
    "execute_from_command_line(['django', *sys.argv[1:]])"
)


def django_test(
    *args: str,
    host: str = PGHOST,
    port: int = PGPORT,
    spawn: bool = False,
    env: dict[str, str] | None = None,
) -> Run:
    """``manage.py test`` on tests/scale/parallel_suite.py with SafeLiveRunner,
    `env` added to its environment."""
    python = (
        [sys.executable, "-c", SPAWN] if spawn else [sys.executable, "-m", "django"]
    )
    command = [*python, "test", "--noinput", "--settings=tests.settings",
               "--testrunner=django_safelive.runner.SafeLiveRunner",
               "tests.scale.parallel_suite", *args]  # fmt: skip
    return Run(command, host, port, env or {})


@pytest.mark.parametrize(
    "spawn", [False, pytest.param(True, marks=pytest.mark.once)], ids=["fork", "spawn"]
)
def test_parallel_splits_the_total_budget(spawn: bool) -> None:
    """--parallel 3 with a total of 6, its processes forked or spawned: at most
    6 sessions on the test databases."""
    # The databases' names start with the run's: its clones (_1, _2, _3) count.
    total = {"SAFELIVE_TOTAL_MAX_SESSIONS": "6"}
    with (
        reaped([django_test("--parallel", "3", spawn=spawn, env=total)]) as (run,),
        Sampler(run.datname, prefix=True) as sampler,
    ):
        code, output = run.wait()
    assert code == 0, output
    assert "Ran 3 tests" in output
    # The processes overlap only in part (spawned ones start seconds apart).
    assert 1 <= sampler.peak <= 6, output
    # The summary covers the three processes, each with its share.
    assert "3 test(s) used a django-safelive server, with a budget of 2" in output


def test_parallel_refuses_a_total_too_small_to_split() -> None:
    """--parallel 3 with a total of 4 stops before any database, saying what to set."""
    with reaped(
        [django_test("--parallel", "3", env={"SAFELIVE_TOTAL_MAX_SESSIONS": "4"})]
    ) as (run,):
        code, output = run.wait()
    assert code != 0
    assert "split across 3 `manage.py test --parallel` process(es), gives each 1" in (
        output
    )
    assert "Raise TOTAL_MAX_SESSIONS to 6 or more" in output
    assert "Creating test database" not in output


# -- bad settings ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("eight", "SAFELIVE_SERVER_BUDGET must be a whole number, got 'eight'"),
        ("1", "SAFELIVE_SERVER_BUDGET must be at least 2, got 1"),
    ],
)
def test_a_bad_server_budget_is_refused(
    monkeypatch: pytest.MonkeyPatch, value: str, message: str
) -> None:
    """A server budget that is not a whole number of at least 2 is refused."""
    from django_safelive._core.server_budget import reserve

    monkeypatch.setenv("SAFELIVE_SERVER_BUDGET", value)
    with pytest.raises(ImproperlyConfigured, match=message):
        reserve(["default"], 3)


def test_a_bad_server_budget_timeout_is_refused() -> None:
    """SERVER_BUDGET_TIMEOUT must be a positive number of seconds."""
    from django_safelive._core.config import server_budget_timeout

    message = r"SAFELIVE\['SERVER_BUDGET_TIMEOUT'\] must be a number of seconds"
    with (
        override_settings(SAFELIVE={"SERVER_BUDGET_TIMEOUT": "ten"}),
        pytest.raises(ImproperlyConfigured, match=message),
    ):
        server_budget_timeout()


def test_a_server_budget_smaller_than_one_process_is_refused() -> None:
    """A budget below one process's sessions plus its coordinator says what to set."""
    from django_safelive._core.server_budget import reserve

    with (
        override_settings(SAFELIVE={"SERVER_BUDGET": 3}),
        pytest.raises(ImproperlyConfigured, match="Raise SERVER_BUDGET to 4"),
    ):
        reserve(["default"], 3)
