"""Throwaway database servers: PostgreSQL (and MariaDB, for the test run).

``Cluster`` is used by ``python -m django_safelive demo``, by the
connection-limit tests and by the test run on a machine where no PostgreSQL
answers: ``initdb`` and ``pg_ctl`` in a temporary directory, listening on
loopback only, removed again by :meth:`Cluster.stop`. The server binaries are
found on PATH, through ``pg_config``, or in Debian's and Homebrew's usual
places. PostgreSQL refuses to run as root, so under root it runs as the
``postgres`` user. ``MariaDBServer`` does the same with ``mariadb-install-db``
and ``mariadbd``.

This module needs nothing but the standard library, so that the noxfile can
load it before any virtual environment exists.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import TypeVar

_USUAL_PLACES = [
    *sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True),  # Debian, Ubuntu
    *sorted(glob.glob("/usr/pgsql-*/bin"), reverse=True),  # RHEL, Fedora
    "/opt/homebrew/bin",
    *sorted(glob.glob("/opt/homebrew/opt/postgresql@*/bin"), reverse=True),
    "/usr/local/bin",
    *sorted(glob.glob("/usr/local/opt/postgresql@*/bin"), reverse=True),
    "/Applications/Postgres.app/Contents/Versions/latest/bin",
]


class ClusterError(RuntimeError):
    """The throwaway cluster cannot be started here; the message says why."""


def find_bindir() -> Path | None:
    """The directory holding ``initdb`` and ``pg_ctl``, or None."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(on_path).parent
    try:
        found = subprocess.run(
            ["pg_config", "--bindir"], capture_output=True, text=True, check=True
        ).stdout.strip()
        if (Path(found) / "initdb").exists():
            return Path(found)
    except (OSError, subprocess.CalledProcessError):
        pass
    for candidate in _USUAL_PLACES:
        if (Path(candidate) / "initdb").exists() and (
            Path(candidate) / "pg_ctl"
        ).exists():
            return Path(candidate)
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def listening(host: str, port: int, timeout: float = 1.0) -> bool:
    """Whether something accepts TCP connections at `host`:`port`."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _run_as(user: str | None, command: list[str]) -> list[str]:
    return command if user is None else ["runuser", "-u", user, "--", *command]


def _unprivileged(user: str, server: str) -> str | None:
    """`user` when running as root (database servers refuse root), else None."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(user)
    except KeyError:
        raise ClusterError(
            f"{server} refuses to run as root and there is no {user!r} user to "
            "run it as: run as another user, or create one"
        ) from None
    return user


_Server = TypeVar("_Server", bound="_Throwaway")


