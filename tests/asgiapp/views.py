from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator

from asgiref.sync import sync_to_async
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from tests.testapp.models import Item


async def async_items(request: HttpRequest) -> HttpResponse:
    """An async view on the async ORM: the item count and the backend's pid."""
    count = await Item.objects.acount()
    return JsonResponse({"count": count, "pid": await _backend_pid()})


@csrf_exempt
def sync_create(request: HttpRequest) -> HttpResponse:
    """A sync view writing an item; answers with the backend's pid."""
    item = Item.objects.create(name=request.GET.get("name", "asgi"))
    return JsonResponse(
        {"id": item.pk, "pid": backend_pid(), "thread": threading.current_thread().name}
    )


def backend_pid() -> int | None:
    """The PostgreSQL backend serving this thread's session (None elsewhere)."""
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return int(cursor.fetchone()[0])


async def events(request: HttpRequest) -> StreamingHttpResponse:
    """Server-Sent Events: three events, each with the item count."""

    async def stream() -> AsyncIterator[str]:
        for number in range(3):
            count = await Item.objects.acount()
            yield f"id: {number}\ndata: {json.dumps({'count': count})}\n\n"
            await asyncio.sleep(0)

    return StreamingHttpResponse(stream(), content_type="text/event-stream")


async def slow(request: HttpRequest) -> HttpResponse:
    """An async view that touches the database, then waits a while."""
    await Item.objects.acount()
    await asyncio.sleep(float(request.GET.get("seconds", "0.2")))
    return JsonResponse({"pid": await _backend_pid()})


async def _backend_pid() -> int | None:
    return await sync_to_async(backend_pid)()
