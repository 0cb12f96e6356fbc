"""A real browser, headless Chromium through Selenium, on the bounded server.

Needs Debian's ``chromium`` and ``chromium-driver`` (/usr/bin/chromium,
/usr/bin/chromedriver) and Selenium. Without them the test skips locally and
fails on CI (the ``CI`` variable set), saying what to install.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
import unittest
from typing import TYPE_CHECKING, Any, ClassVar

from django.db import connection

from django_safelive import StaticLiveServerTestCase
from django_safelive.channels import ChannelsLiveServerTestCase
from tests._sampler import Sampler
from tests._waiting import wait_for
from tests.testapp.models import Item

if TYPE_CHECKING:
    from selenium.webdriver.chrome.webdriver import WebDriver

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
CHROMIUM_ARGUMENTS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
WORKERS = 3
STATIC_ASSETS = (
    "browser.css",
    "browser.js",
    "browser-extra.js",
    "stripe.png",
    "red.png",
    "green.png",
    "blue.png",
    "icon.svg",
)


def missing() -> str | None:
    """What to install for this test, or None when everything is there."""
    needed = []
    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        needed.append(
            "Chromium and ChromeDriver (Debian/Ubuntu: "
            "apt-get install chromium chromium-driver)"
        )
    if importlib.util.find_spec("selenium") is None:
        needed.append("Selenium (pip install selenium)")
    if not needed:
        return None
    return "the browser test needs " + " and ".join(needed)


def start_chromium(profile: str) -> WebDriver:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (*CHROMIUM_ARGUMENTS, f"--user-data-dir={profile}"):
        options.add_argument(argument)
    return webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))


if TYPE_CHECKING:
    _Base = StaticLiveServerTestCase
else:
    _Base = object


class BrowserChecks(_Base):
    """The browser test, for a live server test case class."""

    problem: ClassVar[str | None]
    expected_items: ClassVar[list[str]] = ["added in Chromium"]

    @classmethod
    def setUpClass(cls) -> None:
        cls.problem = missing()
        if cls.problem and not os.environ.get("CI"):
            raise unittest.SkipTest(cls.problem)
        super().setUpClass()

    def script(self, driver: WebDriver, source: str) -> Any:
        return driver.execute_script(source)

    def test_page_assets_and_form_within_budget(self) -> None:
        """Chromium gets every asset and posts the form within the session budget."""
        if self.problem:
            self.fail(self.problem)
        connection.ensure_connection()
        with (
            tempfile.TemporaryDirectory(prefix="safelive-chromium-") as profile,
            Sampler(connection.settings_dict["NAME"]) as sampler,
        ):
            driver = start_chromium(profile)
            try:
                page = f"{self.live_server_url}/browser/"
                driver.get(page)
                self.assert_page_complete(driver)
                driver.find_element("id", "name").send_keys("added in Chromium")
                driver.find_element("id", "add").click()
                self.assertTrue(
                    wait_for(lambda: "added in Chromium" in self.item_list(driver)),
                    "the posted item never appeared on the page",
                )
                self.assert_page_complete(driver)
                # Reloads: the browser opens fresh parallel connections again.
                for _ in range(3):
                    driver.refresh()
                    self.assert_page_complete(driver)
                self.more_checks(driver)
            finally:
                driver.quit()
        self.assertEqual(
            list(Item.objects.order_by("pk").values_list("name", flat=True)),
            self.expected_items,
        )
        self.assertGreater(sampler.samples, 0)
        self.assertGreaterEqual(sampler.peak, 1)
        budget = self.safelive_config.max_sessions
        self.assertLessEqual(
            sampler.peak,
            budget,
            f"{sampler.peak} sessions on the test database, budget {budget}",
        )

    def more_checks(self, driver: WebDriver) -> None:
        """What a subclass checks in the browser, on the loaded page."""

    def item_list(self, driver: WebDriver) -> str:
        return str(
            self.script(driver, "return document.getElementById('items').textContent")
        )

    def assert_page_complete(self, driver: WebDriver) -> None:
        """Every asset arrived: images decoded, styles applied, scripts ran."""
        self.assertTrue(
            wait_for(
                lambda: self.script(
                    driver,
                    "return document.readyState === 'complete'"
                    " && document.documentElement.dataset.extraScript === 'ran'",
                )
            ),
            "the page or its scripts never finished loading",
        )
        images = self.script(
            driver,
            "return Array.from(document.images,"
            " i => [i.alt, i.complete, i.naturalWidth])",
        )
        self.assertEqual(len(images), 8)
        for alt, complete, width in images:
            self.assertTrue(complete and width > 0, f"image {alt!r} did not load")
        status = self.script(
            driver,
            "const s = document.getElementById('status');"
            " return [s.textContent, getComputedStyle(s).color]",
        )
        self.assertEqual(status, ["script ran", "rgb(0, 128, 0)"])
        self.assertEqual(
            self.script(driver, "return document.documentElement.dataset.script"),
            "ran",
        )
        # The stylesheet's background image is not an <img>: ask the browser.
        fetched = self.script(
            driver,
            "return performance.getEntriesByType('resource')"
            ".map(e => [e.name.split('/').pop(), e.responseStatus])",
        )
        statuses = dict(fetched)
        for asset in STATIC_ASSETS:
            self.assertEqual(statuses.get(asset), 200, f"{asset}: {fetched}")


class BrowserTests(BrowserChecks, StaticLiveServerTestCase):
    server_mode = "pool"
    server_workers = WORKERS
    # The test thread's session and one per worker, nothing to spare.
    max_sessions = WORKERS + 1


class ASGIBrowserTests(BrowserChecks, ChannelsLiveServerTestCase):
    server_workers = WORKERS
    # The test thread's, one per worker and the WebSocket worker's.
    max_sessions = WORKERS + 2
    expected_items = ["added in Chromium", "from JS"]

    def more_checks(self, driver: WebDriver) -> None:
        """The page's WebSocket reaches a Channels consumer that writes."""
        reply = driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            f"const socket = new WebSocket('{self.live_server_ws_url}/ws/items/');"
            "socket.onopen = () => socket.send(JSON.stringify({name: 'from JS'}));"
            "socket.onmessage = (event) => { socket.close(); done(event.data); };"
            "socket.onerror = () => done('error');"
        )
        self.assertEqual(json.loads(reply)["count"], 2)
