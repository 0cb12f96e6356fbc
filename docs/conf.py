"""Sphinx configuration: `nox -s docs` builds the site with warnings as errors."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import django

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# autodoc imports the package, whose modules need configured settings.
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
django.setup()

project = "django-safelive"
author = "django-safelive contributors"
copyright = "2026, django-safelive contributors"
release = "0.1.0"

extensions = ["myst_parser", "sphinx.ext.autodoc"]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
myst_heading_anchors = 3
exclude_patterns = ["_build"]
html_theme = "furo"
html_title = "django-safelive"
html_static_path = ["_static"]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
