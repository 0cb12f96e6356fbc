"""The bounded live server and its session budget: what a test run imports.

Nothing here imports the command-line tools (``django_safelive._tools``).
"""
