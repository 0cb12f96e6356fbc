"""The configuration of a rollback live server: one worker on the test
thread's session, with DRAIN_TIMEOUT and TRACE resolved as for any server."""

from __future__ import annotations

import dataclasses

from django.core.exceptions import ImproperlyConfigured

from django_safelive._core import config, sources
from django_safelive._core.config import Config

# What a rollback server can do, for each setting a class attribute or an
# environment variable may set: (what it must be, why).
_FIXED: dict[str, tuple[object, str]] = {
    "MODE": ("single", "it serves one request at a time"),
    "WORKERS": (1, "it has one worker, on the test thread's session"),
    "MAX_SESSIONS": (1, "it uses the test thread's session and no other"),
}


def rollback_config(base: Config) -> Config:
    """`base` for a rollback server: one worker, and no session beyond the
    test thread's on each alias (a second one could not see the test's data)."""
    return dataclasses.replace(
        base, mode="single", workers=1, max_sessions=1, session_per_request=False
    )


def resolve_rollback(owner: object | None = None) -> Config:
    """The configuration of a rollback server for `owner` (a test case class,
    or None for the fixture).

    ``DRAIN_TIMEOUT`` and ``TRACE`` apply as for any server. A class attribute
    or an environment variable asking for more than the rollback server can do
    (pool mode, more than one worker, a budget other than 1 session) is an
    error: it would otherwise be ignored. ``settings.SAFELIVE`` sets every
    class's defaults, and its ``MODE``, ``WORKERS`` and ``MAX_SESSIONS`` do
    not apply to the rollback classes.
    """
    name = getattr(owner, "__qualname__", "the rollback_live_server fixture")
    for key, (allowed, why) in _FIXED.items():
        _refuse_other_than(allowed, key, owner, name, why)
    _refuse_no_session_left(name)
    # SESSION_PER_REQUEST is validated, and met whatever it says: the server
    # has no session of its own to close.
    drain_timeout, trace, _ = config.resolve_options(owner)
    return Config(
        max_sessions=1,
        mode="single",
        workers=1,
        drain_timeout=drain_timeout,
        trace=trace,
    )


def _asked(key: str, owner: object | None) -> tuple[object, str] | None:
    """A class attribute's or an environment variable's value for `key`,
    validated, and its source; the SAFELIVE settings dict, which applies to
    every class, is not asked."""
    found = sources.lookup(key, owner)
    if found is None or found[1] == "settings":
        return None
    value, source = found
    if key == "MODE":
        return sources.parse_mode(value, source), source
    return sources.positive_int(key, value, source), source


def _refuse_other_than(
    allowed: object, key: str, owner: object | None, name: str, why: str
) -> None:
    """Raise if `owner`'s class or this run asks for `key` other than `allowed`."""
    asked = _asked(key, owner)
    if asked is None or asked[0] == allowed:
        return
    value, source = asked
    where = sources.where(key, source)
    scope = "on this class" if source.startswith("class") else "for this run"
    raise ImproperlyConfigured(
        f"{where} asks for {value!r}, but {name} runs a rollback live "
        f"server, which {why}: {key} can only be {allowed!r} there. "
        f"Remove {where} (or set it to {allowed!r}) {scope}, or use "
        "django_safelive.LiveServerTestCase, whose server has sessions "
        "of its own."
    )


def _refuse_no_session_left(name: str) -> None:
    """Raise if the total budget, split across the xdist workers, leaves this
    process no session for the test thread."""
    total = config.total_budget()
    processes = config.xdist_workers()
    if total is not None and total // processes < 1:
        raise ImproperlyConfigured(
            f"The django-safelive total budget of {total} database session(s) per "
            f"alias, split across {processes} pytest-xdist worker(s), leaves none "
            f"for {name}'s test thread. Raise TOTAL_MAX_SESSIONS to "
            f"{processes} or more, or run fewer xdist workers (-n)."
        )
