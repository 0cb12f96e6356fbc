from __future__ import annotations

from django.db import models


class Item(models.Model):
    name = models.CharField(max_length=100)
    price = models.IntegerField(default=0)


class Note(models.Model):
    """Refers to an item: a flush truncating items must truncate notes too."""

    item = models.ForeignKey(Item, null=True, on_delete=models.CASCADE)
    text = models.CharField(max_length=100, default="")


class Tag(models.Model):
    """Refers to nothing and nothing refers to it."""

    name = models.CharField(max_length=100, default="")
