"""HTTP clients for the tests: concurrent callers and raw sockets."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import requests

from tests.testapp.views import TOKEN

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def get(url: str, timeout: float = 30) -> requests.Response:
    """One GET on a fresh session that is closed afterwards."""
    with requests.Session() as client:
        return client.get(url, headers=AUTH, timeout=timeout)


def concurrently(url: str, clients: int, timeout: float = 60) -> list[int]:
    """Fire `clients` GETs at once (released together); return their status codes."""
    start = threading.Barrier(clients)

    def call(_: int) -> int:
        start.wait()
        return get(url, timeout).status_code

    with ThreadPoolExecutor(clients) as pool:
        return list(pool.map(call, range(clients)))
