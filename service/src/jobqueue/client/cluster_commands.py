"""The command line's views of the whole cluster: `queue` (as squeue), `workers` (as
sinfo) and `usage` (as sreport)."""

from __future__ import annotations

import argparse
import sys

from jobqueue.client import display
from jobqueue.client.api import Client


def cmd_queue(args: argparse.Namespace) -> int:
    client = Client.from_env()
    answer = client.queue()
    if args.json:
        display.print_json(answer)
        return 0
    rows = [(job["id"][:12], job["owner"], job.get("name") or "-", job["state"],
             str(job["cpus"]), job.get("environment") or "",
             job.get("worker") or ("(waiting on jobs)" if job.get("waiting") else ""),
             display.local_time(job.get("started_at") or job.get("queued_at")))
            for job in answer["jobs"]]
    display.print_table(("ID", "OWNER", "NAME", "STATE", "CPUS", "ENV", "WORKER",
                         "SINCE"), rows)
    if answer.get("truncated"):
        print(f"(the {len(rows)} oldest; more are queued)", file=sys.stderr)
    return 0


def cmd_workers(args: argparse.Namespace) -> int:
    client = Client.from_env()
    workers = client.workers()
    if args.json:
        display.print_json(workers)
        return 0
    rows = [(w["worker"], w["state"], f"{w['cpus_used']}/{w['cpus']}", str(w["running"]),
             "" if w.get("memory_mib") is None else f"{w['memory_mib']} MiB",
             ",".join(w.get("environments") or []), display.local_time(w["seen_at"]))
            for w in workers]
    display.print_table(("WORKER", "STATE", "CPUS USED", "JOBS", "MEMORY", "ENVIRONMENTS",
                         "LAST CLAIM"), rows)
    return 0


def cmd_usage(args: argparse.Namespace) -> int:
    client = Client.from_env()
    answer = client.usage(args.days)
    if args.json:
        display.print_json(answer)
        return 0
    rows = [(u["user"], str(u["jobs"]), str(u["succeeded"]),
             str(u["failed"] + u["timed_out"]), str(u["cancelled"]),
             f"{u['cpu_hours']:.2f}", f"{u['cpu_hours_held']:.2f}",
             display.size(u.get("peak_memory")))
            for u in answer["users"]]
    print(f"jobs finished since {display.local_time(answer['since'])}")
    display.print_table(("USER", "JOBS", "SUCCEEDED", "FAILED", "CANCELLED", "CPU HOURS",
                         "HELD", "PEAK MEMORY"), rows)
    return 0


def add_commands(command) -> None:
    """Register the commands with `command(name, handler, help)` of the CLI's parser."""
    command("queue", cmd_queue, "every queued and running job of the cluster, oldest first "
            "(others' without their names), as squeue")
    command("workers", cmd_workers, "every worker: its state, CPUs in use, jobs, memory and "
            "software environments, as sinfo")
    p = command("usage", cmd_usage, "jobs finished per user over the last days: how they "
                "ended, CPU hours used and held, peak memory (yours; an admin: everyone's)")
    p.add_argument("--days", type=int, default=30, help="how far back (default 30)")
