from __future__ import annotations

from hypothesis import settings

# No example database on disk: runs stay independent and the tree stays clean.
settings.register_profile("safelive-tests", database=None, deadline=None)
settings.load_profile("safelive-tests")
