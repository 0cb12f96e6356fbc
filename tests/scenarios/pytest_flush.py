"""The safe_live_server fixture's tests end in pytest-django's flush, narrowed
to the tables with rows: the first test writes an item through the server, the
second reads the TRUNCATE statements the first one's flush ran.

Run by tests/test_flush.py in a pytest run of its own, in file order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from django.db import connection

from tests.scenarios._impl import report
from tests.testapp.models import Item
from tests.testapp.views import TOKEN

TRUNCATED: list[str] = []


@pytest.fixture(scope="module", autouse=True)
def record_truncations() -> Iterator[None]:
    """Keep the TRUNCATE statements the test thread's connection runs."""

    def record(execute: Callable[..., Any], sql: str, *args: Any) -> Any:
        if sql.lstrip().upper().startswith("TRUNCATE"):
            TRUNCATED.append(sql)
        return execute(sql, *args)

    with connection.execute_wrapper(record):
        yield


def test_writes_an_item(safe_live_server: Any) -> None:
    """A request writes an item."""
    response = requests.post(
        f"{safe_live_server}/items/",
        json={"name": "written"},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=30,
    )
    assert response.status_code == 201


def test_the_flush_after_it(django_db_blocker: Any) -> None:
    """Its flush truncated items and notes (which refer to items), not tags,
    and left no item."""
    (statement,) = TRUNCATED
    with django_db_blocker.unblock():
        items = Item.objects.count()
    report(
        item=int('"testapp_item"' in statement),
        note=int('"testapp_note"' in statement),
        tag=int('"testapp_tag"' in statement),
        items=items,
    )
