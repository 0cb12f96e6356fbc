"""The demo's JSON API: list, create and read shop items, behind a Bearer token."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from django_safelive._tools.demo.models import Item

TOKEN = "demo-token"


class ItemForm(forms.ModelForm):  # type: ignore[type-arg]
    # As the schema says: any name of 1 to 100 characters, whitespace too (a
    # form strips it by default, and refused "\r" as a missing name).
    name = forms.CharField(max_length=100, strip=False)

    class Meta:
        model = Item
        fields = ["name", "price"]


def _json(item: Item) -> dict[str, Any]:
    return {"id": item.pk, "name": item.name, "price": item.price}


def _refused(request: HttpRequest) -> HttpResponse | None:
    if request.headers.get("Authorization") != f"Bearer {TOKEN}":
        return JsonResponse({"detail": "unauthorized"}, status=401)
    return None


@csrf_exempt
def items(request: HttpRequest) -> HttpResponse:
    if refused := _refused(request):
        return refused
    if request.method == "POST":
        try:
            data = json.loads(request.body)
        except ValueError:
            data = None
        if not isinstance(data, dict) or set(data) - {"name", "price"}:
            return JsonResponse({"detail": "invalid"}, status=400)
        form = ItemForm({"price": 0, **data})
        if not form.is_valid():
            return JsonResponse({"detail": form.errors}, status=400)
        return JsonResponse(_json(form.save()), status=201)
    return JsonResponse(
        [_json(i) for i in Item.objects.order_by("pk")[:20]], safe=False
    )


def item(request: HttpRequest, item_id: int) -> HttpResponse:
    if refused := _refused(request):
        return refused
    found = Item.objects.filter(pk=item_id).first()
    if found is None:
        return JsonResponse({"detail": "not found"}, status=404)
    return JsonResponse(_json(found))


def openapi(request: HttpRequest) -> HttpResponse:
    return JsonResponse(OPENAPI)


_ITEM = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "name": {"type": "string"},
        "price": {"type": "integer"},
    },
    "required": ["id", "name", "price"],
}
_NEW_ITEM = {
    "type": "object",
    "properties": {
        # PostgreSQL text cannot hold NUL characters.
        "name": {"type": "string", "minLength": 1, "maxLength": 100,
                 "pattern": "^[^\\u0000]*$"},
        "price": {"type": "integer", "minimum": -2147483648, "maximum": 2147483647},
    },
    "required": ["name"],
    "additionalProperties": False,
}  # fmt: skip


def _json_response(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": schema}},
    }


_UNAUTHORIZED = {"description": "No or wrong token"}
OPENAPI: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "django-safelive demo shop", "version": "1.0"},
    "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    "security": [{"bearer": []}],
    "paths": {
        "/items/": {
            "get": {
                "responses": {
                    "200": _json_response({"type": "array", "items": _ITEM}, "Items"),
                    "401": _UNAUTHORIZED,
                }
            },
            "post": {
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _NEW_ITEM}},
                },
                "responses": {
                    "201": _json_response(_ITEM, "Created"),
                    "400": {"description": "Invalid item"},
                    "401": _UNAUTHORIZED,
                },
            },
        },
        "/items/{item_id}/": {
            "get": {
                "parameters": [
                    {
                        "name": "item_id",
                        "in": "path",
                        "required": True,
                        "schema": {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": 2147483647,
                        },
                    }
                ],  # fmt: skip
                "responses": {
                    "200": _json_response(_ITEM, "The item"),
                    "401": _UNAUTHORIZED,
                    "404": {"description": "No such item"},
                },
            }
        },
    },
}
