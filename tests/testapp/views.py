"""A small JSON API that touches the database on every request."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests
from django.db import IntegrityError, connection, connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseRedirect,
    JsonResponse,
    StreamingHttpResponse,
)
from django.template import Context, Engine
from django.views.decorators.csrf import csrf_exempt

from tests.testapp.models import Item

TOKEN = "s3cret-token-value"

OPENAPI: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "Shop", "version": "1.0"},
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Item": {
                "type": "object",
                "properties": {
                    "id": {"type": "integer"},
                    "name": {"type": "string"},
                    "price": {"type": "integer"},
                },
                "required": ["id", "name", "price"],
            },
            "NewItem": {
                "type": "object",
                "properties": {
                    "name": {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": 100,
                        # PostgreSQL text cannot hold NUL characters.
                        "pattern": "^[^\\u0000]*$",
                    },
                    "price": {"type": "integer", "minimum": 0, "maximum": 1000000},
                },
                "required": ["name"],
                "additionalProperties": False,
            },
        },
    },
    "security": [{"bearer": []}],
    "paths": {
        "/items/": {
            "get": {
                "operationId": "list_items",
                "responses": {
                    "200": {
                        "description": "All items",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "array",
                                    "items": {"$ref": "#/components/schemas/Item"},
                                }
                            }
                        },
                    },
                    "401": {"description": "No token"},
                },
            },
            "post": {
                "operationId": "create_item",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {"$ref": "#/components/schemas/NewItem"}
                        }
                    },
                },
                "responses": {
                    "201": {
                        "description": "Created",
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/Item"}
                            }
                        },
                    },
                    "400": {"description": "Invalid"},
                    "401": {"description": "No token"},
                },
            },
        },
        "/items/{item_id}/": {
            "get": {
                "operationId": "get_item",
                "parameters": [
                    {
                        "name": "item_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "integer", "minimum": 1, "maximum": 2**31},
                    }
                ],
                "responses": {
                    "200": {
                        "description": "The item",
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/Item"}
                            }
                        },
                    },
                    "401": {"description": "No token"},
                    "404": {"description": "No such item"},
                },
            }
        },
    },
}


def _authorized(request: HttpRequest) -> bool:
    return request.headers.get("Authorization") == f"Bearer {TOKEN}"


def _item(item: Item) -> dict[str, Any]:
    return {"id": item.pk, "name": item.name, "price": item.price}


@csrf_exempt
def items(request: HttpRequest) -> HttpResponse:
    if not _authorized(request):
        return JsonResponse({"detail": "unauthorized"}, status=401)
    if request.method == "POST":
        try:
            data = json.loads(request.body)
            name, price = data["name"], data.get("price", 0)
        except (ValueError, TypeError, KeyError):
            return JsonResponse({"detail": "invalid"}, status=400)
        valid = (
            isinstance(name, str)
            and 1 <= len(name) <= 100
            and "\x00" not in name
            and isinstance(price, int)
            and not isinstance(price, bool)
            and 0 <= price <= 1000000
            and set(data) <= {"name", "price"}
        )
        if not valid:
            return JsonResponse({"detail": "invalid"}, status=400)
        return JsonResponse(
            _item(Item.objects.create(name=name, price=price)), status=201
        )
    return JsonResponse(
        [_item(item) for item in Item.objects.order_by("pk")[:20]], safe=False
    )


def item(request: HttpRequest, item_id: int) -> HttpResponse:
    if not _authorized(request):
        return JsonResponse({"detail": "unauthorized"}, status=401)
    found = Item.objects.filter(pk=item_id).first()
    if found is None:
        return JsonResponse({"detail": "not found"}, status=404)
    return JsonResponse(_item(found))


def openapi(request: HttpRequest) -> HttpResponse:
    return JsonResponse(OPENAPI)


def slow(request: HttpRequest) -> HttpResponse:
    """Hold a database session for ?seconds=N."""
    Item.objects.exists()
    time.sleep(float(request.GET.get("seconds", "1")))
    return JsonResponse({"slept": True})


def hang(request: HttpRequest) -> HttpResponse:
    """Sit in the database for a minute, inside a transaction, holding a row lock."""
    with transaction.atomic():
        Item.objects.select_for_update().exists()
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_sleep(60)")
    return JsonResponse({"finished": True})


def session(request: HttpRequest) -> HttpResponse:
    """Who this request's database session is, as PostgreSQL sees it, and the
    thread that served it."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid(), current_setting('application_name')")
        pid, name = cursor.fetchone()
    return JsonResponse(
        {
            "pid": pid,
            "application_name": name,
            "thread": threading.current_thread().name,
        }
    )


