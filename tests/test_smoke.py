from __future__ import annotations

import requests

from django_safelive import LiveServerTestCase
from tests import _pg
from tests.testapp.views import TOKEN


class SmokeTests(LiveServerTestCase):
    def test_request(self) -> None:
        """A DB-touching request succeeds and its session is tagged."""
        with requests.Session() as client:
            response = client.get(f"{self.live_server_url}/session/")
        self.assertEqual(response.status_code, 200)
        self.assertIn(":worker", response.json()["application_name"])
        self.assertEqual(response.headers["Connection"], "close")
        self.assertEqual(len(_pg.worker_sessions()), 1)
        client2 = requests.get(
            f"{self.live_server_url}/items/",
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        self.assertEqual(client2.json(), [])
