"""Benchmark: the slurm backend next to plain `sbatch` on the same Slurm, in one run.

Needs a Slurm on this machine (scripts/test-slurm.sh starts a one-node one and prints
where its slurm.conf is; set SLURM_CONF). Prints, for N trivial jobs submitted at once:
- jobs per second from the first submit until every job has ended, and
- submit -> running latency (p50, p95), one job at a time on an idle cluster,
through the service's HTTPS-less local controller (API submit, reconcile loop, sbatch,
the node's `jobqueue-worker --one-job`, results uploaded) and through plain
`sbatch --wrap true` (what the service adds on top of Slurm).

Usage: SLURM_CONF=... python bench/bench_slurm.py [--jobs 40] [--latency-samples 10]
   or, on a cluster deployed in Slurm mode (VMs: the slurm scenario, make cluster
   QUEUE=slurm): python bench/bench_slurm.py --client build/admin-client.toml
   --inventory INVENTORY (the service through its HTTPS API from here; plain sbatch run
   on the controller host by this same script, as the service's Slurm user).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TRIVIAL = {"main.py": b"pass\n"}
SPEC = {"entry": "main.py", "memory": 64, "walltime": 60}
ENDED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY")


def sh(*args: str) -> str:
    return subprocess.run(args, capture_output=True, text=True, check=True).stdout


def percentiles(values: list[float]) -> str:
    from stats import percentile  # here, not on the controller host (--plain-only)

    return f"p50 {statistics.median(values):.2f} s, p95 {percentile(values, 95):.2f} s"


# -- plain sbatch ----------------------------------------------------------------------

def sbatch() -> str:
    return sh("sbatch", "--parsable", "--job-name=bench-plain", "--mem=64", "--time=1",
              "--output=/dev/null", "--chdir=/tmp", "--wrap", "true").strip()


def slurm_states(ids: set[str]) -> dict[str, str]:
    out = sh("squeue", "-h", "-t", "all", "-n", "bench-plain", "-o", "%i|%T")
    return {i: s for i, s in (line.split("|") for line in out.split()) if i in ids}


def plain_throughput(n: int) -> float:
    start = time.perf_counter()
    ids = {sbatch() for _ in range(n)}
    while not all(s in ENDED for s in slurm_states(ids).values()) or \
            len(slurm_states(ids)) < n:
        time.sleep(0.05)
    return n / (time.perf_counter() - start)


def plain_latency(samples: int) -> list[float]:
    values = []
    for _ in range(samples):
        sent = time.perf_counter()
        eid = sbatch()
        while slurm_states({eid}).get(eid, "PENDING") in ("PENDING", "CONFIGURING"):
            time.sleep(0.02)
        values.append(time.perf_counter() - sent)
        while slurm_states({eid}).get(eid) not in ENDED:
            time.sleep(0.05)
    return values


# -- the service -----------------------------------------------------------------------

def service_run(client, n: int) -> float:
    start = time.perf_counter()
    ids = [client.submit(TRIVIAL, SPEC)["id"] for _ in range(n)]
    for job in client.as_completed(ids):
        if job["state"] != "succeeded":
            raise SystemExit(f"job {job['id']} ended {job['state']}: {job['message']}")
    return n / (time.perf_counter() - start)


def service_latency(client, samples: int) -> list[float]:
    from stats import seconds

    values = []
    for _ in range(samples):
        job = client.wait(client.submit(TRIVIAL, SPEC)["id"])
        values.append(seconds(job["created_at"], job["started_at"]))
    return values


def local_rows(args) -> list:
    """A controller and the reconcile loop here, on the local Slurm."""
    from jobqueue.client import Client
    from jobqueue.controller.settings import ControllerSettings
    from jobqueue.localcluster import LocalCluster, create_users

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
            return [("slurm backend", service_run(client, args.jobs),
                     service_latency(client, args.latency_samples)),
                    ("plain sbatch", plain_throughput(args.jobs),
                     plain_latency(args.latency_samples))]
        finally:
            cluster.stop()


def deployed_rows(args) -> list:
    """The deployed service from here; plain sbatch on its controller host."""
    import tomllib

    from jobqueue.client import Client

    with open(args.client, "rb") as fh:
        conf = tomllib.load(fh)
    client = Client(conf["url"], conf["token"], conf.get("ca_bundle", ""))
    service_latency(client, 1)
    service = ("slurm backend", service_run(client, args.jobs),
               service_latency(client, args.latency_samples))
    # The ansible of this interpreter's environment, on PATH or not.
    ansible = Path(sys.executable).with_name("ansible")
    command = [str(ansible) if ansible.exists() else "ansible", "controllers",
               "-i", args.inventory, "-b", "--become-user", args.slurm_user,
               "-m", "ansible.builtin.script", "-a",
               f"{Path(__file__).resolve()} --plain-only --jobs {args.jobs} "
               f"--latency-samples {args.latency_samples} executable=/usr/bin/python3"]
    out = subprocess.run(command, capture_output=True, text=True, check=True,
                         env={**os.environ, "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
                              "ANSIBLE_STDOUT_CALLBACK": "json",
                              # Mitogen's become runs the user's shell: the service
                              # account's is nologin.
                              "ANSIBLE_STRATEGY": "linear"}).stdout
    # The JSON report, after whatever other callbacks (a task timer) printed first.
    report, _ = json.JSONDecoder().raw_decode(out, out.index("{"))
    result = next(iter(report["plays"][0]["tasks"][0]["hosts"].values()))
    plain = json.loads(result["stdout"].strip().splitlines()[-1])
    return [service, ("plain sbatch", plain["rate"], plain["latency"])]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--latency-samples", type=int, default=10)
    parser.add_argument("--interval", type=float, default=0.5,
                        help="local run: seconds between the reconcile loop's passes")
    parser.add_argument("--client", help="a deployed cluster's client file (admin-client.toml)")
    parser.add_argument("--inventory", help="with --client: its inventory")
    parser.add_argument("--slurm-user", default="jobqueue",
                        help="with --client: the user the service submits as")
    parser.add_argument("--plain-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plain_only:  # on the controller host, for deployed_rows
        print(json.dumps({"rate": plain_throughput(args.jobs),
                          "latency": plain_latency(args.latency_samples)}))
        return 0
    rows = deployed_rows(args) if args.client else local_rows(args)
    where = f"the cluster of {args.client}" if args.client else "the local Slurm"
    print(f"{args.jobs} trivial jobs at once, then {args.latency_samples} one at a time, "
          f"on {where}:")
    for name, rate, latency in rows:
        print(f"  {name:14s} {rate:6.2f} jobs/s   submit -> running {percentiles(latency)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
