"""pytest-django's own live_server fixture with keep-alive clients left open.

Run with --safelive-live-server when SCENARIO_IMPL=safelive (the parent test
passes it through PYTEST_ADDOPTS).
"""

from __future__ import annotations

import time
from typing import Any

import requests
from pytest_django import live_server_helper

from tests.scenarios._impl import report
from tests.testapp.views import TOKEN


def test_clients_left_open(live_server: Any) -> None:
    """Twenty clients that never close their keep-alive sockets all get answers."""
    report(
        server=type(live_server).__name__,
        # Switched or not, pytest-django's LiveServer is a class that the
        # fixture's server is an instance of.
        a_class=int(
            isinstance(live_server_helper.LiveServer, type)
            and isinstance(live_server, live_server_helper.LiveServer)
        ),
    )
    clients = [requests.Session() for _ in range(20)]
    try:
        for client in clients:
            response = client.get(
                live_server + "/items/", headers={"Authorization": f"Bearer {TOKEN}"}
            )
            assert response.status_code == 200
        time.sleep(0.3)
    finally:
        for client in clients:
            client.close()
