"""A request that hangs past the drain timeout at teardown."""

from __future__ import annotations

import requests

from tests.scenarios._impl import LiveServerTestCase


class StuckTests(LiveServerTestCase):
    drain_timeout = 1.0

    def test_hung_request(self) -> None:
        """The client gives up on a view that holds a transaction for a minute."""
        with requests.Session() as client, self.assertRaises(requests.Timeout):
            client.get(f"{self.live_server_url}/hang/", timeout=0.5)
