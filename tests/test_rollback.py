"""The rollback live server: requests inside the test's transaction, one session."""

from __future__ import annotations

import os
import socket
import tempfile
import threading
import time
import unittest
from typing import Any, ClassVar, cast

import pytest
import requests
from django.core.exceptions import ImproperlyConfigured
from django.db import DataError, connection, connections, transaction
from django.test import override_settings
from hypothesis import given, settings
from hypothesis import strategies as st

from django_safelive import (
    RequestStuck,
    RollbackLiveServerTestCase,
    RollbackUnsupported,
    SafeLiveError,
    StaticRollbackLiveServerTestCase,
)
from django_safelive import hypothesis as safelive_hypothesis
from django_safelive import schemathesis as safelive_schemathesis
from django_safelive._core.rollback import RollbackLiveServer
from django_safelive._core.rollback_config import resolve_rollback
from django_safelive._core.rollback_server import RollbackServerThread
from tests import _pg
from tests._clients import AUTH, concurrently, get
from tests._sampler import Sampler, connect, count_sessions
from tests._waiting import wait_for
from tests.conftest import RUN_ONCE
from tests.test_browser import missing, start_chromium
from tests.testapp import views
from tests.testapp.models import Item
from tests.testapp.views import OPENAPI

# Requests that fail: their writes are rolled back, the test's transaction
# stays usable. (path, status)
FAILING = [
    ("/rollback/duplicate/?pk={pk}", 500),
    ("/rollback/duplicate-caught/?pk={pk}", 409),
    ("/rollback/write-then-fail/", 500),
    ("/faults/raise-in-transaction/", 500),
    ("/faults/leave-atomic-open/", 200),
    ("/faults/leave-autocommit-off/", 500),
]


def post_item(url: str, name: str) -> requests.Response:
    """POST a new item to the server at `url` on a fresh client."""
    with requests.Session() as client:
        return client.post(f"{url}/items/", json={"name": name}, headers=AUTH)


def names(url: str) -> list[str]:
    """The names the server at `url` lists, in order."""
    response = get(f"{url}/items/")
    assert response.status_code == 200, response.content
    return [item["name"] for item in response.json()]


def wait_alone() -> None:
    """Wait until at most one session (the test thread's) is on the test
    database: one a previous test closed may linger a moment."""
    conn = connect()
    try:
        name = connection.settings_dict["NAME"]
        assert wait_for(lambda: count_sessions(conn, name) <= 1)
    finally:
        conn.close()


class SessionsSampled:
    """Sample the test database's sessions for the whole class; fail the class
    if more than one was ever open."""

    sampler: ClassVar[Sampler]

    @classmethod
    def setUpClass(cls) -> None:
        wait_alone()
        cls.sampler = Sampler(connection.settings_dict["NAME"])
        cls.sampler.__enter__()
        cls.addClassCleanup(cls._check_sessions)  # type: ignore[attr-defined]
        super().setUpClass()  # type: ignore[misc]

    @classmethod
    def _check_sessions(cls) -> None:
        cls.sampler.__exit__(None, None, None)
        assert cls.sampler.samples > 0
        assert cls.sampler.peak <= 1, f"{cls.sampler.peak} sessions at once"


