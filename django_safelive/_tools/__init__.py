"""The command-line tools of ``python -m django_safelive``: watch, doctor, demo,
and the throwaway database servers the demo and the test command start.

Built on the core (``django_safelive._core``), which never imports them.
"""
