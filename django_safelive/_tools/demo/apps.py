from __future__ import annotations

from django.apps import AppConfig


class DemoConfig(AppConfig):
    name = "django_safelive._tools.demo"
    label = "safelive_demo"
    default_auto_field = "django.db.models.BigAutoField"
