"""A drop-in for Channels' ``ChannelsLiveServerTestCase``, bounded.

Channels' class runs Daphne in a child process; this one serves the same
application from a thread of the test process, as Django's live server does,
so settings overrides, the test database and ``--parallel`` reach it, and its
database sessions are bounded by django-safelive's budget.
"""

from __future__ import annotations

from channels.routing import get_default_application
from django.utils.functional import classproperty

from django_safelive._core.asgi_server import ASGIApp
from django_safelive._core.asgi_testcases import ASGILiveServerTestCase

__all__ = ["ChannelsLiveServerTestCase"]


class ChannelsLiveServerTestCase(ASGILiveServerTestCase):
    """Channels' ``ChannelsLiveServerTestCase`` (``live_server_url``,
    ``live_server_ws_url``, ``serve_static``, ``host``), served in-process by
    a bounded ASGI server."""

    @classproperty
    def _port(cls) -> int:  # noqa: N805 (a class property)
        """The server's port, where Channels' class keeps it (tests read it)."""
        port: int = cls.server_thread.port
        return port

    @classmethod
    def get_application(cls) -> ASGIApp:
        """``settings.ASGI_APPLICATION``, loaded as Channels loads it."""
        application: ASGIApp = get_default_application()
        return application
