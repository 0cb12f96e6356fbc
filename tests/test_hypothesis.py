"""Hypothesis: every example starts with an idle server holding no session."""

from __future__ import annotations

import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from django_safelive import SafeLiveServerThread
from django_safelive.hypothesis import LiveServerTestCase, StaticLiveServerTestCase
from tests import _pg
from tests._clients import AUTH
from tests._waiting import wait_for
from tests.testapp.models import Item


class GivenOnMethodTests(LiveServerTestCase):
    server_workers = 3
    examples = 0
    # Clients that are never closed, as Schemathesis users' often are: under
    # Django's own server each would pin a thread and its session.
    clients: list[requests.Session] = []

    @settings(max_examples=40, deadline=None, database=None)
    @given(
        names=st.lists(
            st.text(min_size=1, max_size=20).filter(lambda s: "\x00" not in s),
            max_size=3,
        )
    )
    def test_each_example_starts_clean(self, names: list[str]) -> None:
        """No server session and no leftover rows when an example starts."""
        type(self).examples += 1
        self.assertEqual(_pg.server_sessions(), [])
        self.assertEqual(Item.objects.count(), 0)
        for name in names:
            client = requests.Session()
            self.clients.append(client)
            response = client.post(
                f"{self.live_server_url}/items/", json={"name": name}, headers=AUTH
            )
            self.assertEqual(response.status_code, 201, response.content)
        self.assertLessEqual(len(_pg.server_sessions()), 3)

    @classmethod
    def tearDownClass(cls) -> None:
        for client in cls.clients:
            client.close()
        super().tearDownClass()
        assert cls.examples >= 20, cls.examples


class NestedGivenTests(LiveServerTestCase):
    def test_reset_between_inner_examples(self) -> None:
        """reset_live_server() between examples of a @given inside the method."""
        gone: list[bool] = []

        @settings(max_examples=15, deadline=None, database=None)
        @given(st.integers(min_value=0, max_value=5))
        def inner(count: int) -> None:
            before = _pg.worker_pids()
            self.reset_live_server()
            # Closed: each backend leaves pg_stat_activity as it exits.
            gone.append(wait_for(lambda: not before & _pg.worker_pids()))
            for _ in range(count):
                with requests.Session() as client:
                    client.get(f"{self.live_server_url}/items/", headers=AUTH)

        inner()
        self.assertTrue(gone)
        self.assertTrue(all(gone))


class StaticHypothesisTests(StaticLiveServerTestCase):
    def test_bounded_static_server(self) -> None:
        """The static variant uses the bounded server too."""
        self.assertIsInstance(self.server_thread, SafeLiveServerThread)
        with requests.Session() as client:
            response = client.get(f"{self.live_server_url}/static/testapp/hello.txt")
        self.assertEqual(response.status_code, 200)
