"""A throwaway PostgreSQL cluster with a small ``max_connections``.

Used by ``python -m django_safelive demo`` and by the connection-limit tests:
``initdb`` and ``pg_ctl`` in a temporary directory, listening on loopback only,
removed again by :meth:`Cluster.stop`. The server binaries are found on PATH,
through ``pg_config``, or in Debian's and Homebrew's usual places. PostgreSQL
refuses to run as root, so under root it runs as the ``postgres`` user.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

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


class Cluster:
    """initdb + pg_ctl in a temporary directory; as the postgres user when root."""

    host = "127.0.0.1"

    def __init__(self, max_connections: int) -> None:
        bindir = find_bindir()
        if bindir is None:
            raise ClusterError(
                "no PostgreSQL server binaries (initdb, pg_ctl) found on PATH, "
                "through pg_config, or in the usual places: install them "
                "(Debian: apt-get install postgresql; macOS: brew install "
                "postgresql), or use an existing server"
            )
        self._user: str | None = None
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                raise ClusterError(
                    "PostgreSQL refuses to run as root and there is no 'postgres' "
                    "user to run it as: run as another user, or create one"
                ) from None
            self._user = "postgres"
        self.max_connections = max_connections
        self.port = _free_port()
        self._bindir = bindir
        self._dir = Path(tempfile.mkdtemp(prefix="safelive-pg-"))
        self._data = self._dir / "data"
        self.running = False

    @property
    def url(self) -> str:
        """A database URL for the cluster's ``postgres`` database."""
        return f"postgresql://postgres@{self.host}:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        command = [str(self._bindir / args[0]), *args[1:]]
        if self._user is not None:
            command = ["runuser", "-u", self._user, "--", *command]
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

    def __enter__(self) -> Cluster:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