class RollbackTests(SessionsSampled, RollbackLiveServerTestCase):
    item: Item

    @classmethod
    def setUpTestData(cls) -> None:
        cls.item = Item.objects.create(name="from setUpTestData", price=7)

    def test_server_sees_set_up_test_data(self) -> None:
        """Data from setUpTestData is visible to requests."""
        response = get(f"{self.live_server_url}/items/{self.item.pk}/")
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.json()["name"], "from setUpTestData")

    def test_writes_visible_to_test_and_later_requests(self) -> None:
        """A request's write is seen by the test thread and by later requests."""
        self.assertEqual(Item.objects.count(), 1)
        response = post_item(self.live_server_url, "over http")
        self.assertEqual(response.status_code, 201, response.content)
        self.assertTrue(Item.objects.filter(name="over http").exists())
        self.assertEqual(
            names(self.live_server_url), ["from setUpTestData", "over http"]
        )

    def test_writes_of_other_tests_are_gone(self) -> None:
        """Each test starts with setUpTestData's row only, whatever the order."""
        self.assertEqual(
            list(Item.objects.values_list("name", flat=True)), ["from setUpTestData"]
        )
        self.assertEqual(post_item(self.live_server_url, "mine").status_code, 201)

    def test_server_sees_the_test_threads_writes(self) -> None:
        """A row the test wrote, uncommitted, is served."""
        Item.objects.create(name="written by the test")
        self.assertIn("written by the test", names(self.live_server_url))

    def test_failing_requests_roll_back_alone(self) -> None:
        """A failing request rolls back alone; the test transaction stays usable."""
        kept = post_item(self.live_server_url, "kept").json()["id"]
        for path, status in FAILING:
            with self.subTest(path=path):
                with requests.Session() as client:
                    response = client.post(
                        self.live_server_url + path.format(pk=kept), headers=AUTH
                    )
                self.assertEqual(response.status_code, status, response.content)
                self.assertEqual(
                    sorted(Item.objects.values_list("name", flat=True)),
                    ["from setUpTestData", "kept"],
                )
                self.assertFalse(connection.needs_rollback)
                self.assertEqual(len(connection.savepoint_ids), 1)
        # Both sides can still write, and see each other's writes.
        Item.objects.create(name="after, by the test")
        self.assertEqual(post_item(self.live_server_url, "after").status_code, 201)
        self.assertEqual(
            names(self.live_server_url),
            ["from setUpTestData", "kept", "after, by the test", "after"],
        )

    def test_keep_alive_requests_each_in_a_savepoint(self) -> None:
        """On one keep-alive connection, a failed request loses only its write."""
        with requests.Session() as client:
            statuses = [
                client.post(
                    f"{self.live_server_url}{path}", json={"name": name}, headers=AUTH
                ).status_code
                for path, name in [
                    ("/items/", "first"),
                    ("/rollback/write-then-fail/", "failed"),
                    ("/items/", "second"),
                ]
            ]
        self.assertEqual(statuses, [201, 500, 201])
        self.assertEqual(
            names(self.live_server_url), ["from setUpTestData", "first", "second"]
        )

    def test_streamed_response(self) -> None:
        """A streamed response that queries per chunk arrives whole."""
        response = get(f"{self.live_server_url}/stream/?chunks=20")
        self.assertEqual(response.status_code, 200)
        self.assertEqual(len(response.content), 20 * 65536)
        self.assertEqual(Item.objects.count(), 1)

    def test_request_on_a_broken_test_transaction(self) -> None:
        """A request on a transaction marked for rollback fails, mark kept."""
        transaction.set_rollback(True)
        try:
            self.assertEqual(get(f"{self.live_server_url}/items/").status_code, 500)
            self.assertTrue(transaction.get_rollback())
        finally:
            transaction.set_rollback(False)
        self.assertEqual(Item.objects.count(), 1)

    def test_one_session_under_concurrent_clients(self) -> None:
        """Eight clients at once are all answered, on the test thread's session."""
        with Sampler(connection.settings_dict["NAME"]) as sampler:
            statuses = concurrently(f"{self.live_server_url}/items/", 8)
            creators = [
                threading.Thread(target=post_item, args=(self.live_server_url, f"c{n}"))
                for n in range(8)
            ]
            for creator in creators:
                creator.start()
            for creator in creators:
                creator.join()
        self.assertEqual(statuses, [200] * 8)
        self.assertEqual(Item.objects.count(), 9)
        self.assertEqual(sampler.peak, 1)
        self.assertEqual(_pg.sessions(), [])

    def test_query_while_a_request_runs(self) -> None:
        """A test query waits for the request in flight, then sees its write."""
        views.hold_entered.clear()
        views.hold_finished.clear()
        answers: list[int] = []
        client = threading.Thread(
            target=lambda: answers.append(
                get(f"{self.live_server_url}/rollback/hold/?seconds=0.5").status_code
            )
        )
        client.start()
        try:
            self.assertTrue(views.hold_entered.wait(30))
            with transaction.atomic():
                count = Item.objects.filter(name="held").count()
                queried = time.monotonic()
                Item.objects.create(name="by the test, in its own atomic()")
        finally:
            client.join()
        self.assertEqual(answers, [201])
        self.assertEqual(count, 1)
        self.assertGreaterEqual(queried, views.hold_finished[0])
        self.assertEqual(len(connection.savepoint_ids), 1)
        self.assertEqual(len(names(self.live_server_url)), 3)

    def test_atomic_requests(self) -> None:
        """ATOMIC_REQUESTS works inside the request's savepoint."""
        connection.settings_dict["ATOMIC_REQUESTS"] = True
        self.addCleanup(connection.settings_dict.__setitem__, "ATOMIC_REQUESTS", False)
        self.assertEqual(post_item(self.live_server_url, "atomic").status_code, 201)
        with requests.Session() as client:
            failed = client.post(f"{self.live_server_url}/rollback/write-then-fail/")
        self.assertEqual(failed.status_code, 500)
        self.assertEqual(names(self.live_server_url), ["from setUpTestData", "atomic"])

    def test_on_commit_as_in_test_case(self) -> None:
        """captureOnCommitCallbacks gets a request's callbacks, not a failed one's."""
        views.on_commit_ran.clear()
        with self.captureOnCommitCallbacks(execute=True) as callbacks:
            ok = requests.post(f"{self.live_server_url}/rollback/on-commit/")
            failed = requests.post(f"{self.live_server_url}/rollback/on-commit/?fail=1")
        self.assertEqual((ok.status_code, failed.status_code), (201, 500))
        self.assertEqual(len(callbacks), 1)
        self.assertEqual(views.on_commit_ran, ["with on_commit"])
        requests.post(f"{self.live_server_url}/rollback/on-commit/").close()
        self.assertEqual(views.on_commit_ran, ["with on_commit"])

    def test_on_commit_of_a_request_without_a_query(self) -> None:
        """A request that registers a callback before any query keeps it, and a
        failed one's is discarded, though neither opened its savepoint."""
        views.on_commit_ran.clear()
        with self.captureOnCommitCallbacks(execute=True) as callbacks:
            url = f"{self.live_server_url}/rollback/on-commit/?write=0"
            ok = requests.post(url)
            failed = requests.post(url + "&fail=1")
        self.assertEqual((ok.status_code, failed.status_code), (201, 500))
        self.assertEqual(len(callbacks), 1)
        self.assertEqual(views.on_commit_ran, ["with on_commit"])
        self.assertEqual(len(connection.savepoint_ids), 1)

    def test_savepoint_only_for_requests_that_query(self) -> None:
        """A request that runs no query sends no statement; one that does runs
        its queries between its SAVEPOINT and its RELEASE."""
        sent: list[str] = []

        def record(execute: Any, sql: str, *args: Any) -> Any:
            sent.append(sql.split()[0].upper())
            return execute(sql, *args)

        with connection.execute_wrapper(record):
            self.assertEqual(
                get(f"{self.live_server_url}/openapi.json").status_code, 200
            )
            self.assertEqual(sent, [])
            self.assertEqual(get(f"{self.live_server_url}/items/").status_code, 200)
        self.assertEqual(sent[0], "SAVEPOINT")
        self.assertEqual(sent[-1], "RELEASE")
        self.assertIn("SELECT", sent)
        self.assertEqual(Item.objects.count(), 1)

    def test_thread_with_its_own_session_is_refused(self) -> None:
        """A view's thread opening its own session fails; the reset says why."""
        response = get(f"{self.live_server_url}/spawn/?threads=1")
        self.assertEqual(response.status_code, 500)
        self.assertIn("SessionBudgetExceeded", response.json()["errors"][0])
        with self.assertRaisesRegex(RollbackUnsupported, "session of its own"):
            self.reset_live_server()
        self.assertEqual(_pg.sessions(), [])

    def test_call_to_itself_is_refused(self) -> None:
        """A view calling the server itself is refused at once, not deadlocked."""
        response = get(f"{self.live_server_url}/webhook/")
        self.assertEqual(response.status_code, 502)
        with self.assertRaisesRegex(RollbackUnsupported, "called the live server"):
            self.reset_live_server()

    def test_nested_given_rolled_back_per_example(self) -> None:
        """A @given inside the test, rolled back per example: isolated examples."""
        seen: list[int] = []

        @settings(max_examples=15, deadline=None, database=None)
        @given(st.integers(min_value=0, max_value=3))
        def example(count: int) -> None:
            with transaction.atomic():
                seen.append(Item.objects.count())
                for number in range(count):
                    post_item(self.live_server_url, f"example {number}")
                self.assertEqual(len(names(self.live_server_url)), 1 + count)
                transaction.set_rollback(True)

        example()
        self.assertEqual(set(seen), {1})

    def test_failed_query_as_a_request_starts(self) -> None:
        """A test query failing just as a request starts keeps its rollback mark."""
        shared = self.server_thread.transaction
        statuses: list[int] = []
        client = threading.Thread(
            target=lambda: statuses.append(
                get(f"{self.live_server_url}/slow/?seconds=0.3").status_code
            )
        )

        def start_a_request_then_fail(*call: Any) -> Any:
            execute, *args = call
            try:
                return execute(*args)
            except Exception:
                # The query has let go of the connection; Django has not marked
                # the transaction for rollback yet: a request begins now.
                client.start()
                assert wait_for(lambda: bool(shared._open))
                raise

        with transaction.atomic():
            connection.execute_wrappers.insert(0, start_a_request_then_fail)
            try:
                # Refused by the driver: the server's transaction is not broken.
                with self.assertRaises((DataError, ValueError)):
                    Item.objects.create(name="nul \x00")
            finally:
                connection.execute_wrappers.remove(start_a_request_then_fail)
                client.join()
            self.assertTrue(connection.needs_rollback)
            self.assertEqual(statuses, [200])
        self.assertFalse(connection.needs_rollback)
        self.assertEqual(Item.objects.count(), 1)

    def test_runs_in_a_single_worker_server(self) -> None:
        """The server is the bounded one, with one worker and a budget of one."""
        self.assertIsInstance(self.server_thread, RollbackServerThread)
        self.assertEqual(self.server_thread.config.workers, 1)
        self.assertEqual(self.server_thread.config.max_sessions, 1)
        # While shared, the connection's class guards needs_rollback.
        shared = type(connections["default"])
        self.assertNotIsInstance(shared.needs_rollback, bool)
        self.assertTrue(shared.__name__.startswith("Shared"))


