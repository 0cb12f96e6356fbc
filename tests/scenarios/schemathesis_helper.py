"""The ROOT_CAUSES Schemathesis test, written with django_safelive.schemathesis.

The same API, Bearer token and CONN_MAX_AGE = 600 as schemathesis_shop.py, in
the helper's unittest form and its pytest form. django-safelive only: the
helper resets the server between examples, which Django's server cannot do.
"""

from __future__ import annotations

from typing import Any

from django_safelive import schemathesis
from django_safelive._pytest_server import SafeLiveServer
from django_safelive.hypothesis import LiveServerTestCase
from tests.scenarios._impl import report
from tests.testapp.views import OPENAPI, TOKEN

api = schemathesis.from_dict(
    OPENAPI, headers={"Authorization": f"Bearer {TOKEN}"}, max_examples=30
)


class ShopAPITests(LiveServerTestCase):
    def test_api(self) -> None:
        """Every operation conforms to the schema, one subTest each."""
        api.check_all(self)
        report(style="unittest")


@api.parametrize()
def test_api(safe_live_server: SafeLiveServer, operation: Any) -> None:
    """Every operation conforms to the schema, one pytest test each."""
    api.check(safe_live_server, operation)
