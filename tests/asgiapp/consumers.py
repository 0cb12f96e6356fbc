from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer, WebsocketConsumer
from django.db import connection

from tests.testapp.models import Item


def _count_and_pid() -> dict[str, int]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    return {"count": Item.objects.count(), "pid": pid}


class ItemsConsumer(AsyncJsonWebsocketConsumer):  # type: ignore[misc]
    """Each message {"name": ...} creates an item; the reply carries the count."""

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        await self.send_json(await self._create(content.get("name", "ws")))

    @database_sync_to_async  # type: ignore[untyped-decorator]
    def _create(self, name: str) -> dict[str, int]:
        Item.objects.create(name=name)
        return _count_and_pid()


class SyncCountConsumer(WebsocketConsumer):  # type: ignore[misc]
    """A sync consumer: every message is answered with the item count."""

    def receive(self, text_data: str | None = None, bytes_data: Any = None) -> None:
        self.send(text_data=str(_count_and_pid()["count"]))