def sleeping_in_the_database() -> bool:
    """Whether a query is running pg_sleep() on the test database."""
    conn = connect()
    try:
        with conn.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s"
                " AND state = 'active' AND query LIKE %s",
                [connection.settings_dict["NAME"], "SELECT pg_sleep%"],
            )
            return bool(cursor.fetchone()[0])
    finally:
        conn.close()


class StuckRequestTests(RollbackLiveServerTestCase):
    drain_timeout = 1.0

    def start_hanging_request(self) -> tuple[threading.Thread, list[int]]:
        """A client whose request sits in pg_sleep(60) on the test's session."""
        answers: list[int] = []
        url = f"{self.live_server_url}/hang/"
        client = threading.Thread(target=lambda: answers.append(get(url).status_code))
        client.start()
        self.assertTrue(wait_for(sleeping_in_the_database))
        return client, answers

    def test_reset_cancels_a_stuck_request(self) -> None:
        """A request stuck in the database is cancelled at the reset, rolled back."""
        client, answers = self.start_hanging_request()
        try:
            with self.assertRaises(RequestStuck):
                self.reset_live_server()
        finally:
            client.join()
        self.assertEqual(answers, [500])
        self.assertEqual(Item.objects.count(), 0)
        self.assertEqual(post_item(self.live_server_url, "after").status_code, 201)

    def test_query_behind_a_stuck_request(self) -> None:
        """A test query waits the drain timeout at most; the request is cancelled."""
        client, answers = self.start_hanging_request()
        try:
            with self.assertRaises(RequestStuck):
                Item.objects.count()
        finally:
            client.join()
        self.assertEqual(answers, [500])
        self.assertFalse(connection.needs_rollback)
        self.assertEqual(Item.objects.count(), 0)


