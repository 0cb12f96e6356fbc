"""Django's ``LiveServerThread``, serving from a bounded pool of workers.

The pool is in ``pool``, keep-alive in ``keepalive`` and the self-call check in
``selfcalls``; the server's public names are defined or re-exported here.
"""

from __future__ import annotations

from typing import Any

from django.test.testcases import LiveServerThread

from django_safelive._core import threads
from django_safelive._core.accounting import ServerAccount
from django_safelive._core.config import Config, resolve
from django_safelive._core.exceptions import RequestStuck, WorkersDidNotExit
from django_safelive._core.keepalive import SafeRequestHandler
from django_safelive._core.pool import BoundedWSGIServer

__all__ = ["BoundedWSGIServer", "SafeLiveServerThread", "SafeRequestHandler"]


class SafeLiveServerThread(threads.ReportsDeathBeforeRun, LiveServerThread):
    """Django's ``LiveServerThread``, serving from a ``BoundedWSGIServer``."""

    server_class = BoundedWSGIServer  # type: ignore[assignment]
    httpd: BoundedWSGIServer  # type: ignore[assignment]

    def __init__(
        self,
        host: str,
        static_handler: Any,
        connections_override: dict[str, Any] | None = None,
        port: int = 0,
        *,
        config: Config | None = None,
    ) -> None:
        super().__init__(host, static_handler, connections_override, port)
        self.config = config if config is not None else resolve()
        self.account = ServerAccount(self.config.max_sessions, trace=self.config.trace)
        """This server's sessions and budget, counted while it is activated."""
        self.stuck: RequestStuck | None = None

    def _create_server(
        self, connections_override: dict[str, Any] | None = None
    ) -> BoundedWSGIServer:
        return self.server_class(
            (self.host, self.port),
            SafeRequestHandler,
            allow_reuse_address=False,
            connections_override=connections_override,
            workers=self.config.workers,
            account=self.account,
            session_per_request=self.config.session_per_request,
        )

    def reset(self) -> None:
        """Drain in-flight requests and close every worker's database connections.

        Nothing to do when the server failed to start (its error was raised
        where it started).
        """
        if hasattr(self, "httpd"):
            self.httpd.reset(self.config.drain_timeout)

    def join_workers(self, timeout: float, when: str) -> WorkersDidNotExit | None:
        """Wait up to `timeout` for the workers to exit (see ``BoundedWSGIServer``)."""
        return self.httpd.join_workers(timeout, when)

    def terminate(self) -> None:
        """Stop accepting, drain and join the workers, then end the thread.

        A request still running after the drain timeout, or a worker that has
        not exited by then, is recorded in ``self.stuck`` rather than raised,
        so the caller can end its database session before failing.
        """
        if self.is_ready.is_set() and hasattr(self, "httpd"):
            self.httpd.shutdown()
            self.httpd.server_close()
            self.stuck = self.httpd.stop_workers(self.config.drain_timeout)
        self.join()
