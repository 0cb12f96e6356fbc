"""Thirty-two clients at once, each on its own connection."""

from __future__ import annotations

from tests._clients import concurrently
from tests.scenarios._impl import LiveServerTestCase, report


class ConcurrentTests(LiveServerTestCase):
    def test_thirty_two_clients(self) -> None:
        """All thirty-two requests answer."""
        codes = concurrently(f"{self.live_server_url}/slow/?seconds=0.5", 32)
        report(errors=sum(code != 200 for code in codes))
        self.assertEqual(codes, [200] * 32)
