"""``python -m django_safelive watch``: its pure functions, then the command for real.

The end-to-end tests run the CLI in a subprocess against the real server, with a
probe script that opens a known number of sessions under its own
application_name and prints how many it sees in pg_stat_activity itself.
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from django_safelive._tools.watch.report import breakdown, render_report, sparkline
from django_safelive._tools.watch.sampling import Row, Sample, Timeline
from django_safelive._tools.watch.target import APPLICATION_NAME, target_from_url

ROOT = Path(__file__).resolve().parent.parent
HOST = os.environ.get("PGHOST", "127.0.0.1")
PORT = os.environ.get("PGPORT", "5432")
USER = os.environ.get("PGUSER", "postgres")
URL = f"postgresql://{USER}@{HOST}:{PORT}/"
DSN = f"host={HOST} port={PORT} user={USER} dbname=postgres"
TIMEOUT = 60

# Opens 5 sessions named argv[1], prints how many pg_stat_activity shows, holds
# them argv[2] seconds, closes them and exits with status argv[3].
PROBE = """
import sys, time
try:
    import psycopg as driver
except ImportError:
    import psycopg2 as driver
dsn, name, hold, status = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
sessions = [driver.connect(dsn + " application_name=" + name) for _ in range(5)]
cursor = sessions[0].cursor()
cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
               [name])
print("SEEN", cursor.fetchone()[0], flush=True)
cursor.close()
time.sleep(hold)
for session in sessions:
    session.close()
