"""The service on Slurm (site.yml with jobqueue_queue: slurm): jobs submitted through
the public API become Slurm jobs, run confined on the nodes on the CPUs Slurm gave
them, and end as Slurm and the worker say, never succeeded without their results.

Runs on the controller host (`host`: slurmctld, sacct, the reconcile service)."""

from __future__ import annotations

import json
import os
import time

import pytest
import testinfra
import testinfra.utils.ansible_runner
from conftest import submit, wait

testinfra_hosts = ["ansible://controllers"]
# sacct's states of a job Slurm has not ended yet.
SLURM_ACTIVE = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "RESIZING",
                "SUSPENDED"}


@pytest.fixture(scope="module", autouse=True)
def slurm_backend(host):
    """Only where the controller runs the slurm backend (not roles/slurm's own scenario)."""
    with host.sudo():
        config = host.file("/etc/jobqueue/controller.toml")
        slurm = config.exists and 'queue_backend = "slurm"' in config.content_string
    if not slurm:
        pytest.skip("the controller's queue backend is not slurm here")


def node(name: str):
    inventory = os.environ["MOLECULE_INVENTORY_FILE"]
    return testinfra.get_host(f"ansible://{name}", ansible_inventory=inventory)


def sudo_on(node_host, command: str, attempts: int = 4) -> None:
    """`command` as root on a node. An emulated node busy with a job can be slow to
    answer SSH (its banner exchange times out, ssh exits 255): that is tried again; a
    command that fails is not."""
    for attempt in range(1, attempts + 1):
        result = node_host.run(f"sudo {command}")
        if result.rc != 255 or attempt == attempts:
            break
        time.sleep(10)
    assert result.rc == 0, f"{command}: {result.stderr}"


def node_names() -> list[str]:
    runner = testinfra.utils.ansible_runner.AnsibleRunner(os.environ["MOLECULE_INVENTORY_FILE"])
    return sorted(runner.get_hosts("workers"))


def get(admin, job_id: str) -> dict:
    return admin.get(f"{admin.base}/jobs/{job_id}", timeout=30).json()


