"""Who holds a live server's database sessions: the holder of each, the role
and request of the thread that opens it, and how reports and
``application_name`` name them."""

from __future__ import annotations

import os
import re
import textwrap
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import django

if TYPE_CHECKING:
    from django_safelive._core.accounting import ServerAccount

TEST_THREAD = "test thread"
SERVER_WORKER = "server worker"
OTHER_THREAD = "other thread"

# Closed sessions kept for reports: enough to explain one test, bounded for a run.
HISTORY = 100
# Frames of an opening stack kept: the code that asked for the session and its callers.
TRACE_DEPTH = 8
# Frames inside these are how a session opens, not why: trimmed from the stack.
_MACHINERY = (
    os.path.dirname(django.__file__) + os.sep,
    os.path.dirname(os.path.dirname(__file__)) + os.sep,
)
_TAG = re.compile(r"safelive:(\d+)\.\d+:")
# A path segment that may be a secret (a password-reset or sign-in token, a
# UUID, a signed value): long, and mixing letters and digits.
_TOKEN_LIKE = re.compile(r"^(?=.*[0-9])(?=.*[A-Za-z])[^/]{16,}$")


@dataclass
class Holder:
    """One open database session and who opened it."""

    alias: str
    thread_name: str
    thread_ident: int
    role: str
    request: str | None
    opened_at: float = field(default_factory=time.monotonic)
    test: str | None = None
    stack: str | None = None
    """Where the session was opened, innermost last; only with TRACE on."""
    closed_at: float | None = None
    backend: str | None = None
    """How the database server knows the session: ``PostgreSQL pid 4242`` (see
    pg_stat_activity), ``MySQL processlist id 17``; None on SQLite."""
    pid: int | None = None
    """The PostgreSQL backend's pid, when the session is PostgreSQL's."""
    exiting: bool = False
    """Closed, and its backend not yet seen gone: PostgreSQL still counts it."""

    def describe(self, now: float | None = None) -> str:
        """A human-readable description of this holder, as of `now`: one line,
        followed by the opening stack when tracing recorded it."""
        now = time.monotonic() if now is None else now
        serving = f", opened while serving {self.request}" if self.request else ""
        if self.closed_at is None or self.closed_at > now:
            timing = f"open for {now - self.opened_at:.1f}s"
        else:
            timing = (
                f"opened {now - self.opened_at:.1f}s ago, closed after "
                f"{self.closed_at - self.opened_at:.1f}s"
            )
        if self.exiting:
            timing += ", its backend still exiting"
        backend = f", {self.backend}" if self.backend else ""
        line = f"{self.role} {self.thread_name!r}{serving}, {timing}{backend}"
        if self.stack:
            line += "\n    opened at:\n" + textwrap.indent(self.stack, "    ")
        return line.rstrip("\n")


class _ThreadInfo(threading.local):
    account: ServerAccount | None = None
    """The server whose sessions the thread opens (its workers')."""
    role: str | None = None
    request: str | None = None


thread_info = _ThreadInfo()


def bind_thread(account: ServerAccount, role: str) -> None:
    """Count the calling thread's sessions (a server worker's, say) against
    `account`, in `role`."""
    thread_info.account = account
    thread_info.role = role


def set_current_request(request: str | None) -> None:
    """Record the request the calling thread is serving, or None when done."""
    thread_info.request = request


def describe_request(method: str, path: str) -> str:
    """How reports name a request: its method and path, without the query
    string, and with path segments that may be tokens replaced."""
    segments = [
        "<redacted>" if _TOKEN_LIKE.match(segment) else segment
        for segment in path.split("/")
    ]
    return f"{method} {'/'.join(segments)}"


def current_request() -> str | None:
    """The request the calling thread is serving, if any."""
    return thread_info.request


def opening_stack() -> str:
    """The calling code's stack, without the Django and django-safelive frames
    that merely open the session."""
    frames = traceback.extract_stack()
    end = len(frames)
    while end > 0 and frames[end - 1].filename.startswith(_MACHINERY):
        end -= 1
    if end == 0:  # opened by Django itself (a flush, say): show its frames
        end = len(frames)
    return "".join(traceback.format_list(frames[max(0, end - TRACE_DEPTH) : end]))


def short_test_id(test_id: str) -> str:
    """``ShopTests.test_items`` for a unittest id, the node id without its file
    for pytest: what fits in application_name and still says which test."""
    if "::" in test_id:
        return test_id.split("::", 1)[1]
    return ".".join(test_id.rsplit(".", 2)[-2:])


_counter = iter(range(1, 1 << 62))


def new_tag() -> str:
    """A tag unique to one live server in this process, for application_name."""
    return f"safelive:{os.getpid()}.{next(_counter)}"


def split_tag(application_name: str) -> tuple[str, int] | None:
    """What precedes the tag in a tagged `application_name` (the application's
    own name and the test), and the pid of the process whose server tagged it;
    None for a session no django-safelive server opened."""
    found = _TAG.search(application_name)
    if found is None:
        return None
    return application_name[: found.start()].strip(), int(found.group(1))


class SessionWindow:
    """The sessions open at once on one alias while a block of code runs."""

    def __init__(self, alias: str, holders: list[Holder]) -> None:
        self.alias = alias
        self.peak = len(holders)
        self.peak_at = time.monotonic()
        self.at_peak = holders
        """The sessions open when the most were, oldest first."""
        self.opened: deque[Holder] = deque(maxlen=HISTORY)
        """Sessions opened during the block (the last HISTORY), open or closed."""

    def saw(self, holder: Holder, holders: list[Holder]) -> None:
        """`holder` just opened; `holders` are the sessions open now."""
        self.opened.append(holder)
        if len(holders) > self.peak:
            self.peak = len(holders)
            self.peak_at = time.monotonic()
            self.at_peak = holders
