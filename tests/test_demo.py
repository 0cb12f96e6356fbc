"""``python -m django_safelive demo``: Django's server over the limit, ours within."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

from django_safelive.__main__ import main
from django_safelive._tools import cluster
from tests._sampler import PGHOST, PGPORT, connect
from tests.test_root_causes import BUDGET

ROOT = Path(__file__).resolve().parent.parent
STOCK = "hypothesis.extra.django.LiveServerTestCase"
OURS = "django_safelive.hypothesis.LiveServerTestCase"


def demo(*args: str, tmpdir: str | None = None) -> tuple[int, str]:
    """Run the demo command in a subprocess; its exit status and output."""
    env = {**os.environ, **({"TMPDIR": tmpdir} if tmpdir else {})}
    # The demo is a run of its own, not one of our pytest-xdist workers.
    env.pop("PYTEST_XDIST_WORKER_COUNT", None)
    done = subprocess.run(
        [sys.executable, "-m", "django_safelive", "demo", "--examples", "10", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return done.returncode, done.stdout + done.stderr


def row(output: str, label: str) -> list[str]:
    """The table row of one live server, split into its cells."""
    found = re.search(rf"^{re.escape(label)}\s+(.*)$", output, re.MULTILINE)
    assert found, output
    return found.group(1).split()


def test_throwaway_cluster(tmp_path: Path) -> None:
    """On a small throwaway server stock fails refused, ours passes; none is left."""
    # A temporary directory of the demo's own, which the server's user can
    # enter, so that other tests' clusters running meanwhile are not counted.
    tmpdir = tempfile.mkdtemp(prefix="safelive-demo-")
    os.chmod(tmpdir, 0o755)
    plot = tmp_path / "sessions.png"
    try:
        status, output = demo("--plot", str(plot), tmpdir=tmpdir)
        left = os.listdir(tmpdir)
    finally:
        shutil.rmtree(tmpdir)
    assert status == 0, output
    result, peak, refused, *_ = row(output, STOCK)
    assert (result, int(peak) > BUDGET, int(refused) > 0) == ("FAILED", True, True)
    result, peak, refused, errors, requests, *_ = row(output, OURS)
    assert (result, refused, errors) == ("passed", "0", "0"), output
    assert 1 <= int(peak) <= BUDGET
    assert int(requests) >= 10
    assert plot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert left == [], left


def demo_databases() -> set[str]:
    """The demo's test databases on the local server right now."""
    conn = connect()
    try:
        with conn.cursor() as cursor:
            cursor.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE %s",
                ["test\\_safelive\\_demo\\_%"],
            )
            return {name for (name,) in cursor.fetchall()}
    finally:
        conn.close()


def test_existing_server_is_left_as_it_was() -> None:
    """With --database-url the demo leaves no test database of its own behind."""
    before = demo_databases()
    url = f"postgresql://postgres@{PGHOST}:{PGPORT}/x"
    status, output = demo("--database-url", url)
    assert status == 0, output
    assert row(output, OURS)[0] == "passed", output
    assert demo_databases() - before == set(), output


def test_no_postgresql_falls_back_to_sqlite(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without server binaries the demo says so and runs on SQLite."""
    monkeypatch.setattr(cluster, "find_bindir", lambda: None)
    monkeypatch.chdir(tmp_path)
    status = main(["demo", "--examples", "5"])
    output = capsys.readouterr().out
    assert "No PostgreSQL to run on: no PostgreSQL server binaries" in output
    assert "on SQLite" in output
    assert status == 0, output
    assert row(output, OURS)[0] == "passed"


def test_bad_arguments() -> None:
    """A too small --max-connections is refused with what to change."""
    status, output = demo("--max-connections", "2")
    assert status == 2
    assert "--max-connections must be at least 5" in output


# Runs one live-server test of tests.settings under Django's test runner, then
# prints whether it passed and which of the tools' modules are loaded.
DJANGO_TEST_RUN = """
import sys, unittest, urllib.request
import django
django.setup()
from django.test.runner import DiscoverRunner
from django_safelive import LiveServerTestCase
from tests.testapp.views import TOKEN

class Items(LiveServerTestCase):
    def test_items(self):
        request = urllib.request.Request(
            self.live_server_url + "/items/",
            headers={"Authorization": "Bearer " + TOKEN},
        )
        with urllib.request.urlopen(request) as response:
            self.assertEqual(response.status, 200)

runner = DiscoverRunner(verbosity=0, interactive=False)
runner.setup_test_environment()
databases = runner.setup_databases()
try:
    result = runner.run_suite(unittest.defaultTestLoader.loadTestsFromTestCase(Items))
finally:
    runner.teardown_databases(databases)
    runner.teardown_test_environment()
print("PASSED" if result.wasSuccessful() else "FAILED")
print(sorted(name for name in sys.modules if name.startswith("django_safelive._tools")))
"""


def loaded_tools(*args: str, **env: str) -> list[str]:
    """Run ``python -W error ARGS`` without pytest's environment; its stdout lines."""
    base = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PYTEST_", "DJANGO_SETTINGS_MODULE"))
    }
    done = subprocess.run(
        [sys.executable, "-X", "dev", "-W", "error", *args],
        cwd=ROOT, env={**base, **env}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_importing_the_package_loads_no_tool() -> None:
    """``import django_safelive`` imports none of the command-line tools' modules."""
    script = (
        "import sys, django_safelive\n"
        "print([m for m in sys.modules if m.startswith('django_safelive._tools')])"
    )
    assert loaded_tools("-c", script) == ["[]"]


def test_a_django_test_run_loads_no_tool() -> None:
    """A live-server test run on tests.settings loads none of the tools' modules."""
    lines = loaded_tools(
        "-c",
        DJANGO_TEST_RUN,
        DJANGO_SETTINGS_MODULE="tests.settings",
        SAFELIVE_TEST_DB="postgres",
        SAFELIVE_TEST_DB_NAME=f"test_safelive_notools_{uuid.uuid4().hex[:8]}",
    )
    assert lines == ["PASSED", "[]"]


def test_the_demo_app_accepts_what_its_schema_allows() -> None:
    """A name of whitespace alone is schema-valid, so the demo app takes it
    (its form stripped it and refused "\\r" as missing: a run drew it)."""
    check = (
        "import django; django.setup()\n"
        "from django_safelive._tools.demo.views import ItemForm\n"
        "for name in ['\\r', ' ', ' a ']:\n"
        "    form = ItemForm({'name': name, 'price': 0})\n"
        "    assert form.is_valid(), (name, form.errors)\n"
        "    assert form.cleaned_data['name'] == name\n"
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "django_safelive._tools.demo.settings",
        "SAFELIVE_DEMO_DATABASE": "sqlite:///:memory:",
    }
    done = subprocess.run(
        [sys.executable, "-c", check], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