def temp_table(request: HttpRequest) -> HttpResponse:
    """Create a temporary table in this request's session; its schema and the
    session's backend pid. A test that locks the table keeps that backend from
    exiting when the session closes (it drops the table as it exits)."""
    with connection.cursor() as cursor:
        cursor.execute("CREATE TEMP TABLE IF NOT EXISTS safelive_held (x int)")
        cursor.execute(
            "SELECT pg_my_temp_schema()::regnamespace::text, pg_backend_pid()"
        )
        schema, pid = cursor.fetchone()
    return JsonResponse({"table": f"{schema}.safelive_held", "pid": pid})


def _close_thread_connections() -> None:
    """Close this thread's connections, in-memory SQLite ones too (whose close()
    Django ignores, as it would destroy the database: it lives on in the others)."""
    for conn in connections.all(initialized_only=True):
        if conn.vendor == "sqlite" and conn.connection is not None:
            BaseDatabaseWrapper.close(conn)
    connections.close_all()


def spawn(request: HttpRequest) -> HttpResponse:
    """Start ?threads=N threads that each query the database, like a careless view."""
    Item.objects.exists()  # the request's own session
    errors: list[str] = []
    hold = threading.Barrier(int(request.GET.get("threads", "1")))

    def work() -> None:
        try:
            Item.objects.exists()
            hold.wait(5)
        except Exception as error:
            errors.append(f"{type(error).__name__}: {error}")
            hold.abort()
        finally:
            _close_thread_connections()

    threads = [threading.Thread(target=work) for _ in range(hold.parties)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return JsonResponse({"errors": errors}, status=500 if errors else 200)


# Set by the test to let the thread that /leak/ started close its session.
release_leak = threading.Event()


def leak(request: HttpRequest) -> HttpResponse:
    """Start a thread that opens a session and keeps it until `release_leak`."""
    opened = threading.Event()

    def hold() -> None:
        try:
            Item.objects.exists()
            opened.set()
            release_leak.wait(60)
        finally:
            # Ended under it by the server's teardown, as the test expects.
            with contextlib.suppress(Exception):
                connections.close_all()

    threading.Thread(target=hold, name="leaky-thread", daemon=True).start()
    opened.wait(10)
    return JsonResponse({"opened": opened.is_set()})


class Concurrency:
    """How many requests ran app code at the same time, at most."""

    lock = threading.Lock()
    running = 0
    peak = 0


def concurrent(request: HttpRequest) -> HttpResponse:
    with Concurrency.lock:
        Concurrency.running += 1
        Concurrency.peak = max(Concurrency.peak, Concurrency.running)
    try:
        Item.objects.exists()
        time.sleep(float(request.GET.get("seconds", "0.1")))
    finally:
        with Concurrency.lock:
            Concurrency.running -= 1
    return JsonResponse({"ok": True})


def webhook(request: HttpRequest) -> HttpResponse:
    """Call this same live server over HTTP, as a webhook to oneself would."""
    Item.objects.exists()
    url = request.build_absolute_uri("/items/")
    try:
        with requests.Session() as client:
            answer = client.get(
                url,
                headers={"Authorization": f"Bearer {TOKEN}"},
                timeout=float(request.GET.get("timeout", "5")),
            )
    except requests.RequestException as error:
        return JsonResponse({"error": f"{type(error).__name__}: {error}"}, status=502)
    return JsonResponse({"status": answer.status_code})


@csrf_exempt
def raise_in_transaction(request: HttpRequest) -> HttpResponse:
    """Write a row inside a transaction, then fail before it commits."""
    with transaction.atomic():
        Item.objects.create(name="never committed")
        raise RuntimeError("the view failed mid-transaction")


@csrf_exempt
def leave_atomic_open(request: HttpRequest) -> HttpResponse:
    """Enter an atomic block, write a row, and return without leaving the block."""
    transaction.atomic().__enter__()
    Item.objects.create(name="never committed")
    return JsonResponse({"in_atomic_block": connection.in_atomic_block})


@csrf_exempt
def leave_autocommit_off(request: HttpRequest) -> HttpResponse:
    """Turn autocommit off, write a row, and return without committing."""
    transaction.set_autocommit(False)
    Item.objects.create(name="never committed")
    return JsonResponse({"autocommit": transaction.get_autocommit()})


def stream(request: HttpRequest) -> StreamingHttpResponse:
    """Stream ?chunks=N chunks of 64 KiB, querying the database for each."""

    def chunks() -> Iterator[bytes]:
        for _ in range(int(request.GET.get("chunks", "100"))):
            Item.objects.exists()
            yield b"x" * 65536

    return StreamingHttpResponse(chunks(), content_type="application/octet-stream")


# The browser page's template, without a TEMPLATES setting of the tests' own.
_templates = Engine(
    dirs=[str(Path(__file__).resolve().parent / "templates")],
    libraries={"static": "django.templatetags.static"},
)


@csrf_exempt
def browser_page(request: HttpRequest) -> HttpResponse:
    """A page with stylesheets, scripts and images, listing the items; its form
    posts a new one (tests/test_browser.py)."""
    if request.method == "POST":
        Item.objects.create(name=request.POST.get("name", "")[:100])
        return HttpResponseRedirect("/browser/")
    context = Context({"items": Item.objects.order_by("pk"), "badges": range(4)})
    page = _templates.get_template("testapp/browser.html").render(context)
    return HttpResponse(page)


def badge(request: HttpRequest, number: int) -> HttpResponse:
    """An SVG image drawn from the database: the page's badges query it at once."""
    count = Item.objects.count()
    svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{20 + number}" '
        f'height="20"><text x="2" y="15">{count}</text></svg>'
    )
    return HttpResponse(svg, content_type="image/svg+xml")


