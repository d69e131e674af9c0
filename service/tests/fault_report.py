"""The fault-injection suite's table: one row per scenario and database, printed at the
end of the run and appended as JSON lines to $JOBQUEUE_FAULT_REPORT, if set. A row
travels as a property of its test's report, so that it reaches the table from any
pytest-xdist worker."""

from __future__ import annotations

import json
import os
import time

PROPERTY = "fault_row"
ROWS: list[dict] = []  # filled by conftest's pytest_runtest_logreport
COLUMNS = ("scenario", "database", "succeeded", "lost", "duplicated", "attempts",
           "unavailable_s", "seconds")


def report(record_property, scenario: str, database: str, outcome, unavailable: float,
           started: float) -> None:
    """Record a row through the test's `record_property` fixture."""
    row = {"scenario": scenario, "database": database, "succeeded": outcome.succeeded,
           "lost": outcome.lost, "duplicated": outcome.duplicated,
           "attempts": outcome.max_attempts, "unavailable_s": round(unavailable, 1),
           "seconds": round(time.monotonic() - started, 1)}
    record_property(PROPERTY, row)
    if path := os.environ.get("JOBQUEUE_FAULT_REPORT"):
        with open(path, "a") as fh:
            fh.write(json.dumps(row) + "\n")


def table() -> list[str]:
    rows = [COLUMNS] + [tuple(str(row[c]) for c in COLUMNS) for row in ROWS]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
            for r in rows]
