"""The threads a bounded ASGI server runs database work on.

Under ASGI, Django runs a request's sync code and async ORM calls on a thread
of the request's own (asgiref's ``ThreadSensitiveContext``). A ``Worker`` is
an executor of one thread that such code runs on instead, and ``on_worker``
the context that sends a block's thread-sensitive calls to it (see
``asgi_server``).
"""

from __future__ import annotations

import inspect
import queue
from collections.abc import Callable
from concurrent.futures import Executor, Future
from functools import partial
from typing import Any

from asgiref.sync import SyncToAsync, ThreadSensitiveContext
from django.db import connections

from django_safelive._core import threads
from django_safelive._core.holders import set_current_request

__all__ = ["Worker", "on_worker"]


class _ExecutorContext(ThreadSensitiveContext):
    """``ThreadSensitiveContext(executor=...)`` for asgiref before 3.13 (which
    needs Python 3.11): the block's thread-sensitive calls run on `executor`,
    and Django's own ``ThreadSensitiveContext`` inside it changes nothing.

    The difference from 3.13's: a task created in the block that outlives it
    gets a new thread (asgiref's default) instead of an error, so a session
    it opens is not one of the workers' (it still counts against the budget).
    """

    def __init__(self, *, executor: Executor) -> None:
        super().__init__()
        self._worker = executor

    async def __aenter__(self) -> _ExecutorContext:
        self.token = SyncToAsync.thread_sensitive_context.set(self)
        SyncToAsync.context_to_thread_executor[self] = self._worker
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        SyncToAsync.context_to_thread_executor.pop(self, None)
        if self.token is not None:
            SyncToAsync.thread_sensitive_context.reset(self.token)
            self.token = None


# Feature detection: asgiref 3.13 takes the executor itself.
_takes_executor = "executor" in inspect.signature(ThreadSensitiveContext).parameters
on_worker: Callable[..., Any] = (
    ThreadSensitiveContext if _takes_executor else _ExecutorContext
)
"""``on_worker(executor=worker)``: an async context manager running the
block's thread-sensitive calls on `worker`."""


class Worker(Executor):
    """One thread running one call at a time: the executor a request's, or a
    WebSocket connection's, thread-sensitive code runs on.

    Its database sessions count against the server's account, and live until
    the reset (see ``worker_sessions``).
    """

    def __init__(self, name: str, setup: Callable[[], None]) -> None:
        self._calls: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]] | None]
        self._calls = queue.SimpleQueue()
        self.request: str | None = None
        """The request being served, for the holders' descriptions."""
        self.connections = 0
        """WebSocket connections running on this worker."""
        self.thread = threads.start_daemon(name, self._run, setup)

    def submit(
        self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> Future[Any]:
        future: Future[Any] = Future()
        self._calls.put((future, partial(fn, *args, **kwargs)))
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Close the worker's sessions and end its thread once the calls
        already submitted have run (with `cancel_futures`, once the one
        running has: the others are cancelled)."""
        while cancel_futures:
            try:
                item = self._calls.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                item[0].cancel()
        self._calls.put(None)
        if wait:
            self.thread.join()

    def _run(self, setup: Callable[[], None]) -> None:
        setup()
        try:
            while True:
                item = self._calls.get()
                if item is None:
                    return
                future, call = item
                if not future.set_running_or_notify_cancel():
                    continue
                set_current_request(self.request)
                try:
                    result = call()
                except BaseException as error:  # as concurrent.futures does
                    future.set_exception(error)
                else:
                    future.set_result(result)
        finally:
            connections.close_all()
