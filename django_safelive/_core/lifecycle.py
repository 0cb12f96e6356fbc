"""What happens to a live server's sessions between tests and when it stops.

Shared by the unittest test cases and the pytest fixture, so both behave alike.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db import connections
from django.test.testcases import LiveServerThread

from django_safelive._core import sessions
from django_safelive._core.accounting import ServerAccount
from django_safelive._core.asgi_server import SafeASGILiveServerThread
from django_safelive._core.exceptions import (
    RequestStuck,
    SafeLiveError,
    SessionsLeftBehind,
    WorkersDidNotExit,
)
from django_safelive._core.holders import TEST_THREAD
from django_safelive._core.hooks import registry
from django_safelive._core.psycopg_pools import close_pools
from django_safelive._core.server import SafeLiveServerThread

# The bounded servers: each has reset(), stuck and join_workers().
_BOUNDED = (SafeLiveServerThread, SafeASGILiveServerThread)

# How long a closed session may linger in pg_stat_activity while its backend exits.
EXIT_GRACE = 5.0


def end_server_sessions(
    aliases: Iterable[str], account: ServerAccount, *, terminate_now: bool
) -> list[SessionsLeftBehind]:
    """Make sure no session of `account`'s server is left on PostgreSQL,
    ending any that are (only ever sessions carrying its tag)."""
    account.settle_exits()
    errors = []
    for alias in aliases:
        if connections[alias].vendor != "postgresql":
            continue
        left = sessions.server_sessions(alias, account.tag)
        holders = account.holders(alias)
        # A session our accounting sees open (a thread a view started holds it)
        # will not go by itself: only wait for the others, closed and exiting.
        held = {pid for pid, _ in left} & {
            holder.pid for holder in holders if holder.role != TEST_THREAD
        }
        if len(left) > len(held) and not terminate_now:
            left = sessions.wait_gone(alias, account.tag, EXIT_GRACE, keep=held)
        if left:
            sessions.terminate(alias, [pid for pid, _ in left])
            sessions.wait_gone(alias, account.tag, EXIT_GRACE)
            errors.append(
                SessionsLeftBehind(
                    alias=alias,
                    sessions=[description for _, description in left],
                    terminated=True,
                    holders=holders,
                )
            )
    return errors


def reset(
    thread: LiveServerThread, aliases: Iterable[str], account: ServerAccount
) -> None:
    """Drain the server, close its workers' sessions and confirm they are gone.

    A worker's closed session counts against the budget until PostgreSQL has
    let it go (see ``ServerAccount.close``), which nothing here waits for; so
    when the accounting shows every server session closed, nothing is asked
    of PostgreSQL; else one query per alias finds what is left (a thread a
    view started, say).
    """
    aliases = list(aliases)
    left_behind: list[SessionsLeftBehind] = []
    if isinstance(thread, _BOUNDED):
        try:
            thread.reset()
        except RequestStuck as error:
            stuck = with_holders(error, aliases, account)
            # A flush would wait on the stuck request's locks: end it first.
            end_server_sessions(aliases, account, terminate_now=True)
            raise stuck from None
        if account.may_have_left_sessions():
            left_behind = end_server_sessions(aliases, account, terminate_now=False)
    raise_first(*left_behind, *account.take_violations())


def finish(
    thread: LiveServerThread, aliases: Iterable[str], account: ServerAccount
) -> None:
    """After the server thread terminated: leave no session behind, then report."""
    aliases = list(aliases)
    stuck = thread.stuck if isinstance(thread, _BOUNDED) else None
    if stuck is not None:
        stuck = with_holders(stuck, aliases, account)
    left_behind = end_server_sessions(aliases, account, terminate_now=stuck is not None)
    not_exited = None
    if stuck is not None and isinstance(thread, _BOUNDED):
        # Their sessions are gone, so the stuck views fail and the workers exit;
        # a worker that still does not (a view waiting on no database) is named.
        not_exited = thread.join_workers(
            EXIT_GRACE, "its workers' sessions were ended and they were told to exit"
        )
    if all(other is account for other in registry.accounts):
        close_pools(aliases)  # else another running server may use them still
    raise_first(stuck, not_exited, *left_behind, *account.take_violations())


def with_holders(
    error: RequestStuck, aliases: Iterable[str], account: ServerAccount
) -> RequestStuck:
    """`error`, listing the server's sessions open on `aliases` now, while it
    is stuck. Workers that did not exit are reported as they are."""
    if isinstance(error, WorkersDidNotExit):
        return error
    aliases = set(aliases)
    return RequestStuck(
        timeout=error.timeout,
        requests=error.requests,
        when=error.when,
        holders=[holder for holder in account.holders() if holder.alias in aliases],
    )


def raise_first(*errors: SafeLiveError | None) -> None:
    """Raise the first error, mentioning the others so that none is lost."""
    found = [error for error in errors if error is not None]
    if not found:
        return
    first, *others = found
    for other in others:
        first.also(other)
    raise first
