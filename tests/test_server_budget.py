"""Several test processes on one PostgreSQL server under one SERVER_BUDGET.

Each process is a pytest run of tests/scale/shared_server.py, with a live
server of its own, on a throwaway cluster with max_connections = 12; a
sampler reads pg_stat_activity and pg_locks meanwhile.
"""

from __future__ import annotations

import signal
import sys
import time
from typing import Any

from django_safelive._core.slot_holders import KEY
from tests._cluster import Cluster
from tests._sampler import PGHOST, PGPORT, Sampler, connect
from tests._waiting import wait_for
from tests.test_scale import Run, django_test, reaped

SERVER_BUDGET = 8
# Each process: 3 sessions (the test thread and 2 server workers) plus its
# coordinator, 4 slots, so two processes hold the server budget at once.
PER_PROCESS = {"SAFELIVE_MAX_SESSIONS": "3", "SAFELIVE_WORKERS": "2"}
COORDINATOR = "safelive-slots:"

# One query per sample: every client session but the sampler's, with the
# slots it holds. A coordinator holding none is waiting for its slots.
_SESSIONS = f"""
    SELECT a.application_name, coalesce(a.datname, ''), (
        SELECT count(*) FROM pg_locks AS l
        WHERE l.pid = a.pid AND l.locktype = 'advisory' AND l.granted
          AND l.classid = {KEY})
    FROM pg_stat_activity AS a
    WHERE a.backend_type = 'client backend' AND a.pid <> pg_backend_pid()
"""


