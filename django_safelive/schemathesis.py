"""Schemathesis property tests against a bounded live server, one operation each.

Load an OpenAPI schema with :func:`from_dict`, :func:`from_file` or
:func:`from_path` (a path your app serves, such as ``"/openapi.json"``), then
run every operation as a Hypothesis property test against the live server::

    api = schemathesis.from_dict(OPENAPI, headers={"Authorization": "Bearer t"})

    class APITests(django_safelive.LiveServerTestCase):
        def test_api(self):
            api.check_all(self)  # one subTest per operation

    @api.parametrize()  # pytest: one test per operation
    def test_api(safe_live_server, operation):
        api.check(safe_live_server, operation)

The server is reset between examples (in-flight requests drained, the workers'
sessions closed), so every example starts without a server session, and each
request goes out on a fresh HTTP session that is closed after it: no keep-alive
socket is left behind, whatever server it runs against.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import schemathesis
import yaml
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings

if TYPE_CHECKING:
    import unittest

    import pytest
    from schemathesis import APIOperation, BaseSchema, CheckFunction

    Operation = APIOperation[Any, Any, Any, Any]

__all__ = ["LiveSchema", "from_dict", "from_file", "from_path"]

DEFAULT_MAX_EXAMPLES = 50


@runtime_checkable
class _TestCaseServer(Protocol):
    live_server_url: str

    def reset_live_server(self) -> None: ...


@runtime_checkable
class _FixtureServer(Protocol):
    url: str

    def reset(self, aliases: list[str] | None = None) -> None: ...


def _target(server: object) -> tuple[str, Callable[[], None]]:
    """The base URL of `server` and the function that resets it."""
    if isinstance(server, _TestCaseServer):
        return server.live_server_url, server.reset_live_server
    if isinstance(server, _FixtureServer):
        return server.url, server.reset
    raise TypeError(
        "django_safelive.schemathesis needs a django-safelive live server to reset "
        "between examples: a django_safelive (or django_safelive.hypothesis) "
        "LiveServerTestCase instance, or the safe_live_server fixture (or "
        "live_server with --safelive-live-server); got "
        f"{type(server).__name__}."
    )


class LiveSchema:
    """An OpenAPI schema whose operations run as property tests on a live server.

    Build one with :func:`from_dict`, :func:`from_file` or :func:`from_path`.
    ``headers`` go with every request (a Bearer token, say); ``auth`` is HTTP
    basic auth; ``rate_limit`` is Schemathesis's (``"100/s"``, ``"1000/m"``);
    ``checks`` replaces Schemathesis's default checks and ``excluded_checks``
    removes some; ``settings`` is a Hypothesis ``settings`` object the
    per-operation tests inherit from (``max_examples`` wins over it).
    """

    def __init__(
        self,
        schema: BaseSchema | None = None,
        *,
        path: str | None = None,
        headers: Mapping[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        max_examples: int = DEFAULT_MAX_EXAMPLES,
        rate_limit: str | None = None,
        checks: Sequence[CheckFunction] | None = None,
        excluded_checks: Sequence[CheckFunction] | None = None,
        settings: hypothesis_settings | None = None,
    ) -> None:
        if (schema is None) == (path is None):
            raise TypeError("LiveSchema needs exactly one of a schema or a path.")
        if isinstance(max_examples, bool) or not isinstance(max_examples, int):
            raise TypeError(f"max_examples must be an int, got {max_examples!r}.")
        if max_examples < 1:
            raise ValueError(f"max_examples must be at least 1, got {max_examples}.")
        self.path = path
        self.headers = dict(headers or {})
        self.auth = auth
        self.max_examples = max_examples
        self.rate_limit = rate_limit
        self.checks = list(checks) if checks is not None else None
        self.excluded_checks = list(excluded_checks or [])
        self.settings = settings
        self._schema: BaseSchema | None = None
        if schema is not None:
            self._schema = self._configure(schema)

    # -- loading --------------------------------------------------------------
    def _configure(self, schema: BaseSchema) -> BaseSchema:
        schema.config.update(
            headers=self.headers or None,
            basic_auth=self.auth,
            rate_limit=self.rate_limit,
        )
        return schema

    def schema(self, base_url: str | None = None) -> BaseSchema:
        """The loaded schema; a path is fetched from `base_url` when given (the
        live server), or else in-process through Django's test client."""
        if self._schema is None:
            assert self.path is not None
            self._schema = self._configure(self._fetch(self.path, base_url))
        return self._schema

    @staticmethod
    def _fetch(path: str, base_url: str | None) -> BaseSchema:
        if base_url is not None:
            return schemathesis.openapi.from_url(base_url.rstrip("/") + path)
        from django.test import Client

        response = Client().get(path)
        if response.status_code != 200:
            raise ValueError(
                f"GET {path} answered {response.status_code}, not an OpenAPI "
                "schema: check the path your URLconf serves the schema on."
            )
        # JSON is YAML too; Schemathesis depends on PyYAML.
        loaded = yaml.safe_load(response.content)
        if not isinstance(loaded, dict):
            raise ValueError(f"GET {path} did not answer an OpenAPI document.")
        return schemathesis.openapi.from_dict(loaded)

    def operations(self, base_url: str | None = None) -> list[Operation]:
        """Every operation of the schema; a schema that fails to parse raises."""
        found = []
        for result in self.schema(base_url).get_all_operations():
            if hasattr(result, "err"):
                raise result.err()
            found.append(result.ok())
        return found

    # -- running ----------------------------------------------------------------
    def _settings(self) -> hypothesis_settings:
        return hypothesis_settings(
            self.settings,
            max_examples=self.max_examples,
            deadline=None,
            # A live server is slower than Hypothesis expects of a function.
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        )

    def check(self, server: object, operation: Operation) -> None:
        """Run `operation` as a property test against `server`, reset between
        examples; a failing check fails with Hypothesis's smallest example."""
        base_url, reset = _target(server)

        @self._settings()
        @given(case=operation.as_strategy())
        def example(case: Any) -> None:
            try:
                case.call_and_validate(
                    base_url=base_url,
                    checks=self.checks,
                    excluded_checks=self.excluded_checks or None,
                )
            finally:
                reset()

        reset()
        example()

    def check_all(self, test: unittest.TestCase) -> None:
        """Run every operation against the test case's live server, each in its
        own ``subTest``, so one failing operation does not hide the others."""
        base_url, _ = _target(test)
        for operation in self.operations(base_url):
            with test.subTest(operation=operation.label):
                self.check(test, operation)

    def parametrize(self) -> pytest.MarkDecorator:
        """A ``pytest.mark.parametrize`` over the operations, as ``operation``."""
        import pytest

        operations = self.operations()
        return pytest.mark.parametrize(
            "operation", operations, ids=[operation.label for operation in operations]
        )


def from_dict(schema: Mapping[str, Any], **options: Any) -> LiveSchema:
    """A :class:`LiveSchema` from an OpenAPI document already loaded as a dict."""
    return LiveSchema(schemathesis.openapi.from_dict(dict(schema)), **options)


def from_file(path: str | os.PathLike[str], **options: Any) -> LiveSchema:
    """A :class:`LiveSchema` from an OpenAPI file (JSON or YAML)."""
    return LiveSchema(schemathesis.openapi.from_path(os.fspath(path)), **options)


def from_path(path: str, **options: Any) -> LiveSchema:
    """A :class:`LiveSchema` from a URL path the app serves (``"/openapi.json"``).

    It is fetched from the live server the first time one is at hand
    (:meth:`LiveSchema.check_all`); :meth:`LiveSchema.parametrize` runs at
    collection time, before any server starts, and fetches it in-process
    through Django's test client instead.
    """
    if not path.startswith("/"):
        raise ValueError(
            f"from_path() takes a URL path starting with '/', got {path!r}; "
            "use from_file() for a file."
        )
    return LiveSchema(path=path, **options)
