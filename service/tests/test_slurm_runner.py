"""The remote-cluster mode end to end: a dispatcher controller, and a worker daemon on
a cluster's submit host (here) with `runner = "slurm"` that claims at most
`slurm_max_jobs` jobs and runs each through the cluster's own Slurm (the one-node
Slurm scripts/test-slurm.sh starts; this machine is submit host and node at once, so
they share the work directory as an HPC cluster's nodes share a filesystem)."""

from __future__ import annotations

import datetime as dt

import pytest

from conftest import slurm
from jobqueue.worker.runner import Limits, RunRequest
from jobqueue.worker.slurm_runner import batch_script


@pytest.fixture
def remote(cluster, local_slurm):
    c = cluster()
    c.start_worker("w1", cpus=4, runner="slurm", slurm_max_jobs=2)
    return c


def test_the_batch_script_carries_the_environment_quoted():
    request = RunRequest("j", "/tmp", ["python3", "main.py", "it's", "$HOME"],
                         Limits(walltime=60, cpu_seconds=60, memory_bytes=1 << 28),
                         "/tmp/o", "/tmp/e", {"JOBQUEUE_JOB_ID": "j", "ODD": "a b'c"})
    script = batch_script(request)
    assert "export ODD='a b'\"'\"'c'\n" in script
    assert script.endswith("exec python3 main.py 'it'\"'\"'s' '$HOME'\n")


WRITER = """
import os, sys, time
time.sleep(2)
with open("out.txt", "w") as fh:
    fh.write(f"{sys.argv[1]} {os.environ['JOBQUEUE_CPUS']} {os.environ.get('SLURM_JOB_ID')}")
"""


def test_jobs_run_through_the_clusters_slurm_at_most_max_jobs_at_once(remote):
    c = remote
    ids = [c.submit(WRITER, [str(i)], cpus=1, walltime=60, memory=64) for i in range(5)]
    finals = [c.wait_for(i, lambda j: j["state"] not in ("queued", "running"), 120)
              for i in ids]
    assert [f["state"] for f in finals] == ["succeeded"] * 5, c.logs()
    slurm_ids = set()
    for i, job_id in enumerate(ids):
        index, cpus, slurm_id = c.client.read_file(job_id, "out.txt").decode().split()
        assert (index, cpus) == (str(i), "1")
        slurm_ids.add(slurm_id)
    assert len(slurm_ids) == 5  # each its own Slurm job
    # Never more than slurm_max_jobs running at once (the server's own timestamps).
    spans = [(dt.datetime.fromisoformat(f["started_at"]),
              dt.datetime.fromisoformat(f["finished_at"])) for f in finals]
    most = max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)
    assert most == 2


def test_cancel_and_wall_time_end_the_slurm_job(remote):
    c = remote
    long = c.submit("import time\ntime.sleep(300)\n", walltime=300, memory=64)
    slow = c.submit("import time\ntime.sleep(300)\n", walltime=3, memory=64)
    c.wait_for(long, lambda j: j["state"] == "running", 60)
    c.client.cancel(long)
    assert c.wait_for(long, lambda j: j["state"] == "cancelled", 60)["state"] == "cancelled"
    timed = c.wait_for(slow, lambda j: j["state"] not in ("queued", "running"), 90)
    assert (timed["state"], timed["limit"]) == ("timed_out", "walltime")
    # Neither Slurm job is left running.
    left = slurm("squeue", "-h", "-t", "pending,running", "-o", "%j").split()
    assert not [n for n in left if n in (f"jqw-{long}", f"jqw-{slow}")]