class StaticRollbackTests(SessionsSampled, StaticRollbackLiveServerTestCase):
    def test_static_files_served(self) -> None:
        """The static variant serves files from the finders."""
        response = get(f"{self.live_server_url}/static/testapp/hello.txt")
        self.assertEqual(response.status_code, 200)
        self.assertEqual(post_item(self.live_server_url, "static").status_code, 201)
        self.assertEqual(Item.objects.count(), 1)


class SchemathesisRollbackTests(SessionsSampled, RollbackLiveServerTestCase):
    def test_schema_suite_passes(self) -> None:
        """A django_safelive.schemathesis suite passes unchanged on the server."""
        api = safelive_schemathesis.from_dict(OPENAPI, headers=AUTH, max_examples=8)
        api.check_all(self)
        self.assertTrue(Item.objects.exists())
        self.assertEqual(_pg.sessions(), [])


class BrowserRollbackTests(SessionsSampled, StaticRollbackLiveServerTestCase):
    @classmethod
    def setUpClass(cls) -> None:
        problem = missing()
        if problem and not os.environ.get("CI"):
            raise unittest.SkipTest(problem)
        if not RUN_ONCE:
            raise unittest.SkipTest("a real browser runs once (SAFELIVE_TEST_ONCE=0)")
        super().setUpClass()

    def test_page_and_form_on_one_session(self) -> None:
        """Chromium loads a page whose images query, and posts a form: one session."""
        page = f"{self.live_server_url}/browser/"
        with tempfile.TemporaryDirectory(prefix="safelive-chromium-") as profile:
            driver = start_chromium(profile)
            try:
                driver.get(page)
                # Queried while the browser may still be fetching the images.
                Item.objects.create(name="by the test")
                self.assertTrue(
                    wait_for(
                        lambda: driver.execute_script(
                            "return document.readyState === 'complete' &&"
                            " Array.from(document.images).every("
                            "i => i.complete && i.naturalWidth > 0)"
                        )
                    )
                )
                driver.find_element("id", "name").send_keys("added in Chromium")
                driver.find_element("id", "add").click()
                self.assertTrue(
                    wait_for(
                        lambda: (
                            "added in Chromium"
                            in driver.execute_script(
                                "return document.getElementById('items').textContent"
                            )
                        )
                    )
                )
            finally:
                driver.quit()
        self.assertEqual(
            sorted(Item.objects.values_list("name", flat=True)),
            ["added in Chromium", "by the test"],
        )


