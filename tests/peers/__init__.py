"""Other projects' own test suites run against django-safelive (`nox -s peers`).

Nothing here is a test module of ours: no name starts with ``test_``, and our
suite imports none of it. ``run.py`` drives the runs; see its docstring.
"""
