"""Live server test cases serving the project's ASGI application, bounded."""

from __future__ import annotations

from typing import Any, ClassVar

from django.conf import settings
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
from django.core.asgi import get_asgi_application
from django.core.exceptions import ImproperlyConfigured
from django.test import LiveServerTestCase as DjangoLiveServerTestCase
from django.test.testcases import LiveServerThread
from django.utils.functional import classproperty
from django.utils.module_loading import import_string

from django_safelive._core.asgi_server import ASGIApp, SafeASGILiveServerThread
from django_safelive._core.config import Config, resolve
from django_safelive._core.testcases import SafeLiveServerMixin


class ASGILiveServerMixin(SafeLiveServerMixin):
    """Serve the project's ASGI application (HTTP and WebSockets) from a
    bounded server in a thread, instead of Django's WSGI one."""

    serve_static: ClassVar[bool] = True
    """Serve static files from the finders, as ``StaticLiveServerTestCase``
    and Channels' ``ChannelsLiveServerTestCase`` do."""
    static_wrapper: ClassVar[Any] = ASGIStaticFilesHandler
    websocket_workers: ClassVar[int | None] = None
    server_thread_class: type[LiveServerThread] = SafeASGILiveServerThread

    @classmethod
    def get_application(cls) -> ASGIApp:
        """The ASGI application to serve: ``settings.ASGI_APPLICATION`` (a
        dotted path, as Channels and Daphne read it) if set, else Django's."""
        path = getattr(settings, "ASGI_APPLICATION", None)
        return import_string(path) if path else get_asgi_application()

    @classmethod
    def _resolve_config(cls) -> Config:
        return resolve(cls, websockets=True)

    @classmethod
    def _safelive_thread(
        cls, connections_override: Any, config: Config
    ) -> SafeASGILiveServerThread:
        thread_class = cls.server_thread_class
        if not issubclass(thread_class, SafeASGILiveServerThread):
            raise ImproperlyConfigured(
                f"{cls.__name__}.server_thread_class is {thread_class.__name__}, "
                "which cannot serve ASGI: use django_safelive's "
                "SafeASGILiveServerThread or a subclass of it."
            )
        application = cls.get_application()
        if cls.serve_static:
            application = cls.static_wrapper(application)
        return thread_class(
            cls.host,
            application,
            connections_override=connections_override,
            port=cls.port,
            config=config,
        )

    @classproperty
    def live_server_ws_url(cls) -> str:  # noqa: N805 (a class property)
        """The server's address for WebSocket clients: ``ws://host:port``."""
        return f"ws://{cls.host}:{cls.server_thread.port}"


class ASGILiveServerTestCase(ASGILiveServerMixin, DjangoLiveServerTestCase):
    """Django's ``LiveServerTestCase`` serving the project's ASGI application,
    with a bounded server and session budget."""