# The rollback live server's tests (tests/test_rollback.py).
on_commit_ran: list[str] = []
# When /rollback/hold/ last finished, by time.monotonic(), and that it started.
hold_finished: list[float] = []
hold_entered = threading.Event()


@csrf_exempt
def duplicate_item(request: HttpRequest) -> HttpResponse:
    """Insert an item with ?pk=N, an existing primary key: IntegrityError."""
    Item.objects.create(name="written before the duplicate")
    Item.objects.create(pk=int(request.GET["pk"]), name="duplicate")
    return JsonResponse({"created": True}, status=201)


@csrf_exempt
def duplicate_item_caught(request: HttpRequest) -> HttpResponse:
    """Insert a duplicate primary key, catch the IntegrityError, answer 409."""
    Item.objects.create(name="written before the duplicate")
    try:
        Item.objects.create(pk=int(request.GET["pk"]), name="duplicate")
    except IntegrityError:
        return JsonResponse({"detail": "conflict"}, status=409)
    return JsonResponse({"created": True}, status=201)


@csrf_exempt
def write_then_fail(request: HttpRequest) -> HttpResponse:
    """Write a row outside any atomic block, then fail: a 500."""
    Item.objects.create(name="written by a failed request")
    raise RuntimeError("the view failed after writing")


@csrf_exempt
def hold(request: HttpRequest) -> HttpResponse:
    """Write a row, then hold the request for ?seconds=N, then note the time."""
    Item.objects.create(name="held")
    hold_entered.set()
    time.sleep(float(request.GET.get("seconds", "0.3")))
    hold_finished.append(time.monotonic())
    return JsonResponse({"held": True}, status=201)


@csrf_exempt
def with_on_commit(request: HttpRequest) -> HttpResponse:
    """Write a row (not with ?write=0: no query at all) and register an
    on_commit callback; fail after it with ?fail=1."""
    name = "with on_commit"
    if request.GET.get("write") != "0":
        Item.objects.create(name=name)
    transaction.on_commit(lambda: on_commit_ran.append(name))
    if request.GET.get("fail"):
        raise RuntimeError("the view failed after registering its callback")
    return JsonResponse({"name": name}, status=201)