sys.exit(int(status))
"""


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    # pytest-django exports the suite's own settings; each test picks its source.
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "DJANGO_SETTINGS_MODULE", "DOCTOR_VARIANT")
    }
    return {**env, **(extra or {})}


def cli(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m django_safelive ARGS`` with warnings as errors."""
    return subprocess.run(
        [sys.executable, "-X", "dev", "-W", "error", "-m", "django_safelive", *args],
        cwd=ROOT,
        env=_env(env),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


def probe_command(name: str, hold: float = 1.0, status: int = 0) -> list[str]:
    """The command line of the probe script."""
    return [sys.executable, "-c", PROBE, DSN, name, str(hold), str(status)]


def table(report: str, title: str) -> dict[str, int]:
    """A report table whose heading starts with `title`: first column -> last."""
    lines = report.split(f"\n{title}", 1)[1].split("\n\n", 1)[0].splitlines()[2:]
    rows = [re.split(r"\s{2,}", line.strip()) for line in lines]
    return {row[0]: int(row[-1]) for row in rows if row[-1].isdigit()}


def assert_clean(done: subprocess.CompletedProcess[str]) -> None:
    """No warning (ResourceWarning included) and no traceback from watch itself."""
    assert "Warning" not in done.stderr, done.stderr
    assert "Traceback" not in done.stderr, done.stderr


# -- pure functions ---------------------------------------------------------------


def test_sparkline_scales_from_min_to_max() -> None:
    """Each step from the minimum to the maximum gets its own block."""
    assert sparkline([3, 4, 5, 6, 7, 8, 9, 10]) == "▁▂▃▄▅▆▇█"


def test_sparkline_downsamples_and_keeps_a_short_peak() -> None:
    """1000 values fit in 60 columns, and a one-sample peak still shows."""
    values = [0] * 1000
    values[537] = 9
    line = sparkline(values, 60)
    assert len(line) == 60
    assert line.count("█") == 1
    assert set(line) == {"▁", "█"}


def test_sparkline_of_flat_and_empty_series() -> None:
    """A flat series is a flat line; nothing gives an empty string."""
    assert sparkline([4, 4, 4]) == "▁▁▁"
    assert sparkline([]) == ""


def _samples() -> list[Sample]:
    return [
        Sample(0.0, (Row("app", "web", "idle", 2), Row("app", "web", "active", 1))),
        Sample(0.1, (Row("app", "web", "idle", 2), Row("test_x", "pytest", "idle", 5))),
        Sample(0.2, (Row("app", "web", "active", 3),)),
    ]


def test_breakdown_by_one_field_adds_up_within_a_sample() -> None:
    """By application_name: a sample's rows are summed, then the peak is kept."""
    assert breakdown(_samples(), ["application_name"]) == [
        (("pytest",), 5),
        (("web",), 3),
    ]


def test_breakdown_by_every_field_keeps_each_rows_peak() -> None:
    """By database, name and state: each row's own highest count."""
    assert breakdown(_samples()) == [
        (("test_x", "pytest", "idle"), 5),
        (("app", "web", "active"), 3),
        (("app", "web", "idle"), 2),
    ]


def test_breakdown_of_one_sample_is_its_counts() -> None:
    """At one moment (the peak), the counts of that sample, by state."""
    assert breakdown(_samples()[1:2], ["state"]) == [(("idle",), 7)]


def test_render_report() -> None:
    """The report shows the peak, when it happened, the tables and the timeline."""
    timeline = Timeline(max_connections=100, interval=0.1, samples=_samples())
    timeline.duration = 0.25
    report = render_report(timeline, target="db:5432", command=["pytest"], status=0)
    assert "Peak: 7 session(s) at 0.10s (7% of max_connections 100)" in report
    assert table(report, "At the peak") == {"test_x": 5, "app": 2}
    assert table(report, "Peak by application_name") == {"pytest": 5, "web": 3}
    assert table(report, "Peak by datname") == {"test_x": 5, "app": 3}
    assert "min 3 ▁█▁ max 7" in report


def test_render_report_without_samples() -> None:
    """A command faster than the first sample is reported as such."""
    timeline = Timeline(max_connections=100, interval=0.1)
    report = render_report(timeline, target="db", command=["true"], status=0)
    assert "No sample was taken" in report


def test_url_is_parsed_and_its_password_masked() -> None:
    """User, password, host, port and query come from the URL; the database is
    always ``postgres``, and the URL shown hides the password."""
    target = target_from_url(
        "postgres://ann%40corp:p%2Fss@db.example:6543/shop?sslmode=require", "test"
    )
    assert target.params["user"] == "ann@corp"
    assert target.params["password"] == "p/ss"
    assert (target.params["host"], target.params["port"]) == ("db.example", 6543)
    assert target.params["dbname"] == "postgres"
    assert target.params["sslmode"] == "require"
    assert target.params["application_name"] == APPLICATION_NAME
    assert target.shown == "postgresql://ann%40corp:***@db.example:6543/"
    assert target.address == "db.example:6543"


# -- the command, end to end ------------------------------------------------------


@dataclass
class ProbeRun:
    name: str
    done: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def probe_run() -> ProbeRun:
    """One watched run of the probe: 5 sessions for ~1 s, then exit status 7."""
    name = f"watch-probe-{uuid.uuid4().hex[:8]}"
    done = cli(
        "watch", "--interval", "0.02", "--database-url", URL,
        "--", *probe_command(name, hold=1.0, status=7),
    )  # fmt: skip
    return ProbeRun(name, done)


def test_peak_of_the_probe_is_five(probe_run: ProbeRun) -> None:
    """The report's peak for the probe's application_name is 5, as it saw itself."""
    report = probe_run.done.stderr
    assert probe_run.done.stdout == "SEEN 5\n", report
    assert table(report, "Peak by application_name")[probe_run.name] == 5
    at_peak = [
        line for line in report.split("\nAt the peak")[1].split("\n\n")[0].splitlines()
        if probe_run.name in line
    ]  # fmt: skip
    assert sum(int(line.split()[-1]) for line in at_peak) == 5
    assert_clean(probe_run.done)


def test_command_exit_status_is_passed_through(probe_run: ProbeRun) -> None:
    """The probe exits 7, so watch exits 7, and says so in the report."""
    assert probe_run.done.returncode == 7, probe_run.done.stderr
    assert "exited with status 7" in probe_run.done.stderr


def test_report_goes_to_stderr_and_output_is_untouched(probe_run: ProbeRun) -> None:
    """The command's stdout is passed through alone; the report is on stderr."""
    assert probe_run.done.stdout == "SEEN 5\n"
    assert "Peak:" in probe_run.done.stderr
    assert "max_connections" in probe_run.done.stderr
    assert re.search(r"min \d+ [▁▂▃▄▅▆▇█]+ max \d+", probe_run.done.stderr)


@pytest.mark.parametrize(("status", "expected"), [(0, 3), (7, 7)])
def test_fail_above(status: int, expected: int) -> None:
    """A peak over --fail-above fails: 3 if the command passed, else its status."""
    name = f"watch-probe-{uuid.uuid4().hex[:8]}"
    done = cli(
        "watch", "--interval", "0.02", "--database-url", URL, "--fail-above", "3",
        "--", *probe_command(name, hold=0.3, status=status),
    )  # fmt: skip
    assert done.returncode == expected, done.stderr
    assert re.search(
        r"the peak of \d+ session\(s\) exceeded --fail-above 3", done.stderr
    )
    assert_clean(done)


def test_peak_within_fail_above_passes() -> None:
    """A peak at or under --fail-above leaves the command's status alone."""
    name = f"watch-probe-{uuid.uuid4().hex[:8]}"
    done = cli(
        "watch", "--interval", "0.02", "--database-url", URL, "--fail-above", "100000",
        "--", *probe_command(name, hold=0.3),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "exceeded" not in done.stderr


def test_plot_writes_a_png(tmp_path: Path) -> None:
    """--plot draws the timeline to a PNG file."""
    import matplotlib  # noqa: F401  # the [plot] extra: installed for the tests

    path = tmp_path / "sessions.png"
    done = cli(
        "watch", "--database-url", URL, "--plot", str(path),
        "--", sys.executable, "-c", "import time; time.sleep(0.3)",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(data) > 1000
    assert f"Plot written to {path}" in done.stderr
    assert_clean(done)


def test_plot_without_matplotlib_fails_before_the_command(tmp_path: Path) -> None:
    """Without matplotlib, --plot says what to install and runs nothing."""
    path = tmp_path / "sessions.png"
    # None in sys.modules makes `import matplotlib` fail as if it were missing.
    script = (
        "import sys; sys.modules['matplotlib'] = None\n"
        "from django_safelive.__main__ import main\n"
        "sys.exit(main(sys.argv[1:]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, "watch", "--database-url", URL,
         "--plot", str(path), "--", sys.executable, "-c", "print('RAN')"],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=TIMEOUT,
    )  # fmt: skip
    assert done.returncode == 2
    assert "pip install 'django-safelive[plot]'" in done.stderr
    assert "RAN" not in done.stdout
    assert not path.exists()


RUN_MARKER = ["--", sys.executable, "-c", "print('RAN')"]


@pytest.mark.parametrize(
    ("url", "status", "expected"),
    [
        (URL, 0, "Peak:"),
        ("postgresql://postgres@127.0.0.1:1/", 2, "cannot connect to PostgreSQL"),
    ],
    ids=["reachable", "unreachable"],
)
def test_psycopg2_when_psycopg_3_is_missing(
    url: str, status: int, expected: str
) -> None:
    """Without psycopg 3, watch samples (and reports errors) through psycopg2."""
    import psycopg2  # noqa: F401  # installed beside psycopg 3 for this test

    # None in sys.modules makes `import psycopg` fail as if it were missing.
    script = (
        "import sys; sys.modules['psycopg'] = None\n"
        "from django_safelive.__main__ import main\n"
        "sys.exit(main(sys.argv[1:]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, "watch", "--database-url", url, *RUN_MARKER],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=TIMEOUT,
    )  # fmt: skip
    assert done.returncode == status, done.stderr
    assert expected in done.stderr
    assert_clean(done)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "no command to run: put it after --"),
        (["--database-url", URL, "--"], "no command to run: put it after --"),
        (["--database-url", URL, "echo", "RAN"], "put the command to run after --"),
        (["--interval", "-1", *RUN_MARKER], "must be a positive number of seconds"),
        (["--interval", "0", *RUN_MARKER], "must be a positive number of seconds"),
        (
            ["--database-url", "postgresql://postgres@127.0.0.1:1/x", *RUN_MARKER],
            "cannot connect to PostgreSQL at 127.0.0.1:1",
        ),
        (
            ["--database-url", "mysql://root:hunter2@127.0.0.1/x", *RUN_MARKER],
            "give a postgres:// or postgresql:// URL",
        ),
        (
            # urlsplit's error quotes the whole user:password@host part.
            ["--database-url", "postgresql://u:hunter2@ho\u2100st/", *RUN_MARKER],
            "bad database URL from --database-url: netloc 'u:***@ho",
        ),
        (RUN_MARKER, "no database to watch: pass --database-url"),
    ],
    ids=[
        "nothing", "nothing-after-dashes", "no-dashes", "negative-interval",
        "zero-interval", "unreachable", "mysql", "unparsable", "no-database",
    ],
)  # fmt: skip
def test_bad_input_exits_2(args: list[str], message: str) -> None:
    """Bad input: exit status 2, a one-line message, and the command never runs."""
    done = cli("watch", *args)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert done.stderr.rstrip("\n").splitlines()[-1].count("error:") == 1
    assert "RAN" not in done.stdout
    assert "hunter2" not in done.stderr
    assert "Traceback" not in done.stderr


