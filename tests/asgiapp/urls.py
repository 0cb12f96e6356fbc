from __future__ import annotations

from django.urls import path

from tests.asgiapp import views
from tests.testapp.urls import urlpatterns as wsgi_patterns

urlpatterns = [
    path("asgi/items/", views.async_items),
    path("asgi/create/", views.sync_create),
    path("asgi/events/", views.events),
    path("asgi/slow/", views.slow),
    *wsgi_patterns,
]
