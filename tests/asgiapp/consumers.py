from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer, WebsocketConsumer

from tests.asgiapp.views import backend_pid
from tests.testapp.models import Item


def _count_and_pid() -> dict[str, int | None]:
    return {"count": Item.objects.count(), "pid": backend_pid()}


class ItemsConsumer(AsyncJsonWebsocketConsumer):  # type: ignore[misc]
    """Each message {"name": ...} creates an item; the reply carries the count."""

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        await self.send_json(await self._create(content.get("name", "ws")))

    @database_sync_to_async  # type: ignore[untyped-decorator]
    def _create(self, name: str) -> dict[str, int | None]:
        Item.objects.create(name=name)
        return _count_and_pid()


class SyncCountConsumer(WebsocketConsumer):  # type: ignore[misc]
    """A sync consumer: every message is answered with the item count."""

    def receive(self, text_data: str | None = None, bytes_data: Any = None) -> None:
        self.send(text_data=str(_count_and_pid()["count"]))


class GroupConsumer(AsyncJsonWebsocketConsumer):  # type: ignore[misc]
    """Joins the "items" group and forwards its item.saved events."""

    async def connect(self) -> None:
        await self.channel_layer.group_add("items", self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard("items", self.channel_name)

    async def item_saved(self, event: dict[str, Any]) -> None:
        await self.send_json({"name": event["name"]})
