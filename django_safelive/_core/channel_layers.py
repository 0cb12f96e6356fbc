"""Channels' in-memory channel layer, shared by the test and the ASGI server."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

# InMemoryChannelLayer's methods that a test may call from its own thread.
_LAYER_METHODS = ("send", "group_send", "group_add", "group_discard", "flush")


def route_to_server_loop(loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
    """Run the default in-memory channel layer's calls made from other event
    loops (a test's ``async_to_sync(layer.group_send)``, say) on the server's
    `loop`, whose consumers wait on the layer's queues; returns the function
    that undoes it. Nothing to do without Channels or another layer.

    The in-memory layer's queues belong to the server's loop: a message put
    from another thread would reach a waiting consumer only when something
    else woke that loop, and asyncio's debug mode refuses it outright.
    """
    try:
        from channels.layers import InMemoryChannelLayer, get_channel_layer
    except ImportError:
        return lambda: None
    layer = get_channel_layer()
    if not isinstance(layer, InMemoryChannelLayer):
        return lambda: None
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
