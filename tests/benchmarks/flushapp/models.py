"""Thirty-six models, each with a foreign key to the one before, an index and a
few columns: the flush truncates every one of them (and Django's own)."""

from __future__ import annotations

from django.db import models

TABLES = 36


def _model(number: int, previous: type[models.Model] | None) -> type[models.Model]:
    attrs: dict[str, object] = {
        "__module__": __name__,
        "name": models.CharField(max_length=100, db_index=True),
        "amount": models.IntegerField(default=0),
        "created": models.DateTimeField(auto_now_add=True),
    }
    if previous is not None:
        attrs["parent"] = models.ForeignKey(
            previous, null=True, on_delete=models.CASCADE
        )
    return type(f"Table{number:02d}", (models.Model,), attrs)


def _models() -> list[type[models.Model]]:
    made: list[type[models.Model]] = []
    for number in range(1, TABLES + 1):
        made.append(_model(number, made[-1] if made else None))
    return made


MODELS = _models()
