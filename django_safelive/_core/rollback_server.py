"""The rollback live server: one worker serving each request on the test
thread's connections, in a savepoint of its own."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from django_safelive._core.config import Config
from django_safelive._core.exceptions import RequestStuck
from django_safelive._core.rollback_config import resolve_rollback, rollback_config
from django_safelive._core.server import (
    BoundedWSGIServer,
    SafeLiveServerThread,
    SafeRequestHandler,
)
from django_safelive._core.shared_transaction import SharedTransaction

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment


class _Answer:
    """A WSGI response body that ends the request's savepoints before its last
    chunk is sent: once the client has the whole answer, the request's writes
    are released or rolled back, and its ``on_commit()`` callbacks settled."""

    def __init__(self, body: Iterable[bytes], end: Callable[[], None]) -> None:
        self._body = body
        self._end = end

    def __iter__(self) -> Iterator[bytes]:
        held: list[bytes] = []
        for chunk in self._body:
            if held:
                yield held.pop()
            held.append(chunk)
        self._end()
        yield from held

    def close(self) -> None:
        close = getattr(self._body, "close", None)
        if close is not None:
            close()


class RollbackWSGIServer(BoundedWSGIServer):
    """A one-worker ``BoundedWSGIServer`` serving each request on the test
    thread's connections, in a savepoint of its own."""

    def __init__(
        self, *args: Any, transaction: SharedTransaction, **kwargs: Any
    ) -> None:
        self.transaction = transaction
        transaction.server = self
        super().__init__(*args, workers=1, **kwargs)

    def set_app(self, application: WSGIApplication | None) -> None:
        assert application is not None
        transaction = self.transaction

        def app(environ: WSGIEnvironment, start_response: StartResponse) -> Any:
            def start(status: str, headers: list[tuple[str, str]], *args: Any) -> Any:
                if status.startswith("5"):
                    transaction.failed()
                return start_response(status, headers, *args)

            transaction.begin()
            try:
                body = application(environ, start)
            except BaseException:
                transaction.end(failed=True)
                raise
            return _Answer(body, transaction.end)

        super().set_app(app)

    def finish_request(self, request: Any, client_address: Any) -> None:
        with self.transaction.serving():
            super().finish_request(request, client_address)


class RollbackServerThread(SafeLiveServerThread):
    """``SafeLiveServerThread`` serving from a ``RollbackWSGIServer`` that
    shares ``connections_override``, the test thread's connections."""

    server_class = RollbackWSGIServer  # type: ignore[assignment]
    httpd: RollbackWSGIServer

    def __init__(self, *args: Any, config: Config | None = None, **kwargs: Any) -> None:
        """``SafeLiveServerThread``'s arguments; `config` is made a rollback
        server's (see ``rollback_config``), resolved for the fixture if None."""
        super().__init__(
            *args,
            config=resolve_rollback() if config is None else rollback_config(config),
            **kwargs,
        )
        self.transaction = SharedTransaction(
            (self.connections_override or {}).values(), self.config.drain_timeout
        )
        self._terminated = False

    def start(self) -> None:
        """Share the connections, then serve. Started once the server's account
        is active, so the hooks are on each connection's class (``_core.hooks``)
        before sharing gives the shared connections a subclass of it."""
        self.transaction.install()
        super().start()

    def _create_server(
        self, connections_override: dict[str, Any] | None = None
    ) -> RollbackWSGIServer:
        return RollbackWSGIServer(
            (self.host, self.port),
            SafeRequestHandler,
            allow_reuse_address=False,
            connections_override=connections_override,
            transaction=self.transaction,
            account=self.account,
        )

    def reset(self) -> None:
        """Wait for the request in flight; one still running after the drain
        timeout has its query cancelled (it holds the test's own session)."""
        try:
            super().reset()
        except RequestStuck:
            self._cancel_stuck()
            raise

    def terminate(self) -> None:
        """Drain and stop the server (once), then give the connections back."""
        try:
            if not self._terminated and self.ident is not None:
                self._terminated = True
                super().terminate()
                if self.stuck is not None:
                    self._cancel_stuck()
        finally:
            self.transaction.uninstall()

    def _cancel_stuck(self) -> None:
        self.transaction.cancel()
        with contextlib.suppress(RequestStuck):
            self.httpd.wait_idle(self.config.drain_timeout, "its query was cancelled")