def wait_until(admin, job_id: str, predicate, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = get(admin, job_id)
        if predicate(job):
            return job
        time.sleep(2)
    pytest.fail(f"job {job_id} never got there: {job}")


def slurm_job(host, job_id: str) -> dict[str, str]:
    """Every Slurm job of ours for this job: Slurm job id -> its state (sacct)."""
    out = host.check_output(f"sacct --allusers --noheader --parsable2 --allocations --starttime=now-1day "
                            f"--name=jq-{job_id} --format=JobIDRaw,State,AllocCPUS,NodeList")
    return {line.split("|")[0]: line for line in out.splitlines()}


def ended_slurm_jobs(host, job_id: str, timeout: float = 120) -> dict[str, str]:
    """`slurm_job` once Slurm has recorded the end of each: the service has the result
    as soon as the node's process uploaded it, a moment before that process exits."""
    deadline = time.monotonic() + timeout
    while True:
        records = slurm_job(host, job_id)
        states = {line.split("|")[1].split()[0] for line in records.values()}
        if not states & SLURM_ACTIVE or time.monotonic() > deadline:
            return records
        time.sleep(2)


def node_idle(host, name: str, timeout: float = 300) -> None:
    """Wait until Slurm has `name` idle again (a restarted slurmd registers, and
    ReturnToService=2 returns its node; until then Slurm places jobs elsewhere)."""
    deadline = time.monotonic() + timeout
    while (state := host.check_output(f"sinfo --noheader --Node --nodes={name} --format=%T")
           ) != "idle" and time.monotonic() < deadline:
        time.sleep(3)
    assert state == "idle", f"{name} is {state} {timeout:.0f} s after its slurmd started"


MAPPER = b"""
import json, os
from jobqueue import mapper

def square(x):
    return x * x

if __name__ == "__main__":
    with open("squares.json", "w") as fh:
        json.dump({"cpus": int(os.environ["JOBQUEUE_CPUS"]),
                   "squares": mapper.map(square, range(100))}, fh)
"""


def test_a_mapper_job_runs_under_slurm_on_two_cpus(host, admin):
    job_id = submit(admin, {"entry": "map.py", "cpus": 2, "walltime": 300, "memory": 256},
                    [("map.py", MAPPER)])
    job = wait(admin, job_id)
    assert job["state"] == "succeeded", job
    result = json.loads(admin.get(f"{admin.base}/jobs/{job_id}/files/squares.json",
                                  timeout=30).content)
    assert result == {"cpus": 2, "squares": [x * x for x in range(100)]}
    records = ended_slurm_jobs(host, job_id)
    assert len(records) == 1, records
    (record,) = records.values()
    _, state, cpus, where = record.split("|")
    assert (state, cpus) == ("COMPLETED", "2") and where == job["worker"], record


SLEEP = b"import sys, time\ntime.sleep(float(sys.argv[1]))\n"

# Incompressible, so that the packed results are as large as the file.
BIG_RESULTS_MIB = 200
BIG = f"""
import os
with open("big.bin", "wb") as fh:
    for _ in range({BIG_RESULTS_MIB}):
        fh.write(os.urandom(1 << 20))
""".encode()


def test_results_larger_than_the_node_processs_memory_reach_the_controller(admin):
    """Slurm holds the node's process to the job's memory plus the backend's reserve
    (48 + 128 MiB here): the 200 MiB of results are streamed to the controller, never
    held in memory. The upload that built its body in memory was killed for it."""
    job_id = submit(admin, {"entry": "big.py", "memory": 48, "walltime": 600},
                    [("big.py", BIG)])
    job = wait(admin, job_id, 900)
    assert job["state"] == "succeeded", job
    files = admin.get(f"{admin.base}/jobs/{job_id}/files", timeout=60).json()["files"]
    assert {f["path"]: f["size"] for f in files}.get("big.bin") == BIG_RESULTS_MIB << 20


def test_cancel_a_pending_and_a_running_job(host, admin):
    # Two 2-CPU jobs fill both nodes; a third waits in Slurm's queue.
    busy = [submit(admin, {"entry": "s.py", "args": ["240"], "cpus": 2, "walltime": 600,
                           "memory": 64, "name": "fill"}, [("s.py", SLEEP)]) for _ in range(2)]
    for job_id in busy:
        wait_until(admin, job_id, lambda j: j["state"] == "running")
    pending = submit(admin, {"entry": "s.py", "args": ["1"], "cpus": 1, "walltime": 60,
                             "memory": 64}, [("s.py", SLEEP)])
    waiting = wait_until(admin, pending, lambda j: "pending" in j["message"], 120)
    assert waiting["state"] == "queued"
    for job_id in [pending, *busy]:
        assert admin.post(f"{admin.base}/jobs/{job_id}/cancel", timeout=30).status_code == 200
    ended = [wait(admin, job_id, 180) for job_id in [pending, *busy]]
    assert [j["state"] for j in ended] == ["cancelled"] * 3, ended
    assert ended[0]["attempts"] == 0  # it never started
    states = {line.split("|")[1].split()[0] for line in slurm_job(host, pending).values()}
    assert states == {"CANCELLED"}, states  # "CANCELLED by <the service's uid>"


def test_the_wall_time_and_the_memory_limit_end_the_job(admin):
    slow = submit(admin, {"entry": "s.py", "args": ["300"], "walltime": 5, "memory": 64},
                  [("s.py", SLEEP)])
    hog = submit(admin, {"entry": "h.py", "walltime": 120, "memory": 64},
                 [("h.py", b"x = bytearray(512 << 20)\nx[::4096] = b'x' * len(x[::4096])\n")])
    timed, failed = wait(admin, slow, 300), wait(admin, hog, 300)
    assert (timed["state"], timed["limit"]) == ("timed_out", "walltime"), timed
    assert (failed["state"], failed["limit"]) == ("failed", "memory"), failed
    assert "memory" in failed["message"]


def test_a_node_lost_mid_job_requeues_it_elsewhere_never_a_false_success(host, admin):
    job_id = submit(admin, {"entry": "s.py", "args": ["120"], "walltime": 600, "memory": 64,
                            "name": "survivor"}, [("s.py", SLEEP)])
    first = wait_until(admin, job_id, lambda j: j["state"] == "running")
    lost = node(first["worker"])
    sudo_on(lost, "systemctl stop slurmd")
    try:
        final = wait(admin, job_id, 600)
    finally:
        sudo_on(lost, "systemctl start slurmd")
        # Back in service before the next test, which needs both nodes.
        node_idle(host, first["worker"])
    # Whether the lost node's worker was killed or cut off, the job ends done once,
    # elsewhere, by a second Slurm job.
    assert final["state"] == "succeeded", final
    assert final["worker"] != first["worker"]
    states = sorted(line.split("|")[1] for line in ended_slurm_jobs(host, job_id).values())
    assert len(states) == 2 and "COMPLETED" in states, states


def test_restarting_the_reconcile_service_loses_nothing(host, admin):
    ids = [submit(admin, {"entry": "s.py", "args": ["15"], "walltime": 300, "memory": 64,
                          "name": f"restart-{n}"}, [("s.py", SLEEP)]) for n in range(4)]
    for _ in range(2):
        time.sleep(5)
        host.check_output("sudo systemctl restart jobqueue-scheduler")
    jobs = [wait(admin, job_id) for job_id in ids]
    assert [j["state"] for j in jobs] == ["succeeded"] * 4, jobs
    assert [j["attempts"] for j in jobs] == [1] * 4
    assert all(len(slurm_job(host, job_id)) == 1 for job_id in ids)  # none submitted twice
    assert {j["worker"] for j in jobs} == set(node_names())  # Slurm used both nodes
