"""How the command line shows things: tables, JSON, times in the local zone, run
times and sizes."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True))

def print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=False)]
    for row in (header, *rows):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())

def clock(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"

def local_time(value: Any) -> str:
    """A timestamp of the API (UTC) in the local time zone, with the zone shown."""
    stamp = parse_time(value)
    if stamp is None:
        return str(value or "")
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")

def runtime(job: dict[str, Any]) -> str:
    start = parse_time(job.get("started_at"))
    if start is None:
        return ""
    end = parse_time(job.get("finished_at"))
    if end is None:
        if job.get("state") != "running":
            return ""
        end = datetime.now(start.tzinfo)
    return clock(max(0.0, (end - start).total_seconds()))

def parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return None

def size(value: Any) -> str:
    if not isinstance(value, int):
        return ""
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(value)
