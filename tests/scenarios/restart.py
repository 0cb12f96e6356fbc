"""PostgreSQL restarted in the middle of a suite, under a pool of two workers.

The parent test passes the restart command in SCENARIO_RESTART (JSON).
"""

from __future__ import annotations

import json
import os
import subprocess

from django.db import connection

from tests._clients import concurrently, get
from tests.scenarios._impl import LiveServerTestCase, report


class RestartTests(LiveServerTestCase):
    server_workers = 2
    max_sessions = 3

    def statuses(self, count: int) -> list[int]:
        return [get(f"{self.live_server_url}/items/").status_code for _ in range(count)]

    def test_1_before(self) -> None:
        """The workers serve, and hold their sessions (CONN_MAX_AGE = 600)."""
        self.assertEqual(self.statuses(4), [200] * 4)

    def test_2_restart(self) -> None:
        """After a restart mid-test, at most one request per worker fails."""
        self.assertEqual(self.statuses(4), [200] * 4)
        subprocess.run(
            json.loads(os.environ["SCENARIO_RESTART"]),
            check=True,
            capture_output=True,
            timeout=120,
        )
        # The test thread's own session ended too; Django reconnects it on close().
        connection.close()
        # One after the other, requests may all go to one worker; two slow
        # ones at once take both.
        both = f"{self.live_server_url}/slow/?seconds=0.2"
        statuses = self.statuses(6) + concurrently(both, 2)
        after = concurrently(both, 2) + self.statuses(6)
        report(failed=statuses.count(500), last=after[-1])
        self.assertLessEqual(statuses.count(500), 2, statuses)
        self.assertEqual(after, [200] * 8, (statuses, after))

    def test_3_after(self) -> None:
        """The next test starts clean and every request succeeds."""
        self.assertEqual(self.statuses(6), [200] * 6)