class HypothesisRollbackTests(
    SessionsSampled, safelive_hypothesis.RollbackLiveServerTestCase
):
    examples = 0

    @classmethod
    def setUpTestData(cls) -> None:
        Item.objects.create(name="from setUpTestData")

    @settings(max_examples=30, deadline=None, database=None)
    @given(
        names=st.lists(
            st.text(min_size=1, max_size=20).filter(lambda s: "\x00" not in s),
            max_size=3,
        )
    )
    def test_examples_are_isolated(self, names: list[str]) -> None:
        """Each example sees setUpTestData's row only, never an earlier example's."""
        type(self).examples += 1
        self.assertEqual(
            list(Item.objects.values_list("name", flat=True)), ["from setUpTestData"]
        )
        for name in names:
            self.assertEqual(post_item(self.live_server_url, name).status_code, 201)
        self.assertEqual(Item.objects.count(), 1 + len(names))
        self.assertEqual(_pg.sessions(), [])

    @classmethod
    def tearDownClass(cls) -> None:
        super().tearDownClass()
        assert cls.examples >= 20, cls.examples


class StaticHypothesisRollbackTests(
    safelive_hypothesis.StaticRollbackLiveServerTestCase
):
    def test_static_files_served(self) -> None:
        """The Hypothesis static variant serves static files."""
        response = get(f"{self.live_server_url}/static/testapp/hello.txt")
        self.assertEqual(response.status_code, 200)


