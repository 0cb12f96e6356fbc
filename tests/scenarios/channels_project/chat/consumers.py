from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from chat.models import Message


class ChatConsumer(AsyncJsonWebsocketConsumer):
    """Stores each message received and answers with its id and the count."""

    async def receive_json(self, content, **kwargs):
        message_id, count = await self.save_message(content["author"], content["text"])
        await self.send_json({"id": message_id, "count": count})

    @database_sync_to_async
    def save_message(self, author, text):
        message = Message.objects.create(author=author, text=text)
        return message.pk, Message.objects.count()
