"""The fault-injection suite's table: one row per scenario and database, printed at the
end of the run and appended as JSON lines to $JOBQUEUE_FAULT_REPORT, if set."""

from __future__ import annotations

import json
import os
import time

ROWS: list[dict] = []
COLUMNS = ("scenario", "database", "succeeded", "lost", "duplicated", "attempts",
           "unavailable_s", "seconds")


def report(scenario: str, database: str, outcome, unavailable: float, started: float) -> None:
    row = {"scenario": scenario, "database": database, "succeeded": outcome.succeeded,
           "lost": outcome.lost, "duplicated": outcome.duplicated,
           "attempts": outcome.max_attempts, "unavailable_s": round(unavailable, 1),
           "seconds": round(time.monotonic() - started, 1)}
    ROWS.append(row)
    if path := os.environ.get("JOBQUEUE_FAULT_REPORT"):
        with open(path, "a") as fh:
            fh.write(json.dumps(row) + "\n")


def table() -> list[str]:
    rows = [COLUMNS] + [tuple(str(row[c]) for c in COLUMNS) for row in ROWS]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
            for r in rows]