# -- the pytest fixture -----------------------------------------------------


def test_fixture_writes_visible_to_the_test(rollback_live_server: Any) -> None:
    """A request's write is seen by the test; the test's by requests."""
    assert Item.objects.count() == 0
    assert post_item(rollback_live_server.url, "over http").status_code == 201
    Item.objects.create(name="by the test")
    assert names(str(rollback_live_server)) == ["over http", "by the test"]
    assert Item.objects.count() == 2


def test_fixture_writes_are_rolled_back(rollback_live_server: Any) -> None:
    """Each test starts empty: the other tests' writes were rolled back."""
    assert Item.objects.count() == 0
    assert post_item(rollback_live_server + "", "again").status_code == 201


def test_fixture_failing_requests(rollback_live_server: Any) -> None:
    """A failing request leaves the test's transaction usable."""
    kept = post_item(rollback_live_server.url, "kept").json()["id"]
    for path, status in FAILING:
        with requests.Session() as client:
            response = client.post(
                rollback_live_server.url + path.format(pk=kept), headers=AUTH
            )
        assert response.status_code == status, path
        assert list(Item.objects.values_list("name", flat=True)) == ["kept"], path
    assert post_item(rollback_live_server.url, "after").status_code == 201
    assert Item.objects.count() == 2


def test_fixture_one_session(rollback_live_server: Any) -> None:
    """Concurrent clients are answered on the test's own session."""
    wait_alone()
    with Sampler(connection.settings_dict["NAME"]) as sampler:
        statuses = concurrently(f"{rollback_live_server.url}/items/", 8)
    assert statuses == [200] * 8
    assert sampler.peak == 1
    assert _pg.sessions() == []


def test_fixture_refuses_a_second_session(db: None) -> None:
    """A view's thread opening its own session fails the test with a clear error."""
    server = RollbackLiveServer("localhost", ["default"])
    try:
        response = get(f"{server.url}/spawn/?threads=1")
        assert response.status_code == 500
        with pytest.raises(RollbackUnsupported):
            server.reset()
    finally:
        server.stop()
    assert not connection.needs_rollback
    assert Item.objects.count() == 0


