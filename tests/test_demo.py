"""``python -m django_safelive demo``: Django's server over the limit, ours within."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
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
