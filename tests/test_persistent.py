"""Worker sessions live as long as the Hypothesis example, whatever CONN_MAX_AGE
says, and the budget holds as PostgreSQL itself counts: a sampler polling
pg_stat_activity every few milliseconds never sees more sessions than it."""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar
from unittest import mock

from django.db import connection, connections
from hypothesis import given, settings
from hypothesis import strategies as st

from django_safelive.hypothesis import LiveServerTestCase
from tests._clients import get
from tests._waiting import DEADLINE
from tests.test_faults import Guarded

EXAMPLES = 20
CLIENTS = 8
REQUESTS = 3  # per client and example
BUDGET = 4  # three workers and the test thread


def sessions_seen(url: str) -> list[dict[str, Any]]:
    """CLIENTS concurrent clients, REQUESTS each, on fresh connections to
    /session/: who served each request, on which backend.

    The test thread holds its own session meanwhile, as a test that queries
    does, so the budget is used to the full.
    """
    connection.ensure_connection()
    start = threading.Barrier(CLIENTS)

    def call(_: int) -> list[dict[str, Any]]:
        start.wait(DEADLINE)
        return [get(f"{url}/session/").json() for _ in range(REQUESTS)]

    with ThreadPoolExecutor(CLIENTS) as pool:
        return [
            answer for answers in pool.map(call, range(CLIENTS)) for answer in answers
        ]


class ConnMaxAge(Guarded):
    """Run the class with the given CONN_MAX_AGE for the default alias."""

    conn_max_age: ClassVar[int]
    max_sessions: ClassVar[int | None] = BUDGET
    previous_pids: ClassVar[set[int]]

    @classmethod
    def setUpClass(cls) -> None:
        # Every thread's connection to the alias reads this same dict on connect.
        patcher = mock.patch.dict(
            connections["default"].settings_dict, {"CONN_MAX_AGE": cls.conn_max_age}
        )
        patcher.start()
        cls.addClassCleanup(patcher.stop)  # type: ignore[attr-defined]
        cls.previous_pids = set()
        super().setUpClass()


def one_session_per_worker_test() -> Callable[[Any, int], None]:
    """The test for a class: a function of its own, as Hypothesis wants one per
    test case class."""

    @settings(max_examples=EXAMPLES, deadline=None, database=None)
    @given(st.integers())
    def test(self: Any, _: int) -> None:
        """Each worker answers every request of an example from one backend; the
        next example starts on new ones."""
        pids_by_worker: defaultdict[str, set[int]] = defaultdict(set)
        for answer in sessions_seen(self.live_server_url):
            pids_by_worker[answer["thread"]].add(answer["pid"])
        assert all(len(pids) == 1 for pids in pids_by_worker.values()), pids_by_worker
        pids = set().union(*pids_by_worker.values())
        assert len(pids) <= BUDGET - 1, pids_by_worker
        assert not pids & type(self).previous_pids, "a session outlived the reset"
        type(self).previous_pids = pids

    return test


class PersistentWithConnMaxAge0Tests(ConnMaxAge, LiveServerTestCase):
    conn_max_age = 0
    test_one_session_per_worker_per_example = one_session_per_worker_test()


class PersistentWithConnMaxAge600Tests(ConnMaxAge, LiveServerTestCase):
    conn_max_age = 600
    test_one_session_per_worker_per_example = one_session_per_worker_test()


class SessionPerRequestTests(ConnMaxAge, LiveServerTestCase):
    conn_max_age = 600
    session_per_request = True

    @settings(max_examples=EXAMPLES, deadline=None, database=None)
    @given(st.integers())
    def test_a_new_session_for_every_request(self, _: int) -> None:
        """With the opt-out every request gets a backend of its own, even with
        CONN_MAX_AGE = 600, and the budget still holds."""
        pids = [answer["pid"] for answer in sessions_seen(self.live_server_url)]
        self.assertEqual(len(set(pids)), CLIENTS * REQUESTS)
