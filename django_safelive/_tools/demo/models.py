from __future__ import annotations

from django.db import models


class Item(models.Model):
    """A shop item: what the demo API lists, creates and reads."""

    name = models.CharField(max_length=100)
    price = models.IntegerField(default=0)

    class Meta:
        app_label = "safelive_demo"
