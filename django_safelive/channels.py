"""A drop-in for Channels' ``ChannelsLiveServerTestCase``, bounded.

Channels' class runs Daphne in a child process; this one serves the same
application from a thread of the test process, as Django's live server does,
so settings overrides, the test database and ``--parallel`` reach it, and its
database sessions are bounded by django-safelive's budget.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from channels.layers import InMemoryChannelLayer, get_channel_layer
from channels.routing import get_default_application

from django_safelive._core.asgi_server import ASGIApp
from django_safelive._core.asgi_testcases import ASGILiveServerTestCase

__all__ = ["ChannelsLiveServerTestCase"]

# InMemoryChannelLayer's methods that a test may call from its own thread.
_LAYER_METHODS = ("send", "group_send", "group_add", "group_discard", "flush")


class ChannelsLiveServerTestCase(ASGILiveServerTestCase):
    """Channels' ``ChannelsLiveServerTestCase`` (``live_server_url``,
    ``live_server_ws_url``, ``serve_static``, ``host``), served in-process by
    a bounded ASGI server."""

    @classmethod
    def get_application(cls) -> ASGIApp:
        """``settings.ASGI_APPLICATION``, loaded as Channels loads it."""
        application: ASGIApp = get_default_application()
        return application

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        loop = cls.server_thread.loop
        layer = get_channel_layer()
        if isinstance(layer, InMemoryChannelLayer) and loop is not None:
            cls.addClassCleanup(on_server_loop(layer, loop))


def on_server_loop(
    layer: InMemoryChannelLayer, loop: asyncio.AbstractEventLoop
) -> Callable[[], None]:
    """Run `layer`'s calls from other event loops (a test's ``async_to_sync(
    layer.group_send)``, say) on the server's `loop`, whose consumers wait on
    the layer's queues; returns the function that undoes it.

    The in-memory layer's queues belong to the server's loop: a message put
    from another thread would reach a waiting consumer only when something
    else woke that loop, and asyncio's debug mode refuses it outright.
    """
    for name in _LAYER_METHODS:
        setattr(layer, name, _routed(getattr(layer, name), loop))

    def undo() -> None:
        for name in _LAYER_METHODS:
            vars(layer).pop(name, None)

    return undo


def _routed(
    method: Callable[..., Any], loop: asyncio.AbstractEventLoop
) -> Callable[..., Any]:
    async def call(*args: Any, **kwargs: Any) -> Any:
        if asyncio.get_running_loop() is loop or loop.is_closed():
            return await method(*args, **kwargs)
        future = asyncio.run_coroutine_threadsafe(method(*args, **kwargs), loop)
        return await asyncio.wrap_future(future)

    return call