class SlotSampler(Sampler):
    """Every few milliseconds, on a cluster of the test's own: the sessions
    the processes hold against the budget (all but the coordinators still
    waiting for slots), the peak of those, and who holds slots now."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__("", host, port)
        self.waiting_peak = 0
        self.slots: dict[str, int] = {}
        """Slots held per coordinator application_name, at the last sample."""
        self.names: list[str] = []

    def sample(self, conn: Any) -> None:
        with conn.cursor() as cursor:
            cursor.execute(_SESSIONS)
            rows = cursor.fetchall()
        waiting = [n for n, _, s in rows if n.startswith(COORDINATOR) and not s]
        self.peak = max(self.peak, len(rows) - len(waiting))
        self.waiting_peak = max(self.waiting_peak, len(waiting))
        self.slots = {n: int(s) for n, _, s in rows if n.startswith(COORDINATOR)}
        self.names = [str(name) for name, _, _ in rows]

    def held_by(self, pid: int) -> int:
        """The slots the process `pid` holds, at the last sample."""
        prefix = f"{COORDINATOR}{pid}@"
        return sum(n for name, n in self.slots.items() if name.startswith(prefix))


def shared_server_run(cluster: Cluster, **env: str) -> Run:
    """tests/scale/shared_server.py in a pytest process, under SERVER_BUDGET."""
    command = [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider",
               "tests/scale/shared_server.py"]  # fmt: skip
    return Run(
        command,
        cluster.host,
        cluster.port,
        {"SAFELIVE_SERVER_BUDGET": str(SERVER_BUDGET),
         "SAFELIVE_SERVER_BUDGET_TIMEOUT": "120", **PER_PROCESS, **env},
    )  # fmt: skip


def assert_passed(code: int, output: str) -> None:
    assert code == 0, output
    assert "1 passed" in output, output
    assert "too many clients" not in output, output


def test_four_processes_share_the_server_budget(small_cluster: Cluster) -> None:
    """Four processes under SERVER_BUDGET 8: at most 8 sessions, all pass."""
    with (
        SlotSampler(small_cluster.host, small_cluster.port) as sampler,
        reaped([shared_server_run(small_cluster) for _ in range(4)]) as runs,
    ):
        results = [run.wait() for run in runs]
    for code, output in results:
        assert_passed(code, output)
    assert sampler.samples > 10
    assert 4 <= sampler.peak <= SERVER_BUDGET
    print(f"peak {sampler.peak}, waiting coordinators at most {sampler.waiting_peak}")


def test_a_killed_process_frees_its_slots(small_cluster: Cluster) -> None:
    """SIGKILL mid-run: its slots come free within seconds, the others pass."""
    with (
        SlotSampler(small_cluster.host, small_cluster.port) as sampler,
        reaped([shared_server_run(small_cluster, SCALE_HOLD="1")]) as runs,
    ):
        victim = runs[0]
        tag = f"safelive:{victim.process.pid}."
        # A pytest process starting on a loaded machine can take a while.
        assert wait_for(
            lambda: any(tag in n and n.endswith(":worker") for n in sampler.names),
            timeout=120,
        ), victim.output()
        others = [shared_server_run(small_cluster) for _ in range(3)]
        runs.extend(others)
        # The victim's 4 slots leave room for one other at a time: wait until
        # one waits (or two are done, on a slow machine), then kill it.
        assert wait_for(
            lambda: (
                sampler.waiting_peak >= 1
                or sum(run.process.poll() is not None for run in others) >= 2
            )
        )
        assert sampler.held_by(victim.process.pid) == 4
        victim.process.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        assert wait_for(lambda: not sampler.held_by(victim.process.pid), 10)
        freed = time.monotonic() - killed
        results = [run.wait() for run in others]
    for code, output in results:
        assert_passed(code, output)
    assert freed < 5
    assert sampler.peak <= SERVER_BUDGET
    print(f"slots freed {freed:.2f}s after SIGKILL, peak {sampler.peak}")


def test_parallel_processes_share_the_server_budget(small_cluster: Cluster) -> None:
    """manage.py test --parallel 3 under SERVER_BUDGET 8: at most 8, all pass."""
    env = {"SAFELIVE_SERVER_BUDGET": "8", "SAFELIVE_TOTAL_MAX_SESSIONS": "6"}
    with (
        SlotSampler(small_cluster.host, small_cluster.port) as sampler,
        reaped(
            [django_test("--parallel", "3", host=small_cluster.host,
                         port=small_cluster.port, env=env)]
        ) as (run,),
    ):  # fmt: skip
        code, output = run.wait()
    assert code == 0, output
    assert "Ran 3 tests" in output
    # Three processes of 2 sessions and a coordinator each would need 9.
    assert 3 <= sampler.peak <= SERVER_BUDGET
    print(f"peak {sampler.peak}, waiting coordinators at most {sampler.waiting_peak}")


def xdist_run(cluster: Cluster, workers: int, total: int) -> Run:
    """tests/scenarios/xdist_budget.py (eight live-server classes) under
    ``pytest -n workers``, a total budget split across them, SERVER_BUDGET 8."""
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
               "-n", str(workers), "tests/scenarios/xdist_budget.py"]  # fmt: skip
    env = {"SAFELIVE_SERVER_BUDGET": str(SERVER_BUDGET),
           "SAFELIVE_SERVER_BUDGET_TIMEOUT": "120",
           "SAFELIVE_TOTAL_MAX_SESSIONS": str(total)}  # fmt: skip
    return Run(command, cluster.host, cluster.port, env)


def test_xdist_workers_and_another_process_share_it(small_cluster: Cluster) -> None:
    """pytest -n 2 and one more process under SERVER_BUDGET 8: at most 8, all pass."""
    with (
        SlotSampler(small_cluster.host, small_cluster.port) as sampler,
        reaped(
            [xdist_run(small_cluster, 2, 6), shared_server_run(small_cluster)]
        ) as runs,
    ):
        (xdist_code, xdist_output), (code, output) = [run.wait() for run in runs]
    assert xdist_code == 0, xdist_output
    assert "8 passed" in xdist_output
    assert "too many clients" not in xdist_output
    assert_passed(code, output)
    # Two workers of 3 sessions and a coordinator each fill the budget: the
    # other process ran before or after them.
    assert 4 <= sampler.peak <= SERVER_BUDGET
    print(f"peak {sampler.peak}, waiting coordinators at most {sampler.waiting_peak}")


def test_xdist_workers_needing_more_than_the_budget_are_refused(
    small_cluster: Cluster,
) -> None:
    """-n 4 needing 16 slots until the run ends, of 8: refused at start-up."""
    with reaped([xdist_run(small_cluster, 4, 12)]) as (run,):
        code, output = run.wait()
    assert code != 0
    assert "passed" not in output
    assert "The 4 pytest-xdist workers of this run each hold 4 slot(s)" in output
    assert "Raise SERVER_BUDGET to 16 or more" in output


def run_script(cluster: Cluster, script: str) -> str:
    """Run `script` with Django set up on `cluster` and SERVER_BUDGET set; its
    output, once it has exited 0."""
    env = {"DJANGO_SETTINGS_MODULE": "tests.settings",
           "SAFELIVE_SERVER_BUDGET": str(SERVER_BUDGET)}  # fmt: skip
    command = [sys.executable, "-c", script]
    with reaped([Run(command, cluster.host, cluster.port, env)]) as (run,):
        code, output = run.wait()
    assert code == 0, output
    return output


# Takes slots, forks, and checks from the parent that the child's exit did
# not end the coordinator session it inherited.
_FORK = """
import os, django
django.setup()
from django_safelive._core import server_budget
server_budget.reserve(["default"], 3)
(coordinator,) = server_budget._coordinators.values()
pid = os.fork()
if pid == 0:
    os._exit(0 if not server_budget._coordinators else 1)
