"""Two live servers alive at once keep their sessions apart.

The session-scoped ``safe_live_server`` fixture and a unittest test case
class's server run side by side here: each tags, counts and ends only its own
sessions, as PostgreSQL sees them.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection

from django_safelive import LiveServerTestCase, SessionBudgetExceeded
from django_safelive._core.accounting import ServerAccount
from django_safelive._core.hooks import registry
from django_safelive._pytest_server import SafeLiveServer
from tests._clients import concurrently, get
from tests._pg import sessions
from tests._waiting import wait_for


class TwoServersTests(LiveServerTestCase):
    # Two sessions: the test thread's and the one worker's. The session
    # server's four workers would be refused if they counted here.
    max_sessions = 2
    server_mode = "single"

    @pytest.fixture(autouse=True)
    def _session_server(self, safe_live_server: SafeLiveServer) -> None:
        self.other = safe_live_server

    def session(self, base_url: str) -> tuple[int, str]:
        """The pid and application_name of the session serving `base_url`."""
        body = get(f"{base_url}/session/").json()
        return body["pid"], body["application_name"]

    def alive(self, pid: int) -> bool:
        """Whether PostgreSQL still lists the session with backend `pid`."""
        return any(row[0] == pid for row in sessions())

    def test_each_server_tags_and_counts_its_own_sessions(self) -> None:
        """Workers carry their own server's tag and count against its budget only."""
        ours, theirs = self.safelive_account, self.other.thread.account
        self.assertIn(ours, registry.accounts)
        self.assertIn(theirs, registry.accounts)
        self.assertNotEqual(ours.tag, theirs.tag)
        _, our_name = self.session(self.live_server_url)
        _, their_name = self.session(self.other.url)
        self.assertTrue(our_name.endswith(f"{ours.tag}:worker"), our_name)
        self.assertTrue(their_name.endswith(f"{theirs.tag}:worker"), their_name)
        # Four at once on the session server: beyond our budget of 2, within its 8.
        statuses = concurrently(f"{self.other.url}/slow/?seconds=0.3", 4)
        self.assertEqual(statuses, [200] * 4)
        self.assertLessEqual(ours.peaks["default"], 2)
        # The test thread runs this class's test: its new session counts here,
        # though the session server was activated after this class's server.
        connection.close()
        connection.ensure_connection()
        roles = {holder.role for holder in ours.holders()}
        self.assertEqual(roles, {"test thread", "server worker"})
        their_workers = {
            h.thread_ident for h in theirs.holders() if h.role == "server worker"
        }
        self.assertTrue(their_workers)
        self.assertFalse(their_workers & {h.thread_ident for h in ours.holders()})
        self.assertEqual(ours.take_violations(), [])
        self.assertEqual(theirs.take_violations(), [])

    def test_ending_one_servers_sessions_leaves_the_others(self) -> None:
        """A reset of either server ends its sessions and none of the other's."""
        our_pid, _ = self.session(self.live_server_url)
        their_pid, _ = self.session(self.other.url)
        self.reset_live_server()
        self.assertTrue(wait_for(lambda: not self.alive(our_pid)))
        self.assertTrue(self.alive(their_pid))
        our_pid, _ = self.session(self.live_server_url)
        self.other.reset()
        self.assertTrue(wait_for(lambda: not self.alive(their_pid)))
        self.assertTrue(self.alive(our_pid))
        self.assertEqual(self.session(self.live_server_url)[0], our_pid)


def test_a_server_started_later_counts_the_test_threads_session(
    safe_live_server: SafeLiveServer,
) -> None:
    """The test's open session counts in the server started last, then goes back."""
    connection.ensure_connection()
    first, second = safe_live_server.thread.account, ServerAccount(1)

    def test_thread_sessions(account: ServerAccount) -> int:
        return sum(holder.role == "test thread" for holder in account.holders())

    with registry.activate(second):
        assert (test_thread_sessions(first), test_thread_sessions(second)) == (0, 1)
        # Its budget of one is the test's session: another thread is refused.
        with ThreadPoolExecutor(1) as other, pytest.raises(SessionBudgetExceeded):
            # Looked up in that thread: its own connection, not the test's.
            other.submit(lambda: connection.ensure_connection()).result()
        second.take_violations()
    assert test_thread_sessions(first) == 1


def test_the_test_threads_session_goes_back_to_the_server_whose_test_runs(
    safe_live_server: SafeLiveServer,
) -> None:
    """With a server started after this test's (and running no test), one
    that stops hands the test's session back to the server whose test runs,
    as new sessions of the test are counted."""
    connection.ensure_connection()
    first = safe_live_server.thread.account
    idle, second = ServerAccount(8), ServerAccount(1)

    def test_thread_sessions(account: ServerAccount) -> int:
        return sum(holder.role == "test thread" for holder in account.holders())

    with registry.activate(idle):
        with registry.activate(second):
            assert test_thread_sessions(second) == 1
        assert (test_thread_sessions(first), test_thread_sessions(idle)) == (1, 0)
