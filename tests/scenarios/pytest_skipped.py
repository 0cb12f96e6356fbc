"""Tests that a session-scoped fixture skips, beside one that runs: a skipped
test sets up no database and no server of its own (run with --setup-show).

Run with --safelive-live-server when SCENARIO_IMPL=safelive (the parent test
passes it through PYTEST_ADDOPTS).
"""

from __future__ import annotations

from typing import Any

import pytest
import requests

from tests.testapp.views import TOKEN


@pytest.fixture(scope="session")
def browser() -> None:
    """A browser this machine does not have, as a Selenium suite's driver
    fixture skips for one it cannot start."""
    pytest.skip("no such browser here")


def test_switched_needs_a_browser(live_server: Any, browser: None) -> None:
    """Skipped before it starts."""


def test_ours_needs_a_browser(safe_live_server: Any, browser: None) -> None:
    """Skipped before it starts."""


def test_needs_only_the_server(live_server: Any) -> None:
    """Runs, on a transactional database."""
    response = requests.get(
        f"{live_server}/items/",
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=30,
    )
    assert response.status_code == 200
