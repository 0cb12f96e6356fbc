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
    path("temp-table/", views.temp_table),
    path("spawn/", views.spawn),
    path("leak/", views.leak),
    path("concurrent/", views.concurrent),
    path("webhook/", views.webhook),
    path("faults/raise-in-transaction/", views.raise_in_transaction),
    path("faults/leave-atomic-open/", views.leave_atomic_open),
    path("faults/leave-autocommit-off/", views.leave_autocommit_off),
    path("stream/", views.stream),
    path("browser/", views.browser_page),
    path("browser/badge/<int:number>.svg", views.badge),
    path("rollback/duplicate/", views.duplicate_item),
    path("rollback/duplicate-caught/", views.duplicate_item_caught),
    path("rollback/write-then-fail/", views.write_then_fail),
    path("rollback/hold/", views.hold),
    path("rollback/on-commit/", views.with_on_commit),
]