class _Throwaway:
    """A server started for a while and removed again: ``with`` starts it."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self: _Server) -> _Server:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


class Cluster(_Throwaway):
    """initdb + pg_ctl in a temporary directory; as the postgres user when root."""

    host = "127.0.0.1"

    def __init__(self, max_connections: int, port: int | None = None) -> None:
        bindir = find_bindir()
        if bindir is None:
            raise ClusterError(
                "no PostgreSQL server binaries (initdb, pg_ctl) found on PATH, "
                "through pg_config, or in the usual places: install them "
                "(Debian: apt-get install postgresql; macOS: brew install "
                "postgresql), or use an existing server"
            )
        self._user = _unprivileged("postgres", "PostgreSQL")
        self.max_connections = max_connections
        self.port = port or _free_port()
        self._bindir = bindir
        self._dir = Path(tempfile.mkdtemp(prefix="safelive-pg-"))
        self._data = self._dir / "data"
        self.running = False

    @property
    def url(self) -> str:
        """A database URL for the cluster's ``postgres`` database."""
        return f"postgresql://postgres@{self.host}:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        command = _run_as(self._user, [str(self._bindir / args[0]), *args[1:]])
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode:
            raise ClusterError(
                f"{args[0]} failed ({done.returncode}): "
                f"{(done.stderr or done.stdout).strip()[-500:]}"
            )

    def start(self) -> None:
        """Create and start the cluster; remove it again if that fails."""
        try:
            if self._user is not None:
                shutil.chown(self._dir, self._user, self._user)
            self._run(
                "initdb", "-D", str(self._data), "-U", "postgres", "--auth=trust", "-N"
            )
            options = (
                f"-p {self.port} -c listen_addresses={self.host} "
                f"-c unix_socket_directories={self._dir} "
                f"-c max_connections={self.max_connections} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            )
            self._run(
                "pg_ctl", "-D", str(self._data), "-o", options,
                "-l", str(self._dir / "log"), "-w", "start",
            )  # fmt: skip
        except BaseException:
            shutil.rmtree(self._dir, ignore_errors=True)
            raise
        self.running = True

    def stop(self) -> None:
        """Stop the cluster and remove its directory."""
        try:
            if self.running:
                self._run(
                    "pg_ctl", "-D", str(self._data), "-m", "immediate", "-w", "stop"
                )
        finally:
            self.running = False
            shutil.rmtree(self._dir, ignore_errors=True)


_MARIADB_PLACES = [
    "/usr/sbin",  # Debian, Ubuntu
    "/usr/libexec",  # RHEL, Fedora
    "/opt/homebrew/bin",
    "/opt/homebrew/opt/mariadb/bin",
    "/usr/local/bin",
    "/usr/local/opt/mariadb/bin",
]


def find_mariadb() -> tuple[Path, Path] | None:
    """``(mariadbd, mariadb-install-db)``, found on PATH or in the usual places."""
    places = [os.path.dirname(p) for p in (shutil.which("mariadbd"),) if p]
    for place in [*places, *_MARIADB_PLACES]:
        server = Path(place) / "mariadbd"
        if server.exists():
            install = shutil.which("mariadb-install-db") or str(
                Path(place) / "mariadb-install-db"
            )
            if Path(install).exists():
                return server, Path(install)
    return None


class MariaDBServer(_Throwaway):
    """A throwaway MariaDB server in a temporary directory, on loopback only:
    ``root`` with an empty password, and a ``test`` database."""

    host = "127.0.0.1"

    def __init__(self, port: int | None = None) -> None:
        found = find_mariadb()
        if found is None:
            raise ClusterError(
                "no MariaDB server binaries (mariadbd, mariadb-install-db) found "
                "on PATH or in the usual places: install them (Debian: apt-get "
                "install mariadb-server; macOS: brew install mariadb)"
            )
        self._server, self._install = found
        self._user = _unprivileged("mysql", "MariaDB")
        self.port = port or _free_port()
        self._dir = Path(tempfile.mkdtemp(prefix="safelive-mariadb-"))
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 60.0) -> None:
        """Create the data directory and start the server; clean up on failure."""
        as_user = [f"--user={self._user}"] if self._user else []
        data = self._dir / "data"
        try:
            if self._user is not None:
                shutil.chown(self._dir, self._user, self._user)
            done = subprocess.run(
                [str(self._install), "--no-defaults", f"--datadir={data}",
                 "--auth-root-authentication-method=normal", *as_user],
                capture_output=True, text=True,
            )  # fmt: skip
            if done.returncode:
                raise ClusterError(
                    f"mariadb-install-db failed ({done.returncode}): "
                    f"{(done.stderr or done.stdout).strip()[-500:]}"
                )
            self._process = subprocess.Popen(
                [str(self._server), "--no-defaults", f"--datadir={data}",
                 f"--port={self.port}", f"--bind-address={self.host}",
                 f"--socket={self._dir / 'socket'}",
                 f"--pid-file={self._dir / 'pid'}",
                 f"--log-error={self._dir / 'log'}",
                 "--innodb-buffer-pool-size=32M", "--innodb-flush-log-at-trx-commit=0",
                 *as_user],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            deadline = time.monotonic() + timeout
            while not listening(self.host, self.port, timeout=0.2):
                if not self.running or time.monotonic() > deadline:
                    log = self._dir / "log"
                    tail = log.read_text()[-500:] if log.exists() else ""
                    raise ClusterError(f"mariadbd did not start: {tail.strip()}")
                time.sleep(0.1)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the server and remove its directory."""
        try:
            if self._process is not None and self._process.poll() is None:
                self._process.terminate()
                try:
                    self._process.wait(30)
                except subprocess.TimeoutExpired:
                    self._process.kill()
                    self._process.wait()
        finally:
            self._process = None
            shutil.rmtree(self._dir, ignore_errors=True)
