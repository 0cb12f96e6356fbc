"""The safe_live_server fixture's tests end in pytest-django's flush, narrowed
to the tables with rows: the first test writes an item through the server, the
second reads the TRUNCATE statements the first one's flush ran.

Run by tests/test_flush.py in a pytest run of its own, in file order.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests._truncations import truncations
from tests.scenarios._impl import report
from tests.testapp.models import Item
from tests.testapp.views import TOKEN


@pytest.fixture(scope="module", autouse=True)
def truncated() -> Iterator[list[str]]:
    """The TRUNCATE statements the test thread's connection runs, from the
    first test on."""
    with truncations() as found:
        yield found


def test_writes_an_item(safe_live_server: Any) -> None:
    """A request writes an item."""
    response = requests.post(
        f"{safe_live_server}/items/",
        json={"name": "written"},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=30,
    )
    assert response.status_code == 201


def test_the_flush_after_it(django_db_blocker: Any, truncated: list[str]) -> None:
    """Its flush truncated items and notes (which refer to items), not tags,
    and left no item."""
    (statement,) = truncated
    with django_db_blocker.unblock():
        items = Item.objects.count()
    report(
        item=int('"testapp_item"' in statement),
        note=int('"testapp_note"' in statement),
        tag=int('"testapp_tag"' in statement),
        items=items,
    )
