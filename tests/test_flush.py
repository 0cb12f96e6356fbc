"""The flush after a live-server test truncates only the tables with rows (and
those that must go with them), and still leaves every table empty."""

from __future__ import annotations

import threading
import unittest

import pytest
import requests
from django.db import connection
from hypothesis import given, settings
from hypothesis import strategies as st

from django_safelive import LiveServerTestCase
from django_safelive import hypothesis as safelive_hypothesis
from django_safelive._core.flush import only_tables_with_rows, tables_to_truncate
from tests._truncations import truncations
from tests.test_root_causes import run as run_scenario
from tests.testapp import views
from tests.testapp.models import Item, Note, Tag
from tests.testapp.views import TOKEN

AUTH = {"Authorization": f"Bearer {TOKEN}"}
TABLES = ["testapp_item", "testapp_note", "testapp_tag"]


def _post_item(base_url: str) -> None:
    response = requests.post(
        f"{base_url}/items/", json={"name": "written"}, headers=AUTH, timeout=30
    )
    assert response.status_code == 201, response.text


class WritingCase(LiveServerTestCase):
    """Run by the tests below, not collected itself."""

    __test__ = False

    def test_request_writes(self) -> None:
        """A request writes an item."""
        _post_item(self.live_server_url)

    def test_writes_a_tag(self) -> None:
        """The test thread writes a tag."""
        Tag.objects.create(name="written")

    def test_writes_nothing(self) -> None:
        """Nothing is written."""

    def test_leaks_a_session(self) -> None:
        """A view leaves a thread holding a session: the reset fails."""
        response = requests.get(f"{self.live_server_url}/leak/", timeout=30)
        assert response.json() == {"opened": True}


class SomeAppsCase(WritingCase):
    """Run by the tests below, not collected itself: Django flushes the
    available apps' tables only, with CASCADE."""

    __test__ = False
    available_apps = ["tests.testapp"]


class HypothesisCase(safelive_hypothesis.LiveServerTestCase):
    """Run by the tests below, not collected itself."""

    __test__ = False
    seen: list[int] = []

    @settings(max_examples=5, database=None, deadline=None)
    @given(st.integers(min_value=0, max_value=3))
    def test_examples(self, number: int) -> None:
        """Each example starts with no item, then writes one."""
        HypothesisCase.seen.append(Item.objects.count())
        for _ in range(number):
            _post_item(self.live_server_url)


def run(case: unittest.TestCase, *, errors: int = 0) -> list[str]:
    """Run `case`, expecting `errors` errors; the TRUNCATE statements of its
    flush."""
    result = unittest.TestResult()
    with truncations() as found:
        unittest.TestSuite([case]).run(result)
    assert not result.failures, result.failures
    assert len(result.errors) == errors, result.errors
    return found


def counts() -> tuple[int, int, int]:
    return Item.objects.count(), Note.objects.count(), Tag.objects.count()


@pytest.mark.django_db(transaction=True)
def test_a_written_table_and_those_referring_to_it() -> None:
    """A request wrote an item: the flush truncates items and notes (which
    refer to items), not tags, and every table is empty after."""
    (statement,) = run(WritingCase("test_request_writes"))
    assert '"testapp_item"' in statement
    assert '"testapp_note"' in statement
    assert '"testapp_tag"' not in statement
    assert counts() == (0, 0, 0)


@pytest.mark.django_db(transaction=True)
def test_with_available_apps() -> None:
    """With available_apps Django truncates with CASCADE: narrowed the same way."""
    (statement,) = run(SomeAppsCase("test_request_writes"))
    assert "CASCADE" in statement
    assert '"testapp_item"' in statement
    assert '"testapp_tag"' not in statement
    assert counts() == (0, 0, 0)


@pytest.mark.django_db(transaction=True)
def test_a_table_the_test_thread_wrote() -> None:
    """The test thread wrote a tag: only tags are truncated."""
    (statement,) = run(WritingCase("test_writes_a_tag"))
    assert '"testapp_tag"' in statement
    assert '"testapp_item"' not in statement
    assert counts() == (0, 0, 0)


@pytest.mark.django_db(transaction=True)
def test_nothing_written_nothing_truncated() -> None:
    """With every table empty the flush truncates nothing."""
    assert run(WritingCase("test_writes_nothing")) == []


@pytest.mark.django_db(transaction=True)
def test_after_a_failed_reset_every_table() -> None:
    """When the reset fails (a session left behind), Django's flush truncates
    every table, as it would without us."""
    views.release_leak.clear()
    try:
        (statement,) = run(WritingCase("test_leaks_a_session"), errors=1)
    finally:
        views.release_leak.set()
    for table in TABLES:
        assert f'"{table}"' in statement


@pytest.mark.django_db(transaction=True)
def test_every_hypothesis_example_starts_empty() -> None:
    """Between Hypothesis examples the narrowed flush still empties the tables
    the previous example wrote."""
    HypothesisCase.seen = []
    run(HypothesisCase("test_examples"))
    assert HypothesisCase.seen and set(HypothesisCase.seen) == {0}
    assert counts() == (0, 0, 0)


@pytest.mark.django_db(transaction=True)
def test_row_security_keeps_a_table() -> None:
    """A table with row security is kept even when it looks empty: the rows
    may be hidden from the test thread."""
    with connection.cursor() as cursor:
        cursor.execute('ALTER TABLE "testapp_tag" ENABLE ROW LEVEL SECURITY')
    try:
        assert tables_to_truncate(connection, TABLES) == ["testapp_tag"]
    finally:
        with connection.cursor() as cursor:
            cursor.execute('ALTER TABLE "testapp_tag" DISABLE ROW LEVEL SECURITY')
    assert tables_to_truncate(connection, TABLES) == []


@pytest.mark.django_db(transaction=True)
def test_an_unreadable_catalog_keeps_every_table() -> None:
    """A table the catalog query cannot read (here, one that does not exist)
    means the whole list is flushed, as Django would."""
    tables = [*TABLES, "no_such_table"]
    assert tables_to_truncate(connection, tables) == tables
    Item.objects.create(name="still usable")  # the failed query broke nothing


@pytest.mark.django_db(transaction=True)
def test_only_the_calling_threads_connection() -> None:
    """The narrowing is on the calling thread's connection alone, and gone
    after the block."""
    other: list[bool] = []
    with only_tables_with_rows(["default"]):
        assert "sql_flush" in vars(connection.ops)

        def look() -> None:
            from django.db import connection as theirs

            other.append("sql_flush" in vars(theirs.ops))

        thread = threading.Thread(target=look)
        thread.start()
        thread.join()
    assert other == [False]
    assert "sql_flush" not in vars(connection.ops)


def test_the_pytest_fixtures_flush() -> None:
    """After a test using safe_live_server, pytest-django's flush truncates
    only the written table and the one referring to it."""
    outcome = run_scenario("pytest_flush", "safelive")
    assert outcome.returncode == 0, outcome.output
    found = {key: outcome.value(key) for key in ("item", "note", "tag", "items")}
    assert found == {"item": 1, "note": 1, "tag": 0, "items": 0}, outcome.output
