"""Load and churn: many clients, idle keep-alive sockets, repeated start/stop.

Counts are trimmed for CI; ``SAFELIVE_STRESS=1`` (``nox -s stress``) runs the
full ones: 32 clients x 1,000 requests and 200 start/stop cycles. Each count
can also be set on its own: SAFELIVE_STRESS_CLIENTS, SAFELIVE_STRESS_REQUESTS,
SAFELIVE_STRESS_CYCLES.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import ClassVar

import requests
from django.test import SimpleTestCase

from django_safelive import LiveServerTestCase
from tests import _pg
from tests._clients import AUTH
from tests._waiting import DEADLINE, wait_for
from tests.test_faults import Guarded, record, server_threads
from tests.testapp.models import Item

STRESS = os.environ.get("SAFELIVE_STRESS") == "1"


def count(name: str, ci: int, full: int) -> int:
    """SAFELIVE_STRESS_<name> if set, else the full count under SAFELIVE_STRESS=1."""
    return int(os.environ.get(f"SAFELIVE_STRESS_{name}", full if STRESS else ci))


CLIENTS = count("CLIENTS", 32, 32)
REQUESTS = count("REQUESTS", 20, 1000)  # per client
CYCLES = count("CYCLES", 50, 200)


class LoadTests(Guarded, LiveServerTestCase):
    server_mode = "pool"
    max_sessions = 8  # the default budget, default pool of four workers

    def test_concurrent_clients_with_idle_keep_alive_sockets(self) -> None:
        """Every request of many clients is answered and kept, within the budget,
        while more idle sockets than workers stay open."""
        workers = self.safelive_config.workers
        url = f"{self.live_server_url}/items/"
        idle = [
            socket.create_connection(("127.0.0.1", self.server_thread.port))
            for _ in range(2 * workers)
        ]
        kept_alive = [requests.Session() for _ in range(2 * workers)]
        statuses: list[list[int]] = [[] for _ in range(CLIENTS)]
        start = threading.Barrier(CLIENTS + 1)

        errors: list[str] = []

        def client(number: int) -> None:
            with requests.Session() as session:
                start.wait(DEADLINE)
                for n in range(REQUESTS):
                    try:
                        response = session.post(
                            url,
                            json={"name": f"{number}-{n}"},
                            headers=AUTH,
                            timeout=60,
                        )
                    except requests.RequestException as error:
                        errors.append(f"{type(error).__name__}: {error}")
                        continue
                    statuses[number].append(response.status_code)

        try:
            for session in kept_alive:  # one request each, then left open
                self.assertEqual(session.get(url, headers=AUTH).status_code, 200)
            threads = [
                threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)
            ]
            for thread in threads:
                thread.start()
            start.wait(DEADLINE)
            began = time.monotonic()
            for thread in threads:
                thread.join()
            elapsed = time.monotonic() - began
        finally:
            for sock in idle:
                sock.close()
            for session in kept_alive:
                session.close()
        answered = sum(len(codes) for codes in statuses)
        created = sum(codes.count(201) for codes in statuses)
        record(
            "Load",
            clients=CLIENTS,
            requests=answered,
            idle_sockets=len(idle) + len(kept_alive),
            workers=workers,
            req_per_s=round(answered / elapsed),
            sessions_peak=f"{self.sampler.peak} (budget {self.max_sessions})",
        )
        self.fault(len(idle) + len(kept_alive))
        self.assertEqual(errors, [])
        self.assertEqual(answered, CLIENTS * REQUESTS)
        self.assertEqual(created, CLIENTS * REQUESTS)
        self.assertEqual(Item.objects.count(), CLIENTS * REQUESTS)  # none lost
        self.assertTrue(wait_for(lambda: not self.server_thread.httpd.in_flight()))
        self.assertLessEqual(self.sampler.peak, self.max_sessions)


class StartStopCycleTests(SimpleTestCase):
    databases = {"default"}

    def test_start_stop_cycles_with_keep_alive_clients_left_open(self) -> None:
        """Servers started and stopped over and over, clients left open: every
        teardown succeeds and leaves no session, thread or socket behind."""

        class Cycled(LiveServerTestCase):
            max_sessions = 3
            modes: ClassVar[tuple[str, ...]] = ("pool", "single")

            def test_nothing(self) -> None:
                """Never runs: the cycles drive the class by hand."""

        failures: list[str] = []
        left = 0
        threads_before = frozenset(threading.enumerate())
        for cycle in range(CYCLES):
            Cycled.server_mode = Cycled.modes[cycle % 2]
            Cycled.setUpClass()
            clients = [requests.Session() for _ in range(3)]
            try:
                for client in clients:
                    url = f"{Cycled.live_server_url}/session/"
                    self.assertEqual(client.get(url).status_code, 200)
            finally:
                Cycled.tearDownClass()
                Cycled.doClassCleanups()
                errors = getattr(Cycled, "tearDown_exceptions", [])
                failures += [repr(error) for _, error, _ in errors]
                for client in clients:
                    client.close()
            left += len(_pg.sessions())
            self.assertEqual(server_threads(threads_before), [])
        record("Start/stop", cycles=CYCLES, teardown_failures=len(failures), left=left)
        self.assertEqual(failures, [])
        self.assertEqual(left, 0)
