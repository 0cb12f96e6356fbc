from __future__ import annotations

from django.urls import path

from django_safelive._tools.demo import views

urlpatterns = [
    path("items/", views.items),
    path("items/<int:item_id>/", views.item),
    path("openapi.json", views.openapi),
]
