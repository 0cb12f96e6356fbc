"""The pytest plugin: the safe_live_server fixture and the live_server switch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from django_safelive._pytest_server import SafeASGILiveServer, SafeLiveServer
from tests import _pg
from tests._clients import AUTH, concurrently, get
from tests._waiting import wait_for
from tests.test_root_causes import BUDGET, assert_ours_within, run, stock_baseline


def test_interface_matches_live_server(safe_live_server: SafeLiveServer) -> None:
    """.url, str() and + behave like pytest-django's live_server."""
    assert safe_live_server.url.startswith("http://localhost:")
    assert str(safe_live_server) == safe_live_server.url
    assert safe_live_server + "/items/" == f"{safe_live_server.url}/items/"
    assert get(safe_live_server + "/items/").json() == []


def test_server_writes_are_visible(safe_live_server: SafeLiveServer) -> None:
    """The fixture gives a transactional database the server and test share."""
    from tests.testapp.models import Item

    with requests.Session() as client:
        response = client.post(
            safe_live_server + "/items/", json={"name": "from server"}, headers=AUTH
        )
    assert response.status_code == 201
    assert list(Item.objects.values_list("name", flat=True)) == ["from server"]


def test_previous_test_was_flushed(safe_live_server: SafeLiveServer) -> None:
    """The row the test above wrote through the server is gone: flushed."""
    from tests.testapp.models import Item

    assert not Item.objects.exists()


def test_bounded_under_concurrency(safe_live_server: SafeLiveServer) -> None:
    """Twelve concurrent clients get answers from at most four worker sessions."""
    codes = concurrently(safe_live_server + "/slow/?seconds=0.2", 12)
    assert codes == [200] * 12
    assert 1 <= len(_pg.worker_sessions()) <= 4


def test_reset_between_examples(safe_live_server: SafeLiveServer) -> None:
    """safe_live_server.reset() inside a Hypothesis test closes worker sessions."""
    gone: list[bool] = []

    @settings(max_examples=10)
    @given(st.integers(min_value=1, max_value=3))
    def example(count: int) -> None:
        before = _pg.worker_pids()
        safe_live_server.reset()
        # Closed: each backend leaves pg_stat_activity as it exits.
        gone.append(wait_for(lambda: not before & _pg.worker_pids()))
        for _ in range(count):
            get(safe_live_server + "/items/")

    example()
    assert gone
    assert all(gone)


INERT = """
import sys

def test_untouched(request):
    assert "django" not in sys.modules
    assert [name for name in request.fixturenames if "safe" in name] == []
"""


def test_installed_but_unused_changes_nothing(tmp_path: Path) -> None:
    """In a pytest run without Django settings the installed plugin imports no
    Django, adds no fixture and fails nothing."""
    (tmp_path / "test_inert.py").write_text(INERT)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DJANGO_SETTINGS_MODULE", "PYTEST_ADDOPTS")
        and not key.startswith("PYTEST_XDIST")
    }
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-W", "error"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    plugins = next(line for line in done.stdout.splitlines() if "plugins:" in line)
    assert "django-safelive" in plugins  # installed, and loaded
    assert "1 passed" in done.stdout


def test_fixtures_of_a_test_without_a_live_server(
    request: pytest.FixtureRequest,
) -> None:
    """A test that uses no live server does not get the plugin's helper fixture."""
    assert "_safe_live_server_helper" not in request.fixturenames


def test_switch_where_the_configured_database_does_not_exist() -> None:
    """With the switch and a DATABASES NAME that does not exist on the server (as
    in CI), the live server suite passes: the start-up checks ask the
    maintenance database, before pytest-django has created the test database."""
    safe = run(
        "pytest_live_server",
        "safelive",
        env={"SAFELIVE_TEST_PG_NAME": "safelive_no_such_database"},
    )
    assert safe.returncode == 0, safe.output
    assert "server=SafeLiveServer" in safe.output
    assert 1 <= safe.peak <= BUDGET


@stock_baseline
def test_pytest_djangos_live_server_goes_over_the_budget() -> None:
    """Without the switch, pytest-django's live_server exceeds the budget."""
    stock = run("pytest_live_server", "stock")
    assert "server=LiveServer" in stock.output
    assert stock.peak > BUDGET, stock.output


def test_switch_bounds_pytest_djangos_live_server() -> None:
    """--safelive-live-server turns pytest-django's live_server into ours."""
    safe = assert_ours_within("pytest_live_server")
    assert "server=SafeLiveServer" in safe.output
    assert safe.value("a_class") == 1


def test_a_test_skipped_by_a_session_fixture_gets_no_database() -> None:
    """A test that a session-scoped fixture skips (a browser driver) sets up no
    transactional database and counts as no server's test, switched or not:
    the helper comes after the session's fixtures."""
    safe = run("pytest_skipped", "safelive", args=("--setup-show",))
    assert safe.returncode == 0, safe.output
    assert "1 passed, 2 skipped" in safe.output
    assert safe.output.count("SETUP    F transactional_db") == 1, safe.output
    assert "1 test(s) used a django-safelive server" in safe.output
    assert 1 <= safe.peak <= BUDGET, safe.output


def test_asgi_live_server_serves_http_and_websockets(
    asgi_live_server: SafeASGILiveServer,
) -> None:
    """asgi_live_server serves the ASGI application's async views and WebSocket
    consumers on a transactional database the test shares; reset() closes the
    workers' sessions."""
    import json

    from websockets.sync.client import connect

    from tests.testapp.models import Item

    assert asgi_live_server.ws_url == asgi_live_server.url.replace("http", "ws", 1)
    with connect(f"{asgi_live_server.ws_url}/ws/items/", open_timeout=30) as socket:
        socket.send(json.dumps({"name": "from a websocket"}))
        assert json.loads(socket.recv(timeout=30))["count"] == 1
    assert get(asgi_live_server + "/asgi/items/").json()["count"] == 1
    assert list(Item.objects.values_list("name", flat=True)) == ["from a websocket"]
    assert _pg.worker_sessions()
    asgi_live_server.reset()
    assert wait_for(lambda: _pg.worker_sessions() == [])
