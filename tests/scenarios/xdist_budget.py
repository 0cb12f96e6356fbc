"""Eight live-server test classes under pytest-xdist, each hit by 12 clients at once."""

from __future__ import annotations

from tests._clients import concurrently
from tests.scenarios._impl import LiveServerTestCase


class Base(LiveServerTestCase):
    def test_concurrent_clients(self) -> None:
        """Twelve concurrent clients all get answers."""
        codes = concurrently(f"{self.live_server_url}/slow/?seconds=0.3", 12)
        self.assertEqual(codes, [200] * 12)


# Separate classes, so xdist spreads them and every worker runs a server.
One, Two, Three, Four, Five, Six, Seven, Eight = (
    type(name, (Base,), {"__module__": __name__})
    for name in ("One", "Two", "Three", "Four", "Five", "Six", "Seven", "Eight")
)
del Base
