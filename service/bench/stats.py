"""What the benchmarks share: how they read a percentile off their samples, and the time
between two of the controller's timestamps."""

from __future__ import annotations

import datetime as dt


def percentile(values: list[float], p: float) -> float:
    """The sample at rank p % (nearest rank, no interpolation)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def seconds(start: str, end: str) -> float:
    """Seconds between two ISO 8601 timestamps (a job's created_at, started_at...)."""
    return (dt.datetime.fromisoformat(end) - dt.datetime.fromisoformat(start)).total_seconds()
