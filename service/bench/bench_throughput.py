"""Benchmark: end-to-end throughput and submit-to-running latency of the job service.

Starts a real controller process and worker processes on this machine, then prints:
- trivial jobs per second with 2 workers, from the first submit through the HTTP API
  until every result is stored;
- submit -> running latency (p50, p95) on an idle queue, from the server's own
  timestamps, one job at a time;
- where each job's time goes: waiting in the queue versus on the worker, and how much
  of the worker's share is the job process itself (prlimit and the tether, then the job);
- beside the throughput, its reference from the same run: how many `python -c pass`
  this machine starts per second, two at a time as the two workers run jobs;
- the array path: N tiny tasks submitted as one job array next to N single
  submissions (`--array-tasks`, default 1000; 0 leaves it out), each from the first
  submit until every result is stored.

Usage: python bench/bench_throughput.py [--jobs 200] [--array-tasks 1000]
       [--database-url URL]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from jobqueue.client import Client
from jobqueue.controller.settings import ControllerSettings
from jobqueue.localcluster import LocalCluster, create_users
from jobqueue.worker.runner import Limits, LocalRunner, RunRequest
from stats import percentile, seconds

TRIVIAL = {"main.py": b"pass\n"}
SPEC = {"entry": "main.py"}


def singles_vs_array(client: Client, count: int) -> dict[str, tuple[float, float]]:
    """(seconds to submit, seconds until every result is stored) for `count` tiny jobs
    submitted one by one (4 at a time, as above), then as one array of `count` tasks.
    Both are waited for as the throughput is: see `wait_until_idle`."""
    timings = {}
    start, start_at = time.perf_counter(), dt.datetime.now(dt.UTC)
    with ThreadPoolExecutor(4) as pool:
        ids = [j["id"] for j in pool.map(lambda _: client.submit(TRIVIAL, SPEC), range(count))]
    submitted = time.perf_counter() - start
    wait_until_idle(client)
    timings["singles"] = (submitted, _last_finish([client.get(i) for i in ids], start_at))

    start, start_at = time.perf_counter(), dt.datetime.now(dt.UTC)
    made = client.submit(TRIVIAL, SPEC, array=f"0-{count - 1}")
    submitted = time.perf_counter() - start
    wait_until_idle(client)
    timings["array"] = (submitted, _last_finish(client.list(array=made["array"]["id"]),
                                                start_at))
    return timings


def wait_until_idle(client: Client, poll: float = 1.0) -> None:
    """Until the bench user has no job queued or running (it has no others). A cheap
    poll (one row each), and the end taken is the last job's finished_at (the server's
    clock, the same machine's): the waiting costs the measured path little."""
    while client.list(state="queued", limit=1) or client.list(state="running", limit=1):
        time.sleep(poll)


def _last_finish(jobs: list[dict], start_at: dt.datetime) -> float:
    """Seconds from `start_at` to the last job's result, once all of them succeeded."""
    failed = [j for j in jobs if j["state"] != "succeeded"]
    if failed:
        raise SystemExit(f"{len(failed)} jobs did not succeed, e.g. {failed[0]}")
    return max(seconds(start_at.isoformat(), j["finished_at"]) for j in jobs)


