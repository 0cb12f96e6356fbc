"""pytest-xdist: a total budget split across the workers, checked at start-up."""

from __future__ import annotations

from tests.test_root_causes import run

XDIST = ("-n", "4")


def test_total_budget_holds_across_workers() -> None:
    """-n 4 with a total of 12: the whole run stays within 12 sessions."""
    # -v undoes run()'s -q, so the report header (and the split) is printed.
    split = run("xdist_budget", "safelive", args=(*XDIST, "-v"),
                env={"SAFELIVE_TOTAL_MAX_SESSIONS": "12"})  # fmt: skip
    assert split.returncode == 0, split.output
    assert "total budget 12 sessions per alias across 4 process(es): 3 each" in (
        split.output
    )
    assert split.output.count("total budget") == 1
    assert 4 <= split.peak <= 12


def test_without_total_each_worker_uses_its_own_budget() -> None:
    """Without a total, four workers together go past 12: the split is what holds."""
    unsplit = run("xdist_budget", "safelive", args=XDIST)
    assert unsplit.returncode == 0, unsplit.output
    assert unsplit.peak > 12


def test_total_too_small_fails_before_any_test() -> None:
    """-n 4 with a total of 4 stops at start-up, saying what to change."""
    refused = run("xdist_budget", "safelive", args=XDIST,
                  env={"SAFELIVE_TOTAL_MAX_SESSIONS": "4"})  # fmt: skip
    assert refused.returncode != 0
    assert "total budget of 4 database session(s) per alias, split across 4" in (
        refused.output
    )
    assert "Raise TOTAL_MAX_SESSIONS to 8 or more" in refused.output
    assert "passed" not in refused.output
    assert refused.peak == 0
