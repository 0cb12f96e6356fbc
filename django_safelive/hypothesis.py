"""Bounded versions of ``hypothesis.extra.django``'s live server test cases.

Every Hypothesis example starts with an idle server that holds no database
session: in-flight requests are drained and the workers' connections closed
before each example's flush.
"""

from __future__ import annotations

from hypothesis.extra.django import LiveServerTestCase as HypothesisLiveServerTestCase
from hypothesis.extra.django import (
    StaticLiveServerTestCase as HypothesisStaticLiveServerTestCase,
)

from django_safelive._testcases import SafeLiveServerMixin

__all__ = ["LiveServerTestCase", "StaticLiveServerTestCase"]


class LiveServerTestCase(SafeLiveServerMixin, HypothesisLiveServerTestCase):
    """Hypothesis's ``LiveServerTestCase`` with a bounded server and budget."""


class StaticLiveServerTestCase(SafeLiveServerMixin, HypothesisStaticLiveServerTestCase):
    """Hypothesis's ``StaticLiveServerTestCase`` with a bounded server and budget."""
