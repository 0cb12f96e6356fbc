"""Starting the live servers' own threads, and knowing that they run.

A thread can die after ``start()`` returned and before it ran anything: on
Python 3.10 and 3.11 under a tracer (coverage installs one in every new
thread), ``sys.settrace()`` is not reentrant across threads (CPython
gh-98257), and a thread that starts while another installs a tracer raises
in its bootstrap. A pool that lost a worker that way would leave the requests
given to it unanswered; a server thread that did would leave Django waiting
for it forever.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from django_safelive._core.exceptions import ThreadDidNotStart

# How many times a thread is started while it dies before it runs; then that
# is an error. A failed start costs a fraction of a millisecond.
ATTEMPTS = 10
# How often a thread not yet running is checked for having died instead.
_CHECK_EVERY = 0.001


def ran(thread: threading.Thread, running: threading.Event) -> bool:
    """Wait until `thread`, started, has set `running` (True) or has died
    without setting it (False)."""
    while not running.wait(_CHECK_EVERY):
        if not thread.is_alive():
            return running.is_set()
    return True


def start_daemon(
    name: str, target: Callable[..., object], *args: Any
) -> threading.Thread:
    """A daemon thread named `name` running ``target(*args)``, returned once it
    runs; started again if it died before it did."""
    for _attempt in range(ATTEMPTS):
        running = threading.Event()
        thread = threading.Thread(
            target=_announce, args=(running, target, args), name=name, daemon=True
        )
        thread.start()
        if ran(thread, running):
            return thread
    raise ThreadDidNotStart(name=name, attempts=ATTEMPTS)


def _announce(
    running: threading.Event, target: Callable[..., object], args: tuple[Any, ...]
) -> None:
    running.set()
    target(*args)


class ReportsDeathBeforeRun(threading.Thread):
    """For Django's ``LiveServerThread`` subclasses: a server thread that died
    before it ran reports it as Django reports the server's own errors (in
    ``error``, with ``is_ready`` set), instead of being waited for forever."""

    is_ready: threading.Event
    error: Any  # Django stubs: ImproperlyConfigured | None; any error, in fact

    def start(self) -> None:
        running = threading.Event()
        run = self.run  # the subclass's, whichever class defines it

        def announced() -> None:
            running.set()
            try:
                run()
            finally:
                del self.run  # no cycle through this closure left

        self.run = announced  # type: ignore[method-assign]
        super().start()
        if not ran(self, running):
            self.error = ThreadDidNotStart(name=self.name, attempts=1)
            self.is_ready.set()