def test_database_url_from_the_environment() -> None:
    """Without --database-url, DATABASE_URL names the server."""
    done = cli(
        "watch", *RUN_MARKER, env={"DATABASE_URL": "postgresql://u:pw@127.0.0.1:1/"}
    )
    assert done.returncode == 2
    assert "127.0.0.1:1 (postgresql://u:***@127.0.0.1:1/, from DATABASE_URL)" in (
        done.stderr
    )
    assert "pw@" not in done.stderr


def test_database_from_django_settings() -> None:
    """Without a URL, the default alias of DJANGO_SETTINGS_MODULE is watched."""
    done = cli("watch", *RUN_MARKER, env={"DJANGO_SETTINGS_MODULE": "tests.settings"})
    assert done.returncode == 0, done.stderr
    assert done.stdout == "RAN\n"
    assert f"PostgreSQL {HOST}:{PORT} (postgresql://{USER}@{HOST}:{PORT}/)" in (
        done.stderr
    )
    assert_clean(done)


def test_settings_database_must_be_postgresql() -> None:
    """A default alias on SQLite is refused, saying to pass --database-url."""
    done = cli(
        "watch", *RUN_MARKER,
        env={"DJANGO_SETTINGS_MODULE": "tests.doctor_settings",
             "DOCTOR_VARIANT": "sqlite"},
    )  # fmt: skip
    assert done.returncode == 2
    assert "'django.db.backends.sqlite3' (sqlite), not PostgreSQL" in done.stderr
    assert "RAN" not in done.stdout


