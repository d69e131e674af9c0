"""The slurm backend end to end against a real Slurm (slurmctld, slurmd and munge on
this machine, started by scripts/test-slurm.sh, which sets SLURM_CONF): a controller
process with queue_backend = "slurm", its reconcile loop in a process of its own, and
every job run by Slurm through `jobqueue-worker --one-job` (the plain runner here; the
VMs run the confined one)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import Cluster, slurm

pytestmark = pytest.mark.e2e


@pytest.fixture
def slurm_cluster(tmp_path, local_slurm):
    node_config = tmp_path / "node-worker.toml"
    cluster = Cluster(tmp_path, f"sqlite:///{tmp_path}/jobqueue.db", queue_backend="slurm",
                      lease_seconds=6, queue={"slurm": {
                          "worker_command": str(Path(sys.executable).parent / "jobqueue-worker"),
                          "worker_config": str(node_config),
                          "batch_output": str(tmp_path / "slurm-%j.out")}})
    cluster.write_node_config(node_config, "w1", cluster.tokens["w1"], heartbeat_seconds=0.5)
    cluster.start_scheduler()
    yield cluster
    cluster.stop()


def slurm_id(job: dict) -> str:
    words = job["message"].split()
    return words[words.index("job") + 1].rstrip(":")


MAPPER = """
import json, os
from jobqueue import mapper

def square(x):
    return x * x

if __name__ == "__main__":
    cpus = int(os.environ["JOBQUEUE_CPUS"])
    with open("squares.json", "w") as fh:
        json.dump({"cpus": cpus, "squares": mapper.map(square, range(20))}, fh)
"""


def test_a_mapper_job_runs_under_slurm_on_two_cpus(slurm_cluster):
    c = slurm_cluster
    job_id = c.submit(MAPPER, cpus=2, walltime=120, memory=256)
    queued = c.wait_for(job_id, lambda j: "slurm job" in j["message"], 30)
    eid = slurm_id(queued)
    done = c.wait_for(job_id, lambda j: j["state"] in ("succeeded", "failed", "lost"), 90)
    assert done["state"] == "succeeded", (done, c.logs())
    # Slurm allocated the job's two CPUs, and the mapper used them.
    shown = slurm("scontrol", "show", "job", eid)
    assert "NumCPUs=2" in shown and f"JobName=jq-{job_id}" in shown
    result = c.client.read_file(job_id, "squares.json").decode()
    assert result == '{"cpus": 2, "squares": ' + str([x * x for x in range(20)]) + "}"


SLEEPER = "import sys, time\nprint('started', flush=True)\ntime.sleep(float(sys.argv[1]))\n"


def test_cancel_a_pending_and_a_running_job(slurm_cluster):
    c = slurm_cluster
    # The node offers 4 CPUs: the first job takes them all, the second waits in Slurm.
    running = c.submit(SLEEPER, ["120"], cpus=4, walltime=300, memory=64)
    pending = c.submit(SLEEPER, ["1"], cpus=2, walltime=300, memory=64)
    c.wait_for(running, lambda j: j["state"] == "running", 60)
    waiting = c.wait_for(pending, lambda j: "pending" in j["message"], 30)
    eid = slurm_id(waiting)
    c.client.cancel(pending)
    cancelled = c.wait_for(pending, lambda j: j["state"] == "cancelled", 30)
    assert cancelled["attempts"] == 0
    c.client.cancel(running)
    assert c.wait_for(running, lambda j: j["state"] == "cancelled", 60)["attempts"] == 1
    # The pending one left Slurm's queue without ever running.
    assert slurm("squeue", "-h", "-t", "all", "-j", eid, "-o", "%T").strip() == "CANCELLED"


def test_a_lost_node_process_is_requeued_and_succeeds_never_falsely(slurm_cluster):
    c = slurm_cluster
    job_id = c.submit(SLEEPER, ["3"], walltime=120, memory=64)
    first = c.wait_for(job_id, lambda j: j["state"] == "running", 60)
    eid = slurm_id(first)
    # The node's worker dies at once (as with a node lost, no SIGTERM first): its
    # Slurm job ends FAILED, without results.
    pid = subprocess.run(["pgrep", "-f", "--", f"--one-job {job_id}"], capture_output=True,
                         text=True, check=True).stdout.split()[0]
    os.kill(int(pid), signal.SIGKILL)
    done = c.wait_for(job_id, lambda j: j["state"] not in ("queued", "running")
                      or j["attempts"] >= 2, 90)
    final = c.wait_for(job_id, lambda j: j["state"] not in ("queued", "running"), 90)
    assert final["state"] == "succeeded" and final["attempts"] == 2, (done, final, c.logs())
    states = dict(line.split("|") for line in slurm(
        "squeue", "-h", "-t", "all", "-n", f"jq-{job_id}", "-o", "%i|%T").split())
    assert states[eid] == "FAILED" and len(states) == 2, states


def test_restarting_the_scheduler_process_loses_nothing(slurm_cluster):
    c = slurm_cluster
    jobs = [c.submit(SLEEPER, ["2"], walltime=120, memory=64) for _ in range(6)]
    for _ in range(3):
        time.sleep(1.5)
        c.workers["scheduler"].kill()  # SIGKILL
        c.workers["scheduler"].wait()
        c.start_scheduler()
    finals = [c.wait_for(j, lambda j: j["state"] not in ("queued", "running"), 120)
              for j in jobs]
    assert [f["state"] for f in finals] == ["succeeded"] * 6, c.logs()
    # Each ran once: one Slurm job per job, none submitted twice.
    names = slurm("squeue", "-h", "-t", "all", "-o", "%j").split()
    assert sorted(n for n in names if n[3:] in jobs) == sorted(f"jq-{j}" for j in jobs)


def test_the_walltime_and_memory_limits_end_the_job(slurm_cluster):
    c = slurm_cluster
    slow = c.submit(SLEEPER, ["60"], walltime=2, memory=64)
    hog = c.submit("x = bytearray(400 << 20)\n", walltime=60, memory=64)
    timed = c.wait_for(slow, lambda j: j["state"] not in ("queued", "running"), 90)
    assert (timed["state"], timed["limit"]) == ("timed_out", "walltime")
    # The plain runner's memory limit is an rlimit: the allocation fails in the job.
    # (Slurm's own cgroup limit, OUT_OF_MEMORY, is mapped in test_slurm_reconcile.py.)
    failed = c.wait_for(hog, lambda j: j["state"] not in ("queued", "running"), 90)
    assert (failed["state"], failed["exit_code"]) == ("failed", 1), failed
    assert "MemoryError" in c.client.log(hog)["stderr"]
