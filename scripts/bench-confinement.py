#!/usr/bin/env python3
"""Benchmark: what confinement costs on a deployed cluster (VMs).

On the same workers, in one run: trivial jobs submitted all at once through the public
API, first with each job confined in a slot (the deployed `runner = "systemd"`), then
with the workers switched to the plain runner (`runner = "local"`, a runtime drop-in
that the end of the run removes, so the workers end confined). Prints for each: jobs per
second from the first submit to the last result, and the per-job time on the worker
(started_at to finished_at, median and p95, from the controller's own timestamps);
then the median of that time for jobs run one at a time (a cluster with nothing else
to do), and the ratios.

usage: scripts/bench-confinement.py [-i INVENTORY] [--client build/admin-client.toml]
                                    [--jobs 20] [--alone 8]
(`make bench-cluster`). The hosts: the inventory the Fabric tasks use (-i, else
$JOBQUEUE_INVENTORY, else what `make cluster` made: inventories/vagrant with the
addresses and keys Vagrant generated).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from jobqueue.client import Client

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "service" / "bench")]
from stats import percentile, seconds

from fabfile.inventory import INVENTORY_HELP, Inventory, ansible_command

DROP_IN = "/run/systemd/system/jobqueue-worker.service.d/bench-unconfined.conf"
# The plain runner starts the job itself: the daemon's own AppArmor profile forbids
# that (it may only start slot units), and its system call filter forbids the rlimits
# the plain runner sets in the job's process.
UNCONFINED = ("[Service]\nEnvironment=JOBQUEUE_WORKER_RUNNER=local\nAppArmorProfile=\n"
              "SystemCallFilter=\nSystemCallFilter=@system-service\n")


def on_workers(inventory: Inventory, module: str, args: dict) -> None:
    subprocess.run([ansible_command("ansible"), "workers", *inventory.ansible_args, "-b",
                    "-m", module, "-a", json.dumps(args)], check=True, stdout=subprocess.DEVNULL)


def set_confined(inventory: Inventory, confined: bool) -> None:
    if confined:
        on_workers(inventory, "ansible.builtin.file", {"path": DROP_IN, "state": "absent"})
    else:
        on_workers(inventory, "ansible.builtin.file",
                   {"path": DROP_IN.rsplit("/", 1)[0], "state": "directory", "mode": "0755"})
        on_workers(inventory, "ansible.builtin.copy",
                   {"dest": DROP_IN, "content": UNCONFINED, "mode": "0644"})
    on_workers(inventory, "ansible.builtin.systemd_service",
               {"name": "jobqueue-worker", "state": "restarted", "daemon_reload": True})


def submit_trivial(client: Client) -> str:
    return client.submit({"main.py": b"pass\n"}, {"entry": "main.py"})["id"]


def times_on_worker(done: list[dict]) -> list[float]:
    """Each job's started_at to finished_at, once every one of them has succeeded."""
    failed = [j for j in done if j["state"] != "succeeded"]
    if failed:
        raise SystemExit(f"{len(failed)} jobs did not succeed, e.g. {failed[0]}")
    return [seconds(j["started_at"], j["finished_at"]) for j in done]


def run_batch(client: Client, jobs: int) -> dict:
    # One job first: the restarted workers are claiming (and past their self-check).
    client.wait(submit_trivial(client), timeout=600)
    start = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(lambda _: submit_trivial(client), range(jobs)))
    done = [client.wait(job_id, timeout=1800, interval=0.5) for job_id in ids]
    elapsed = time.monotonic() - start
    on_worker = times_on_worker(done)
    return {"jobs_per_s": jobs / elapsed, "elapsed_s": elapsed,
            "worker_median_s": statistics.median(on_worker),
            "worker_p95_s": percentile(on_worker, 95)}


def run_one_by_one(client: Client, jobs: int) -> float:
    """The median time on the worker of trivial jobs submitted one after another, each
    once the last has ended: what a user sees of a cluster with nothing else to do."""
    done = [client.wait(submit_trivial(client), timeout=600, interval=0.2)
            for _ in range(jobs)]
    return statistics.median(times_on_worker(done))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-i", "--inventory", help=INVENTORY_HELP)
    parser.add_argument("--client", default="build/admin-client.toml")
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--alone", type=int, default=8,
                        help="jobs run one at a time after the batch")
    args = parser.parse_args()
    inventory = Inventory(args.inventory)
    with open(args.client, "rb") as fh:
        config = tomllib.load(fh)
    client = Client(config["url"], config["token"], config.get("ca_bundle"))
    results = {}
    try:
        for label, confined in (("confined", True), ("unconfined", False)):
            set_confined(inventory, confined)
            results[label] = run_batch(client, args.jobs)
            results[label]["alone_median_s"] = run_one_by_one(client, args.alone)
            print(f"{label:11s} {results[label]}", flush=True)
    finally:
        set_confined(inventory, True)
    on, off = results["confined"], results["unconfined"]
    print(f"\n{'':11s} {'jobs/s':>8s} {'on worker p50':>14s} {'p95':>8s} {'alone p50':>10s}"
          f"   ({args.jobs} trivial jobs at once, then {args.alone} one at a time)")
    for label, r in results.items():
        print(f"{label:11s} {r['jobs_per_s']:8.2f} {r['worker_median_s']:13.2f}s "
              f"{r['worker_p95_s']:7.2f}s {r['alone_median_s']:9.2f}s")
    print(f"throughput confined/unconfined: {on['jobs_per_s'] / off['jobs_per_s']:.2f}; "
          f"per-job overhead of confinement: "
          f"{on['worker_median_s'] - off['worker_median_s']:+.2f} s (median), "
          f"{on['alone_median_s'] - off['alone_median_s']:+.2f} s one at a time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