_, status = os.waitpid(pid, 0)
coordinator.query("SELECT 1")  # fails if the child ended the session
print("child", os.waitstatus_to_exitcode(status), "slots", coordinator.slots)
"""


def test_a_forked_child_leaves_the_parents_slots(small_cluster: Cluster) -> None:
    """A forked child (Django's --parallel) forgets, not ends, the parent's session."""
    assert "child 0 slots [0, 1, 2, 3]" in run_script(small_cluster, _FORK)


# Two live servers running at once in one process: the second's start takes
# slots for its own budget, and its stop gives them back.
_TWO_SERVERS = """
import django
django.setup()
from django_safelive._core import server_budget
server_budget.reserve(["default"], 3, server=False)  # as before the databases
(coordinator,) = server_budget._coordinators.values()
first = server_budget.reserve(["default"], 3)
print("first", len(coordinator.slots))
second = server_budget.reserve(["default"], 3)
print("both", len(coordinator.slots))
server_budget.give_back(["default"], second)
print("after", len(coordinator.slots))
"""


def test_two_servers_at_once_take_slots_for_both(small_cluster: Cluster) -> None:
    """A second live server running beside the first holds slots of its own."""
    assert "first 4\nboth 7\nafter 4" in run_script(small_cluster, _TWO_SERVERS)


def hold_slots(host: str, port: int, count: int) -> Any:
    """A session of the test's own holding slots 0 to count - 1."""
    conn = connect(host, port)
    with conn.cursor() as cursor:
        cursor.execute("SET application_name = 'tests/test_scale.py holder'")
        cursor.execute(
            f"SELECT pg_advisory_lock({KEY}, slot) "
            f"FROM generate_series(0, {count - 1}) AS slot"
        )
    return conn


def test_a_process_waits_for_slots_then_runs(small_cluster: Cluster) -> None:
    """With 6 of 8 slots held elsewhere it waits, saying so, then runs."""
    holder = hold_slots(small_cluster.host, small_cluster.port, 6)
    with reaped([shared_server_run(small_cluster)]) as (run,):
        try:
            assert wait_for(lambda: "waiting for 4 of the 8" in run.output()), (
                run.output()
            )
        finally:
            holder.close()
        code, output = run.wait()
    assert_passed(code, output)
    assert "held by: host 127.0.0.1" in output
    assert "'tests/test_scale.py holder', 6 slot(s)" in output


def test_waiting_too_long_fails_naming_the_holders(small_cluster: Cluster) -> None:
    """Past SERVER_BUDGET_TIMEOUT the run fails, naming who holds the slots."""
    holder = hold_slots(small_cluster.host, small_cluster.port, SERVER_BUDGET)
    try:
        with reaped(
            [shared_server_run(small_cluster, SAFELIVE_SERVER_BUDGET_TIMEOUT="1")]
        ) as (run,):
            code, output = run.wait()
    finally:
        holder.close()
    assert code != 0
    assert "ServerBudgetExhausted" in output
    assert "waited 1s for 4 of the 8 session slots of SERVER_BUDGET" in output
    assert "'tests/test_scale.py holder', 8 slot(s)" in output
    assert "SERVER_BUDGET_TIMEOUT" in output


def test_a_server_budget_above_max_connections_is_refused(
    small_cluster: Cluster,
) -> None:
    """A budget larger than the server accepts is refused before any test."""
    with reaped([shared_server_run(small_cluster, SAFELIVE_SERVER_BUDGET="20")]) as (
        run,
    ):
        code, output = run.wait()
    assert code != 0
    assert "SERVER_BUDGET is 20 session(s), more than the 9" in output
    assert "Lower SERVER_BUDGET to 9 or less" in output


def test_a_server_budget_on_sqlite_is_refused() -> None:
    """SQLite has no server to share: the setting is refused, not ignored."""
    script = ("import django; django.setup(); "
              "from django_safelive._core.server_budget import reserve_for_run; "
              "reserve_for_run()")  # fmt: skip
    env = {"DJANGO_SETTINGS_MODULE": "tests.settings", "SAFELIVE_TEST_DB": "sqlite",
           "SAFELIVE_SERVER_BUDGET": "8"}  # fmt: skip
    with reaped([Run([sys.executable, "-c", script], PGHOST, PGPORT, env)]) as (run,):
        code, output = run.wait()
    assert code != 0
    assert "SERVER_BUDGET is kept by PostgreSQL, but none of the databases" in output