def test_password_is_never_printed() -> None:
    """A URL with a password is echoed with the password masked."""
    url = f"postgresql://{USER}:s3cret@{HOST}:{PORT}/postgres"
    done = cli("watch", "--database-url", url, *RUN_MARKER)
    assert done.returncode == 0, done.stderr
    assert f"postgresql://{USER}:***@{HOST}:{PORT}/" in done.stderr
    assert "s3cret" not in done.stderr


def test_own_session_is_not_counted() -> None:
    """The watcher's session exists, but no figure of the report includes it."""
    script = f"""
import time
try:
    import psycopg as driver
except ImportError:
    import psycopg2 as driver
session = driver.connect({DSN!r})
cursor = session.cursor()
cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
               [{APPLICATION_NAME!r}])
print("WATCHERS", cursor.fetchone()[0], flush=True)
session.close()
time.sleep(0.5)
"""
    done = cli("watch", "--database-url", URL, "--", sys.executable, "-c", script)
    assert done.returncode == 0, done.stderr
    watchers = int(done.stdout.split()[-1])
    assert watchers >= 1
    assert APPLICATION_NAME not in table(done.stderr, "Peak by application_name")
    assert APPLICATION_NAME not in done.stderr.split("\nPeak:", 1)[1]


def test_command_not_found() -> None:
    """A command that does not exist exits 127, as in a shell."""
    done = cli("watch", "--database-url", URL, "--", "no-such-command-safelive")
    assert done.returncode == 127
    assert "cannot run 'no-such-command-safelive'" in done.stderr
    assert_clean(done)


