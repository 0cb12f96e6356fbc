import json
from concurrent.futures import ThreadPoolExecutor

import requests
from channels.testing import ChannelsLiveServerTestCase
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from chat.models import Message

HTTP_CLIENTS = 24
REQUESTS = 10  # per HTTP client
WEBSOCKETS = 8
MESSAGES = 10  # per WebSocket


class ChatLiveServerTests(ChannelsLiveServerTestCase):
    def http_client(self, number):
        """Post and read messages over one keep-alive connection; the statuses."""
        statuses = []
        with requests.Session() as session:
            for n in range(REQUESTS):
                if n % 2:
                    response = session.get(f"{self.live_server_url}/messages/")
                else:
                    response = session.post(
                        f"{self.live_server_url}/messages/new/",
                        data={"author": f"http-{number}", "text": f"hello {n}"},
                    )
                statuses.append(response.status_code)
        return statuses

    def websocket_client(self, number):
        """Send messages on one WebSocket; how many were answered."""
        answered = 0
        with connect(
            f"{self.live_server_ws_url}/ws/chat/", origin=self.live_server_url
        ) as websocket:
            try:
                for n in range(MESSAGES):
                    websocket.send(
                        json.dumps({"author": f"ws-{number}", "text": f"hi {n}"})
                    )
                    if "id" in json.loads(websocket.recv(timeout=60)):
                        answered += 1
            except ConnectionClosed:
                pass
        return answered

    def test_chat_under_load(self):
        """24 HTTP clients and 8 WebSockets at once: every request and message
        is answered."""
        with ThreadPoolExecutor(HTTP_CLIENTS + WEBSOCKETS) as pool:
            http = pool.map(self.http_client, range(HTTP_CLIENTS))
            websockets = pool.map(self.websocket_client, range(WEBSOCKETS))
            statuses = [status for client in http for status in client]
            answered = list(websockets)

        self.assertEqual(statuses, [200] * HTTP_CLIENTS * REQUESTS)
        self.assertEqual(answered, [MESSAGES] * WEBSOCKETS)
        self.assertEqual(
            Message.objects.count(),
            HTTP_CLIENTS * REQUESTS // 2 + WEBSOCKETS * MESSAGES,
        )
