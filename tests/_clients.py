"""HTTP and WebSocket clients for the tests: concurrent callers and raw sockets."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests
from websockets.sync.client import connect

from tests._waiting import DEADLINE
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
        start.wait(DEADLINE)
        return get(url, timeout).status_code

    with ThreadPoolExecutor(clients) as pool:
        return list(pool.map(call, range(clients)))


def ws_exchange(url: str, messages: int, name: str) -> list[dict[str, Any]]:
    """Open a WebSocket to /ws/items/, send `messages` items, collect replies."""
    replies = []
    with connect(f"{url}/ws/items/", open_timeout=30) as websocket:
        for number in range(messages):
            websocket.send(json.dumps({"name": f"{name}-{number}"}))
            replies.append(json.loads(websocket.recv(timeout=30)))
    return replies