def runner_overhead(tmp: str) -> float:
    """Median time for the Runner to start a trivial job and see it exit (no HTTP)."""
    job_dir = Path(tmp) / "runner"
    job_dir.mkdir()
    (job_dir / "main.py").write_text("pass\n")
    request = RunRequest("bench", job_dir, [sys.executable, "main.py"],
                         Limits(walltime=30, cpu_seconds=30, memory_bytes=1 << 30),
                         job_dir / "stdout", job_dir / "stderr", {"PATH": "/usr/bin:/bin"})
    runs = []
    for _ in range(20):
        start = time.perf_counter()
        LocalRunner().start(request).wait(None)
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def python_start_rate(count: int) -> float:
    """`python -c pass` per second, `count` of them, two at a time: the most trivial jobs
    could reach on this machine with two workers of one CPU each."""
    def start(_) -> None:
        subprocess.run([sys.executable, "-c", "pass"], check=True)

    begin = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(start, range(count)))
    return count / (time.perf_counter() - begin)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--latency-samples", type=int, default=40)
    parser.add_argument("--array-tasks", type=int, default=1000,
                        help="tasks of the array compared with as many single jobs (0: skip)")
    parser.add_argument("--database-url", default="", help="default: SQLite in a temp dir")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        # One user submits every job here: the per-user limits a lab sets for fairness
        # would measure themselves.
        settings = ControllerSettings(database_url=args.database_url, data_dir=f"{tmp}/data",
                                      max_submits_per_minute=1_000_000,
                                      max_queued_per_user=1_000_000)
        tokens = create_users(settings, ("bench", "user"), ("w1", "worker"), ("w2", "worker"))
        cluster = LocalCluster(tmp, settings)
        client = Client(cluster.url, tokens["bench"])
        try:
            for name in ("w1", "w2"):
                cluster.start_worker(name, tokens[name], cpus=1)
            client.wait(client.submit(TRIVIAL, SPEC)["id"], timeout=60, interval=0.05)  # warm up

            latencies = []
            for _ in range(args.latency_samples):
                job = client.wait(client.submit(TRIVIAL, SPEC)["id"], timeout=60, interval=0.02)
                latencies.append(seconds(job["created_at"], job["started_at"]))

            start, start_at = time.perf_counter(), dt.datetime.now(dt.UTC)
            with ThreadPoolExecutor(4) as pool:
                ids = [j["id"] for j in pool.map(lambda _: client.submit(TRIVIAL, SPEC),
                                                 range(args.jobs))]
            submitted = time.perf_counter() - start
            wait_until_idle(client, poll=0.1)
            jobs = [client.get(i) for i in ids]
            elapsed = _last_finish(jobs, start_at)
            queue_wait = [seconds(j["created_at"], j["started_at"]) for j in jobs]
            on_worker = [seconds(j["started_at"], j["finished_at"]) for j in jobs]
            compared = singles_vs_array(client, args.array_tasks) if args.array_tasks else {}
        finally:
            client.close()
            cluster.stop()
        run_alone = runner_overhead(tmp)
    reference = python_start_rate(args.jobs)

    backend = "PostgreSQL" if args.database_url.startswith("postgresql") else "SQLite"
    print(f"database: {backend}; workers: 2 x 1 CPU; machine CPUs: {len(os.sched_getaffinity(0))}")
    print(f"throughput: {args.jobs} trivial jobs in {elapsed:.2f} s = "
          f"{args.jobs / elapsed:.1f} jobs/s (submitting alone took {submitted:.2f} s)")
    print(f"reference: this machine starts `python -c pass` two at a time at "
          f"{reference:.1f} per second; trivial jobs ran at {args.jobs / elapsed / reference:.0%} "
          f"of that rate")
    print(f"submit->running latency, idle queue ({len(latencies)} jobs): "
          f"p50 {percentile(latencies, 50) * 1000:.1f} ms, "
          f"p95 {percentile(latencies, 95) * 1000:.1f} ms")
    print(f"under load, per job: queue wait median {statistics.median(queue_wait) * 1000:.0f} ms; "
          f"on the worker (claim to result stored) median "
          f"{statistics.median(on_worker) * 1000:.0f} ms, of which running the job process "
          f"(prlimit, tether and job interpreter) takes {run_alone * 1000:.0f} ms and the rest is "
          f"HTTP (input download, result upload, next claim) and database commits")
    for path, (submitted, done) in compared.items():
        what = (f"{args.array_tasks} single jobs" if path == "singles" else
                f"1 array of {args.array_tasks} tasks")
        print(f"{what}: submitted in {submitted:.2f} s, all results stored after {done:.2f} s "
              f"= {args.array_tasks / done:.1f} jobs/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
