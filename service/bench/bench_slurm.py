"""Benchmark: the slurm backend next to plain `sbatch` on the same Slurm, in one run.

Needs a Slurm on this machine (scripts/test-slurm.sh starts a one-node one and prints
where its slurm.conf is; set SLURM_CONF). Prints, for N trivial jobs submitted at once:
- jobs per second from the first submit until every job has ended, and
- submit -> running latency (p50, p95), one job at a time on an idle cluster,
through the service's HTTPS-less local controller (API submit, reconcile loop, sbatch,
the node's `jobqueue-worker --one-job`, results uploaded) and through plain
`sbatch --wrap true` (what the service adds on top of Slurm).

Usage: SLURM_CONF=... python bench/bench_slurm.py [--jobs 40] [--latency-samples 10]
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from jobqueue.client import Client
from jobqueue.controller.settings import ControllerSettings
from jobqueue.localcluster import LocalCluster, create_users

TRIVIAL = {"main.py": b"pass\n"}
SPEC = {"entry": "main.py", "memory": 64, "walltime": 60}
ENDED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY")


def sh(*args: str) -> str:
    return subprocess.run(args, capture_output=True, text=True, check=True).stdout


def percentiles(values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return f"p50 {statistics.median(ordered):.2f} s, p95 {p95:.2f} s"


# -- plain sbatch ----------------------------------------------------------------------

def sbatch(tmp: str) -> str:
    return sh("sbatch", "--parsable", "--job-name=bench-plain", "--mem=64", "--time=1",
              f"--output={tmp}/plain-%j.out", "--wrap", "true").strip()


def slurm_states(ids: set[str]) -> dict[str, str]:
    out = sh("squeue", "-h", "-t", "all", "-n", "bench-plain", "-o", "%i|%T")
    return {i: s for i, s in (line.split("|") for line in out.split()) if i in ids}


def plain_throughput(n: int, tmp: str) -> float:
    start = time.perf_counter()
    ids = {sbatch(tmp) for _ in range(n)}
    while not all(s in ENDED for s in slurm_states(ids).values()) or \
            len(slurm_states(ids)) < n:
        time.sleep(0.05)
    return n / (time.perf_counter() - start)


def plain_latency(samples: int, tmp: str) -> list[float]:
    values = []
    for _ in range(samples):
        sent = time.perf_counter()
        eid = sbatch(tmp)
        while slurm_states({eid}).get(eid, "PENDING") in ("PENDING", "CONFIGURING"):
            time.sleep(0.02)
        values.append(time.perf_counter() - sent)
        while slurm_states({eid}).get(eid) not in ENDED:
            time.sleep(0.05)
    return values


# -- the service -----------------------------------------------------------------------

def service_run(client: Client, n: int) -> float:
    start = time.perf_counter()
    ids = [client.submit(TRIVIAL, SPEC)["id"] for _ in range(n)]
    for job in client.as_completed(ids):
        if job["state"] != "succeeded":
            raise SystemExit(f"job {job['id']} ended {job['state']}: {job['message']}")
    return n / (time.perf_counter() - start)


def service_latency(client: Client, samples: int) -> list[float]:
    values = []
    for _ in range(samples):
        job = client.wait(client.submit(TRIVIAL, SPEC)["id"])
        values.append((dt.datetime.fromisoformat(job["started_at"])
                       - dt.datetime.fromisoformat(job["created_at"])).total_seconds())
    return values


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--latency-samples", type=int, default=10)
    parser.add_argument("--interval", type=float, default=0.5,
                        help="seconds between the reconcile loop's passes")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        node_config = Path(tmp) / "node-worker.toml"
        settings = ControllerSettings(
            data_dir=f"{tmp}/data", queue_backend="slurm", queue={"slurm": {
                "worker_command": str(Path(sys.executable).parent / "jobqueue-worker"),
                "worker_config": str(node_config), "batch_output": f"{tmp}/slurm-%j.out"}})
        tokens = create_users(settings, ("bench", "user"), ("node", "worker"))
        cluster = LocalCluster(tmp, settings)
        try:
            cluster.write_node_config(node_config, "node", tokens["node"])
            cluster.start_scheduler(args.interval)
            client = Client(cluster.url, tokens["bench"])
            service_latency(client, 1)  # warm up: imports, first sbatch
            rows = [
                ("slurm backend", service_run(client, args.jobs),
                 service_latency(client, args.latency_samples)),
                ("plain sbatch", plain_throughput(args.jobs, tmp),
                 plain_latency(args.latency_samples, tmp)),
            ]
        finally:
            cluster.stop()
    print(f"{args.jobs} trivial jobs at once, then {args.latency_samples} one at a time "
          f"(reconcile pass every {args.interval} s):")
    for name, rate, latency in rows:
        print(f"  {name:14s} {rate:6.2f} jobs/s   submit -> running {percentiles(latency)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
