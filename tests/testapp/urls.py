from __future__ import annotations

from django.urls import path

from tests.testapp import views

urlpatterns = [
    path("items/", views.items),
    path("items/<int:item_id>/", views.item),
    path("openapi.json", views.openapi),
    path("slow/", views.slow),
    path("hang/", views.hang),
    path("session/", views.session),
    path("spawn/", views.spawn),
    path("concurrent/", views.concurrent),
]
