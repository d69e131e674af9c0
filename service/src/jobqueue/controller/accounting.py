"""What an attempt used, as its worker reports it with the result: CPU time, peak
memory, wall time and the signal that ended it. Checked here (finite, bounded, of the
right type) before any of it reaches the database."""

from __future__ import annotations

import math

from jobqueue.controller.errors import bad_request
from jobqueue.models import Job

FIELDS = ("cpu_seconds", "peak_memory", "wall_seconds", "signal")
# Far above what any attempt can use (max_walltime is a week, CPUs at most 2^20), far
# below what would overflow a column.
MAX_SECONDS = 1e13
MAX_BYTES = (1 << 63) - 1
MAX_SIGNAL = 255


def _seconds(value, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            not math.isfinite(value) or not 0 <= value <= MAX_SECONDS:
        raise bad_request(f"accounting '{name}' must be null or a number of seconds from 0 "
                          f"to {MAX_SECONDS:g}")
    return float(value)


def _whole(value, name: str, low: int, high: int, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise bad_request(f"accounting '{name}' must be null or {what} from {low} to {high}")
    return value


def parse(value) -> dict:
    """The status' optional `accounting` object, checked; absent fields are null."""
    if value is None:
        return dict.fromkeys(FIELDS)
    if not isinstance(value, dict):
        raise bad_request("status 'accounting' must be an object")
    if unknown := sorted(set(value) - set(FIELDS)):
        raise bad_request(f"status 'accounting' has unknown field {unknown[0]!r} (fields: "
                          + ", ".join(FIELDS) + ")")
    return {
        "cpu_seconds": _seconds(value.get("cpu_seconds"), "cpu_seconds"),
        "peak_memory": _whole(value.get("peak_memory"), "peak_memory", 0, MAX_BYTES,
                              "a number of bytes"),
        "wall_seconds": _seconds(value.get("wall_seconds"), "wall_seconds"),
        "signal": _whole(value.get("signal"), "signal", 1, MAX_SIGNAL, "a signal number"),
    }


def record(job: Job, accounting: dict) -> None:
    job.cpu_seconds = accounting["cpu_seconds"]
    job.peak_memory = accounting["peak_memory"]
    job.wall_seconds = accounting["wall_seconds"]
    job.signal = accounting["signal"]


def as_json(job: Job) -> dict:
    return {"cpu_seconds": job.cpu_seconds, "peak_memory": job.peak_memory,
            "wall_seconds": job.wall_seconds, "signal": job.signal}