def test_fixture_server_on_a_given_port(db: None) -> None:
    """Served on the port the address gives; a port in use fails cleanly."""
    with socket.socket() as taken:
        taken.bind(("localhost", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError):
            RollbackLiveServer(f"localhost:{port}", ["default"])
        assert not connection.allow_thread_sharing
    server = RollbackLiveServer(f"localhost:{port}", ["default"])
    try:
        assert server.url == f"http://localhost:{port}"
        assert repr(server) == f"<RollbackLiveServer listening at {server.url}>"
        assert post_item(server.url, "on a given port").status_code == 201
    finally:
        server.stop()
    assert not connection.allow_thread_sharing
    assert type(connections["default"]).__name__ == "DatabaseWrapper"
    assert list(Item.objects.values_list("name", flat=True)) == ["on a given port"]


def test_fixture_one_server_at_a_time(rollback_live_server: Any) -> None:
    """A second server on the same connection is refused; the first serves on."""
    with pytest.raises(SafeLiveError, match="one at a time"):
        RollbackLiveServer("localhost", ["default"])
    assert post_item(rollback_live_server.url, "still served").status_code == 201
    assert Item.objects.count() == 1


# -- settings ---------------------------------------------------------------


def case_class(base: type, **attributes: object) -> type[RollbackLiveServerTestCase]:
    """A test case class on `base` with class `attributes`."""
    made = type("Asking", (base,), {**attributes, "test_x": lambda self: None})
    return cast("type[RollbackLiveServerTestCase]", made)


# A class attribute asking for what the rollback server cannot do: (attribute,
# value, the setting the error names).
REFUSED = [
    ("server_mode", "pool", "server_mode"),
    ("server_workers", 2, "server_workers"),
    ("max_sessions", 8, "max_sessions"),
]


@pytest.mark.parametrize(("attribute", "value", "named"), REFUSED)
def test_class_attribute_the_server_cannot_honour(
    attribute: str, value: object, named: str
) -> None:
    """server_mode pool, two workers, a budget of 8: refused at class set-up."""
    for base in (
        RollbackLiveServerTestCase,
        safelive_hypothesis.RollbackLiveServerTestCase,
    ):
        asking = case_class(base, **{attribute: value})
        with pytest.raises(ImproperlyConfigured, match=f"class attribute {named}"):
            asking.setUpClass()


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SAFELIVE_MODE", "pool"),
        ("SAFELIVE_WORKERS", "4"),
        ("SAFELIVE_MAX_SESSIONS", "8"),
    ],
)
def test_environment_variable_the_server_cannot_honour(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    """The same asked by an environment variable: refused, by the class and the
    fixture's server, naming the variable."""
    monkeypatch.setenv(variable, value)
    asking = case_class(RollbackLiveServerTestCase)
    with pytest.raises(ImproperlyConfigured, match=f"environment variable {variable}"):
        asking.setUpClass()
    with pytest.raises(ImproperlyConfigured, match=variable):
        RollbackServerThread("localhost", None, {})


def test_settings_what_the_server_can_do() -> None:
    """Values the rollback server meets are accepted; DRAIN_TIMEOUT and TRACE
    apply; the SAFELIVE settings dict's MODE, WORKERS and MAX_SESSIONS, for
    every class, do not apply to it."""
    honoured = case_class(
        RollbackLiveServerTestCase,
        server_mode="single",
        server_workers=1,
        max_sessions=1,
        drain_timeout=3,
        trace=True,
    )
    config = resolve_rollback(honoured)
    assert (config.mode, config.workers, config.max_sessions) == ("single", 1, 1)
    assert (config.drain_timeout, config.trace) == (3.0, True)
    everywhere = {"MODE": "pool", "WORKERS": 4, "MAX_SESSIONS": 8}
    with override_settings(SAFELIVE=everywhere):
        config = resolve_rollback(RollbackLiveServerTestCase)
    assert (config.mode, config.workers, config.max_sessions) == ("single", 1, 1)


def test_total_budget_leaving_no_session(monkeypatch: pytest.MonkeyPatch) -> None:
    """A total budget smaller than the xdist workers leaves none: refused; one
    session per worker is enough."""
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "4")
    monkeypatch.setenv("SAFELIVE_TOTAL_MAX_SESSIONS", "3")
    with pytest.raises(ImproperlyConfigured, match="TOTAL_MAX_SESSIONS to 4"):
        resolve_rollback(RollbackLiveServerTestCase)
    monkeypatch.setenv("SAFELIVE_TOTAL_MAX_SESSIONS", "4")
    assert resolve_rollback(RollbackLiveServerTestCase).max_sessions == 1
