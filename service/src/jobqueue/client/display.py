"""How the command line shows things: tables, JSON, times in the local zone, run
times and sizes, and a job or an array as `status` and `list` show them."""

from __future__ import annotations

import json
import signal
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


# -- a job or an array as `status` and `list` show them ----------------------------------

STATUS_FIELDS = (
    "id",
    "name",
    "owner",
    "state",
    "entry",
    "args",
    "cpus",
    "walltime",
    "memory",
    "output_limit",
    "attempts",
    "worker",
    "exit_code",
    "limit",
    "message",
    "cancel_requested",
    "created_at",
    "started_at",
    "finished_at",
)


def reason(job: dict[str, Any], width: int = 60) -> str:
    """Why a queued job waits, or how a finished one ended (first line, cut to `width`)."""
    text = job.get("pending_reason") if job.get("state") == "queued" else job.get("message")
    line = str(text or "").strip().split("\n", 1)[0]
    return line if len(line) <= width else line[:width - 3] + "..."


def task_suffix(job: dict[str, Any]) -> str:
    return f"[{job['array']['index']}]" if job.get("array") else ""


def print_array(array: dict[str, Any]) -> None:
    counts = ", ".join(f"{n} {state}" for state, n in sorted(array.get("counts", {}).items()))
    limit = array.get("max_running")
    rows = [("array:", array.get("id")), ("name:", array.get("name")),
            ("owner:", array.get("owner")), ("size:", array.get("size")),
            ("max_running:", "no limit" if limit is None else limit), ("tasks:", counts),
            ("created_at:", local_time(array.get("created_at")))]
    for key, value in rows:
        print(f"{key:<13} {'' if value is None else value}")


def print_status(job: dict[str, Any]) -> None:
    keys = [k for k in STATUS_FIELDS if k in job] + sorted(
        k for k in job if k not in STATUS_FIELDS and k not in ("links", "accounting")
    )
    usage = accounting_lines(job.get("accounting"))
    width = max(len(k) for k in [*keys, *usage, "runtime"]) if keys else 0
    for key in keys:
        value = job[key]
        if isinstance(value, list | dict):
            value = json.dumps(value)
        elif key.endswith("_at") and value:
            value = local_time(value)
        print(f"{key + ':':<{width + 1}} {'' if value is None else value}")
    for key, value in usage.items():
        print(f"{key + ':':<{width + 1}} {value}")
    took = runtime(job)
    if took:
        print(f"{'runtime:':<{width + 1}} {took}")


def accounting_lines(accounting: Any) -> dict[str, str]:
    """What the job's last attempt used, as `status` shows it (empty: not measured)."""
    if not isinstance(accounting, dict):
        return {}
    cpu, wall = accounting.get("cpu_seconds"), accounting.get("wall_seconds")
    peak, signum = accounting.get("peak_memory"), accounting.get("signal")
    return {
        "cpu_time": f"{cpu:.2f} s" if isinstance(cpu, int | float) else "",
        "peak_memory": size(peak),
        "wall_time": (f"{clock(wall)} ({wall:.2f} s)"
                      if isinstance(wall, int | float) else ""),
        "signal": signal_name(signum) if isinstance(signum, int) else "",
    }


def signal_name(signum: int) -> str:
    try:
        return f"{signum} ({signal.Signals(signum).name})"
    except ValueError:
        return str(signum)
