"""The cluster as a whole (site.yml + run_experiment on a controller and two
workers): the experiment's checked results are on the control machine, and the
workers share the queue. Each worker's own checks are in tests/worker."""

import json
import os
import time

import pytest
import testinfra
from conftest import build_dir, submit, wait

testinfra_hosts = ["ansible://controllers"]


def test_run_experiment_left_checked_results():
    # build/experiment/<job id>/.../result.json, from the side effect step.
    found = list((build_dir() / "experiment").glob("*/**/result.json"))
    assert found, "run_experiment left no result.json"
    for path in found:
        result = json.loads(path.read_text())
        assert result["n"] == 1000
        assert result["sum"] == sum(x * x for x in range(1000))


# Tries the worker's token (it must fail: site.yml confines every job), then
# holds its worker's only slot for a while.
SHARE_JOB = b"""
import time
try:
    open("/etc/jobqueue/worker.token").read()
    print("token: read")
except OSError as exc:
    print("token:", type(exc).__name__)
time.sleep(20)
"""


def offered_cpus(name: str) -> int:
    """What a worker offers: every CPU of its VM (worker_cpus 0), a slot each."""
    inventory = os.environ["MOLECULE_INVENTORY_FILE"]
    return int(testinfra.get_host(f"ansible://{name}?ansible_inventory={inventory}")
               .check_output("nproc"))


IN_ENVIRONMENT = b"""
import errno, sys
import cryptography
try:
    open(sys.prefix + "/planted", "w")
    print("wrote into the environment")
except OSError as exc:
    print(cryptography.__version__, sys.prefix, errno.errorcode[exc.errno])
"""

SWEEP_TASK = b"""
import os
open("out.txt", "w").write(str((int(os.environ["JOBQUEUE_ARRAY_TASK_ID"]) + 1) ** 2))
"""

MERGE = b"""
import pathlib
print(sum(int(p.read_text()) for p in pathlib.Path(".").glob("*/*/out.txt")))
"""


@pytest.fixture(scope="module")
def submitted(admin, worker_names) -> dict:
    """The module's jobs, submitted together so that they run side by side: first as
    many one-CPU jobs as the workers have CPUs (they take every slot at once only if
    every worker takes its share), then the environment and pipeline jobs, which run
    as the first ones end."""
    base = {"entry": "run.py", "args": [], "cpus": 1, "walltime": 300}
    slots = sum(offered_cpus(name) for name in worker_names)
    ids = {"share": [submit(admin, {**base, "name": f"verify-share-{n}"},
                            [("run.py", SHARE_JOB)]) for n in range(slots)]}
    # Two rounds of the three slots: the sweep's two tasks and the job in the
    # environment, then the merge and the job without it.
    sweep = admin.post(f"{admin.base}/jobs", data={"spec": json.dumps({**base, "array": "0-1"})},
                       files=[("files", ("run.py", SWEEP_TASK))], timeout=60)
    assert sweep.status_code == 201, sweep.text
    ids["in_env"] = submit(admin, {**base, "environment": "analysis"},
                           [("run.py", IN_ENVIRONMENT)])
    ids["merge"] = submit(admin, {**base, "inputs_from": [sweep.json()["array"]["id"]]},
                          [("run.py", MERGE)])
    ids["no_env"] = submit(admin, base, [("run.py", IN_ENVIRONMENT)])
    return ids


def log_of(admin, job_id) -> dict:
    return admin.get(f"{admin.base}/jobs/{job_id}/log", timeout=30).json()


def test_every_worker_takes_a_share_of_the_queue_confined(admin, worker_names, submitted):
    jobs = [wait(admin, job_id) for job_id in submitted["share"]]
    assert [job["state"] for job in jobs] == ["succeeded"] * len(jobs)
    assert {job["worker"] for job in jobs} == worker_names
    for job_id in submitted["share"]:
        stdout = log_of(admin, job_id)["stdout"]
        assert stdout == "token: PermissionError\n", stdout


def test_environments_and_a_sweep_then_merge_pipeline(admin, submitted):
    """The inventory's environment (jobqueue_environments: cryptography, which the
    worker's own Python lacks) serves a job that names it, read-only; a job without it
    cannot import it. A sweep's merge step reads every task's result (inputs_from)."""
    in_env, no_env, merge = submitted["in_env"], submitted["no_env"], submitted["merge"]
    assert wait(admin, in_env)["state"] == "succeeded", log_of(admin, in_env)
    version, prefix, refused = log_of(admin, in_env)["stdout"].split()
    assert (version, prefix) == ("38.0.4", "/opt/jobqueue/envs/analysis")
    assert refused in ("EACCES", "EROFS", "EPERM")  # the unit's and the profile's refusals
    assert wait(admin, no_env)["state"] == "failed"
    assert "ModuleNotFoundError: No module named 'cryptography'" in \
        log_of(admin, no_env)["stderr"]
    assert wait(admin, merge)["state"] == "succeeded", log_of(admin, merge)
    assert log_of(admin, merge)["stdout"] == f"{1 + 4}\n"


def test_idle_workers_wait_in_the_waiting_room(host, worker_names):
    """Each idle worker's claimer waits in the room (one connection from Apache each),
    not in a WSGI thread."""
    deadline = time.monotonic() + 120
    while True:
        with host.sudo():
            connections = host.run("ss -xH state connected").stdout
        parked = connections.count("/run/jobqueue-waiting-room/http.sock")
        if parked >= len(worker_names) or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert parked >= len(worker_names), connections
