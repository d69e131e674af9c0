"""The command line's views of the whole cluster: `queue` (as squeue), `workers` (as
sinfo) and `usage` (as sreport)."""

from __future__ import annotations

import argparse
import sys

from jobqueue.client import display
from jobqueue.client.api import Client


def _show(args: argparse.Namespace, answer, header: tuple[str, ...], rows: list,
          note: str = "") -> int:
    """The answer as JSON with --json, else as a table (and a note on stderr)."""
    if args.json:
        display.print_json(answer)
        return 0
    display.print_table(header, rows)
    if note:
        print(note, file=sys.stderr)
    return 0


def cmd_queue(args: argparse.Namespace) -> int:
    answer = Client.from_env().queue()
    rows = [(job["id"][:12], job["owner"], job.get("name") or "-", job["state"],
             str(job["cpus"]), job.get("environment") or "",
             job.get("worker") or ("(waiting on jobs)" if job.get("waiting") else ""),
             display.local_time(job.get("started_at") or job.get("queued_at")))
            for job in answer["jobs"]]
    return _show(args, answer, ("ID", "OWNER", "NAME", "STATE", "CPUS", "ENV", "WORKER",
                                "SINCE"), rows,
                 f"(the {len(rows)} oldest; more are queued)" if answer.get("truncated") else "")


def cmd_workers(args: argparse.Namespace) -> int:
    workers = Client.from_env().workers()
    rows = [(w["worker"], w["state"], f"{w['cpus_used']}/{w['cpus']}", str(w["running"]),
             "" if w.get("memory_mib") is None else f"{w['memory_mib']} MiB",
             ",".join(w.get("environments") or []), display.local_time(w["seen_at"]))
            for w in workers]
    return _show(args, workers, ("WORKER", "STATE", "CPUS USED", "JOBS", "MEMORY",
                                 "ENVIRONMENTS", "LAST CLAIM"), rows)


def cmd_usage(args: argparse.Namespace) -> int:
    answer = Client.from_env().usage(args.days)
    rows = [(u["user"], str(u["jobs"]), str(u["succeeded"]),
             str(u["failed"] + u["timed_out"]), str(u["cancelled"]),
             f"{u['cpu_hours']:.2f}", f"{u['cpu_hours_held']:.2f}",
             display.size(u.get("peak_memory")))
            for u in answer["users"]]
    return _show(args, answer, ("USER", "JOBS", "SUCCEEDED", "FAILED", "CANCELLED",
                                "CPU HOURS", "HELD", "PEAK MEMORY"), rows,
                 f"(jobs finished since {display.local_time(answer['since'])})")


def add_commands(command) -> None:
    """Register the commands with `command(name, handler, help)` of the CLI's parser."""
    command("queue", cmd_queue, "every queued and running job of the cluster, oldest first "
            "(others' without their names), as squeue")
    command("workers", cmd_workers, "every worker: its state, CPUs in use, jobs, memory and "
            "software environments, as sinfo")
    p = command("usage", cmd_usage, "jobs finished per user over the last days: how they "
                "ended, CPU hours used and held, peak memory (yours; an admin: everyone's)")
    p.add_argument("--days", type=int, default=30, help="how far back (default 30)")
