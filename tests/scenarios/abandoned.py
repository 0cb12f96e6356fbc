"""A slow request abandoned by its client, then teardown."""

from __future__ import annotations

import requests
from django.db import connection

from tests.scenarios._impl import LiveServerTestCase, report


def count_left() -> None:
    """After the server is torn down: how many sessions are still on the database."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        report(left=cursor.fetchone()[0])


class AbandonedTests(LiveServerTestCase):
    @classmethod
    def setUpClass(cls) -> None:
        # Registered first, so it runs last: after the server thread's termination.
        cls.addClassCleanup(count_left)
        super().setUpClass()

    def test_client_gives_up(self) -> None:
        """The client times out while the view still holds its session."""
        with requests.Session() as client, self.assertRaises(requests.Timeout):
            client.get(f"{self.live_server_url}/slow/?seconds=3", timeout=0.5)
