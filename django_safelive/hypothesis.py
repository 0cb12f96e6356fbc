"""Bounded versions of ``hypothesis.extra.django``'s live server test cases.

Every Hypothesis example starts with an idle server that holds no database
session: in-flight requests are drained and the workers' connections closed
before each example's flush.

The rollback variants serve requests inside Hypothesis's ``TestCase``
transaction instead: each example is rolled back, with no flush.
"""

from __future__ import annotations

from django.contrib.staticfiles.testing import (
    StaticLiveServerTestCase as DjangoStaticLiveServerTestCase,
)
from django.test import LiveServerTestCase as DjangoLiveServerTestCase
from hypothesis.extra.django import LiveServerTestCase as HypothesisLiveServerTestCase
from hypothesis.extra.django import (
    StaticLiveServerTestCase as HypothesisStaticLiveServerTestCase,
)
from hypothesis.extra.django import TestCase as HypothesisTestCase

from django_safelive._core.asgi_testcases import ASGILiveServerMixin
from django_safelive._core.rollback import RollbackLiveServerMixin
from django_safelive._core.testcases import SafeLiveServerMixin

__all__ = [
    "ASGILiveServerTestCase",
    "LiveServerTestCase",
    "RollbackLiveServerTestCase",
    "StaticLiveServerTestCase",
    "StaticRollbackLiveServerTestCase",
]


class LiveServerTestCase(SafeLiveServerMixin, HypothesisLiveServerTestCase):
    """Hypothesis's ``LiveServerTestCase`` with a bounded server and budget."""


class StaticLiveServerTestCase(SafeLiveServerMixin, HypothesisStaticLiveServerTestCase):
    """Hypothesis's ``StaticLiveServerTestCase`` with a bounded server and budget."""


class ASGILiveServerTestCase(ASGILiveServerMixin, HypothesisLiveServerTestCase):
    """Hypothesis's ``LiveServerTestCase`` serving the project's ASGI
    application (see ``django_safelive.ASGILiveServerTestCase``)."""


class RollbackLiveServerTestCase(
    RollbackLiveServerMixin, DjangoLiveServerTestCase, HypothesisTestCase
):
    """Hypothesis's ``TestCase`` with a live server inside its transaction: each
    example's requests and writes are rolled back with the example
    (see ``django_safelive.RollbackLiveServerTestCase``)."""


class StaticRollbackLiveServerTestCase(
    RollbackLiveServerMixin, DjangoStaticLiveServerTestCase, HypothesisTestCase
):
    """``RollbackLiveServerTestCase`` serving static files as Django's
    ``StaticLiveServerTestCase`` does."""
