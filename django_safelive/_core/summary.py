"""Each test's session peak, and the short table printed at the end of a run."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# How many tests the end-of-run table lists, highest peak first.
TOP = 5
# Refusals kept per test (a Hypothesis test can have one per example); the
# rest are counted.
OVERRUNS_KEPT = 20
# Where the processes of `manage.py test --parallel` write their records, one
# file each, for SafeLiveRunner to read after the run.
RECORDS_VARIABLE = "_SAFELIVE_SUMMARY_RECORDS"


@dataclass
class TestSessions:
    """The database sessions one test used: its peak per alias, and refusals."""

    test: str
    budget: int
    peaks: dict[str, int] = field(default_factory=dict)
    overruns: list[str] = field(default_factory=list)
    more_overruns: int = 0
    """Refusals beyond the OVERRUNS_KEPT listed."""

    def __post_init__(self) -> None:
        self._keep_overruns_bounded()

    def _keep_overruns_bounded(self) -> None:
        if len(self.overruns) > OVERRUNS_KEPT:
            self.more_overruns += len(self.overruns) - OVERRUNS_KEPT
            del self.overruns[OVERRUNS_KEPT:]

    @property
    def peak(self) -> int:
        return max(self.peaks.values(), default=0)

    def merge(self, other: TestSessions) -> None:
        """Fold in another record of the same test (a Hypothesis example, say)."""
        self.budget = max(self.budget, other.budget)
        for alias, peak in other.peaks.items():
            self.peaks[alias] = max(self.peaks.get(alias, 0), peak)
        self.overruns.extend(other.overruns)
        self.more_overruns += other.more_overruns
        self._keep_overruns_bounded()

    def as_dict(self) -> dict[str, Any]:
        """Plain values, so pytest-xdist can send the record to the controller."""
        return {
            "test": self.test,
            "budget": self.budget,
            "peaks": dict(self.peaks),
            "overruns": list(self.overruns),
            "more_overruns": self.more_overruns,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TestSessions:
        return cls(
            test=str(data["test"]),
            budget=int(data["budget"]),
            peaks={str(k): int(v) for k, v in data["peaks"].items()},
            overruns=[str(overrun) for overrun in data["overruns"]],
            more_overruns=int(data.get("more_overruns", 0)),
        )


class RunSummary:
    """The records of every test that ran on a django-safelive server."""

    def __init__(self) -> None:
        self.tests: dict[str, TestSessions] = {}

    def record(self, entry: TestSessions) -> None:
        found = self.tests.get(entry.test)
        if found is None:
            self.tests[entry.test] = TestSessions.from_dict(entry.as_dict())
        else:
            found.merge(entry)

    def lines(self, top: int = TOP) -> list[str]:
        """The table: the highest peaks, the budget, every overrun."""
        if not self.tests:
            return []
        ranked = sorted(self.tests.values(), key=lambda e: (-e.peak, e.test))
        budgets = "/".join(str(b) for b in sorted({e.budget for e in ranked}))
        lines = [
            f"{len(ranked)} test(s) used a django-safelive server, with a budget of "
            f"{budgets} session(s) per alias. Highest peaks:",
            "  peak  budget  alias      test",
        ]
        for entry in ranked[:top]:
            alias = max(entry.peaks, key=lambda a: entry.peaks[a], default="-")
            lines.append(
                f"  {entry.peak:>4}  {entry.budget:>6}  {alias:<9}  {entry.test}"
            )
        overruns = [(e.test, text) for e in ranked for text in e.overruns]
        more = sum(entry.more_overruns for entry in ranked)
        if overruns:
            total = len(overruns) + more
            lines.append(f"Overruns (sessions the budget refused): {total}")
            lines.extend(f"  {test}: {text}" for test, text in overruns)
            if more:
                lines.append(f"  ... and {more} more")
        else:
            lines.append("Overruns: none")
        return lines


run = RunSummary()
"""Every test recorded in this process (printed by ``SafeLiveRunner``)."""

pending = RunSummary()
"""Records not yet handed over to the pytest plugin, which attaches them to the
test's report so that pytest-xdist brings them to the controller; one per
test, and only kept while the plugin takes them (``hand_over``)."""
hand_over = False


def record(entry: TestSessions) -> None:
    """Remember how many sessions a test used, for the end-of-run summary."""
    run.record(entry)
    if hand_over:
        pending.record(entry)
    records = os.environ.get(RECORDS_VARIABLE)
    if records:
        with open(Path(records) / f"{os.getpid()}.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(entry.as_dict()) + "\n")


def read_records(directory: str) -> None:
    """Fold in the records other processes wrote to `directory`."""
    for path in sorted(Path(directory).glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            run.record(TestSessions.from_dict(json.loads(line)))
