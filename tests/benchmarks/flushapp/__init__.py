"""Thirty-six tables that only the rollback benchmark installs, so that the
flush ``TransactionTestCase`` runs after every test (and, with Hypothesis,
every example) costs what it costs on a real project."""
