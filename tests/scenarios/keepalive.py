"""Twenty clients that each keep one keep-alive socket open, CONN_MAX_AGE = 600."""

from __future__ import annotations

import time

import requests

from tests.scenarios._impl import LiveServerTestCase, report
from tests.testapp.views import TOKEN


class KeepAliveTests(LiveServerTestCase):
    def test_clients_left_open(self) -> None:
        """Every request answers, whatever the server does with the sockets."""
        clients = [requests.Session() for _ in range(20)]
        statuses = []
        try:
            for client in clients:
                response = client.get(
                    f"{self.live_server_url}/items/",
                    headers={"Authorization": f"Bearer {TOKEN}"},
                )
                statuses.append(response.status_code)
            time.sleep(0.3)  # the plateau the sampler should see
        finally:
            for client in clients:
                client.close()
        report(errors=sum(status != 200 for status in statuses))
        self.assertEqual(statuses, [200] * 20)
