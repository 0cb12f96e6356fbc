"""The tests' ASGI application: Django's for HTTP, Channels consumers for
WebSockets (``settings.ASGI_APPLICATION`` in the ASGI tests)."""

from __future__ import annotations

from channels.routing import ProtocolTypeRouter, URLRouter
from django.core.asgi import get_asgi_application
from django.urls import path

from tests.asgiapp.consumers import GroupConsumer, ItemsConsumer, SyncCountConsumer

application = ProtocolTypeRouter(
    {
        "http": get_asgi_application(),
        "websocket": URLRouter(
            [
                path("ws/items/", ItemsConsumer.as_asgi()),
                path("ws/count/", SyncCountConsumer.as_asgi()),
                path("ws/group/", GroupConsumer.as_asgi()),
            ]
        ),
    }
)
