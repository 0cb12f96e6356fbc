"""``python -m django_safelive doctor``, run in a subprocess on real settings.

tests/doctor_settings.py is tests.settings with CONN_MAX_AGE = 600;
DOCTOR_VARIANT picks a variation of it (see that module).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import django
import pytest

from tests._sampler import connect

ROOT = Path(__file__).resolve().parent.parent
HOST = os.environ.get("PGHOST", "127.0.0.1")
PORT = int(os.environ.get("PGPORT", "5432"))
TIMEOUT = 60


def doctor(
    *args: str, env: dict[str, str] | None = None, settings: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the doctor on tests.doctor_settings, with none of our SAFELIVE_* set."""
    base = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("SAFELIVE_", "PYTEST_XDIST_"))
        or key.startswith("SAFELIVE_TEST_")
    }
    base.pop("DOCTOR_VARIANT", None)
    base.pop("DJANGO_SETTINGS_MODULE", None)
    # doctor_settings builds on tests.settings' PostgreSQL database.
    base["SAFELIVE_TEST_DB"] = "postgres"
    if settings is not None:
        base["DJANGO_SETTINGS_MODULE"] = settings
    return subprocess.run(
        [sys.executable, "-X", "dev", "-W", "error", "-m", "django_safelive",
         "doctor", *args],
        cwd=ROOT, env={**base, **(env or {})}, capture_output=True, text=True,
        timeout=TIMEOUT,
    )  # fmt: skip


def run(*args: str, **env: str) -> tuple[int, str]:
    """Exit status, and stdout + stderr with whitespace normalised (lines wrap)."""
    done = doctor(*args, env=env, settings="tests.doctor_settings")
    assert "Warning" not in done.stderr, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, " ".join((done.stdout + done.stderr).split())


def show(setting: str) -> int:
    """The server's setting, asked independently of the doctor."""
    conn = connect(HOST, PORT)
    try:
        with conn.cursor() as cursor:
            cursor.execute(f"SHOW {setting}")
            row = cursor.fetchone()
    finally:
        conn.close()
    return int(row[0])


def test_shows_the_servers_limits() -> None:
    """max_connections and superuser_reserved_connections are the server's own."""
    _, output = run()
    found = re.search(r"max_connections (\d+) superuser_reserved (\d+)", output)
    assert found, output
    assert int(found.group(1)) == show("max_connections")
    assert int(found.group(2)) == show("superuser_reserved_connections")
    assert re.search(r"client sessions now \d+ \(besides ours\)", output)


def test_conn_max_age_warning_and_exit_status() -> None:
    """CONN_MAX_AGE = 600 is warned about, naming what to set; the exit status is 1."""
    status, output = run()
    assert status == 1, output
    assert "CONN_MAX_AGE 600" in output
    assert (
        "database 'default': CONN_MAX_AGE = 600: with Django's threaded live server"
        in output
    )
    assert "keep one session each until the reset whatever CONN_MAX_AGE says" in (
        output
    )


def test_shows_the_default_budget() -> None:
    """The budget django-safelive will use is 8 sessions by default."""
    _, output = run()
    assert "budget 8 sessions per alias per live server" in output
    assert "total budget unset" in output
    assert "live server mode pool, 4 worker(s), drain timeout 10s" in output


def test_clean_settings_exit_0() -> None:
    """With CONN_MAX_AGE = 0 there is nothing to warn about: exit status 0."""
    status, output = run(DOCTOR_VARIANT="clean")
    assert status == 0, output
    assert "No problems found." in output
    assert "warning" not in output


def test_bad_safelive_setting_is_a_problem() -> None:
    """An invalid SAFELIVE value shows the ImproperlyConfigured message; exit 1."""
    status, output = run(DOCTOR_VARIANT="clean", SAFELIVE_MAX_SESSIONS="abc")
    assert status == 1, output
    assert (
        "SAFELIVE settings: the environment variable SAFELIVE_MAX_SESSIONS must "
        "be a whole number, got 'abc'." in output
    )
    assert "max_connections" in output  # the databases are still reported


@pytest.mark.parametrize(
    ("args", "env"),
    [(("--xdist", "16"), {}), ((), {"PYTEST_XDIST_WORKER_COUNT": "16"})],
    ids=["option", "environment"],
)
def test_xdist_run_that_could_exhaust_the_server(
    args: tuple[str, ...], env: dict[str, str]
) -> None:
    """16 workers x the default 8 could need 128 sessions: more than are free."""
    status, output = run(*args, **env)
    assert status == 1
    found = re.search(
        r"pytest -n 16 could need up to 128 sessions but only (\d+) are free on "
        r"\S+; set SAFELIVE\['TOTAL_MAX_SESSIONS'\] = (\d+) ",
        output,
    )
    assert found, output
    free = show("max_connections") - show("superuser_reserved_connections")
    assert int(found.group(1)) <= free
    assert found.group(2) == found.group(1)


def test_total_budget_is_split_across_xdist_workers() -> None:
    """A total of 32 over 16 workers is 2 each: 32 sessions fit, no warning."""
    status, output = run(
        "--xdist", "16", DOCTOR_VARIANT="clean", SAFELIVE_TOTAL_MAX_SESSIONS="32"
    )
    assert status == 0, output
    assert "budget 2 sessions per alias per live server" in output
    assert "total budget 32 per alias for the whole run" in output
    assert "xdist workers 16 (--xdist)" in output


@pytest.mark.skipif(django.VERSION < (5, 1), reason="Django's pool is 5.1+")
def test_pool_larger_than_the_budget() -> None:
    """A psycopg pool whose max_size exceeds the budget is warned about."""
    import psycopg_pool  # noqa: F401  # psycopg[pool], in the test environment

    status, output = run(DOCTOR_VARIANT="pool")
    assert status == 1, output
    assert "pool min_size 1, max_size 20" in output
    assert (
        "OPTIONS['pool'] max_size 20 is above the django-safelive budget of 8" in output
    )
    assert "set OPTIONS['pool']['max_size'] to 8 or less" in output


def test_unreachable_alias_is_reported_and_the_rest_checked() -> None:
    """An alias whose server is down is a problem; the other alias is still shown."""
    status, output = run(DOCTOR_VARIANT="unreachable")
    assert status == 1
    assert "database 'down': cannot query 127.0.0.1:1:" in output
    assert f"max_connections {show('max_connections')}" in output


def test_configured_database_that_does_not_exist() -> None:
    """Where DATABASES' NAME does not exist yet (CI creates only the test
    database), the server is still queried, through its maintenance database."""
    status, output = run(SAFELIVE_TEST_PG_NAME="safelive_no_such_database")
    assert "unreachable" not in output, output
    assert f"max_connections {show('max_connections')}" in output


def test_non_postgresql_alias() -> None:
    """A SQLite alias is shown without server limits, and is no problem."""
    status, output = run(DOCTOR_VARIANT="sqlite")
    assert status == 0, output
    assert "django.db.backends.sqlite3 (vendor sqlite)" in output
    assert "not PostgreSQL: no session limits to check" in output


def test_settings_module_is_required() -> None:
    """Without DJANGO_SETTINGS_MODULE the doctor says how to set it; exit 2."""
    done = doctor()
    assert done.returncode == 2
    assert "DJANGO_SETTINGS_MODULE is not set" in done.stderr


def test_help_documents_the_exit_status() -> None:
    """--help explains exit statuses 0, 1 and 2."""
    done = doctor("--help")
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    assert "Exit status: 0 when there is nothing to warn about; 1 when a warning" in (
        text
    )