def _watch_until_ready() -> subprocess.Popen[str]:
    # Started with Ctrl-C handled as in a terminal: a pytest-xdist worker
    # ignores SIGINT, and an ignored signal stays ignored across exec.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        process = subprocess.Popen(
            [sys.executable, "-X", "dev", "-W", "error", "-m", "django_safelive",
             "watch", "--database-url", URL, "--", sys.executable, "-c",
             "import time; print('ready', flush=True); time.sleep(60)"],
            cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, start_new_session=True,
        )  # fmt: skip
    finally:
        signal.signal(signal.SIGINT, previous)
    assert process.stdout is not None
    readable, _, _ = select.select([process.stdout], [], [], TIMEOUT)
    if not readable:
        process.kill()
        process.communicate(timeout=TIMEOUT)
        pytest.fail("the watched command never started")
    assert process.stdout.readline() == "ready\n"
    return process


def test_ctrl_c_still_reports() -> None:
    """Ctrl-C (SIGINT to the process group) ends the command; watch still reports."""
    process = _watch_until_ready()
    os.killpg(process.pid, signal.SIGINT)
    _, stderr = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 128 + signal.SIGINT, stderr
    assert "was interrupted (Ctrl-C) and exited with status 130" in stderr
    assert "Peak:" in stderr
    assert "Warning" not in stderr


def test_sigterm_is_passed_to_the_command() -> None:
    """SIGTERM to watch alone reaches the command; watch reports and exits 143."""
    process = _watch_until_ready()
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert "exited with status 143" in stderr
    assert "Peak:" in stderr
    assert "Warning" not in stderr


def test_help_lists_the_subcommands() -> None:
    """``python -m django_safelive --help`` lists watch and doctor."""
    done = cli("--help")
    assert done.returncode == 0
    assert re.search(r"^\s+watch\s+run a command", done.stdout, re.MULTILINE)
    assert re.search(r"^\s+doctor\s+check", done.stdout, re.MULTILINE)


def test_reports_a_leaking_stock_test_with_its_true_peak() -> None:
    """Around a stock live-server test that pins a session per keep-alive client,
    watch reports the peak an independent pg_stat_activity sampler saw."""
    from tests._sampler import Sampler

    datname = f"test_safelive_watchleak_{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "SCENARIO_IMPL": "stock",
        "SAFELIVE_TEST_DB_NAME": datname,
        "PGHOST": HOST,
        "PGPORT": PORT,
    }
    env.pop("PYTEST_XDIST_WORKER", None)
    command = [
        sys.executable, "-m", "django_safelive", "watch", "--database-url", URL,
        "--interval", "0.01", "--",
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
        "tests/scenarios/keepalive.py",
    ]  # fmt: skip
    with Sampler(datname, HOST, int(PORT)) as sampler:
        done = subprocess.run(
            command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
        )
    by_datname = done.stderr.split("Peak by datname:", 1)[1]
    found = re.search(rf"^\s+{datname}\s+(\d+)$", by_datname, re.MULTILINE)
    assert found, done.stderr
    assert sampler.peak > 8, sampler.peak  # Django's server: one per client
    assert abs(int(found.group(1)) - sampler.peak) <= 1, (found.group(1), sampler.peak)
