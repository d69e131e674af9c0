"""The cluster as a whole (site.yml + run_experiment on a controller and two
workers): the experiment's checked results are on the control machine, and the
workers share the queue. Each worker's own checks are in tests/worker."""

import json
import os

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


def test_every_worker_takes_a_share_of_the_queue_confined(admin, worker_names):
    # As many one-CPU jobs as the workers have CPUs, submitted together: they
    # can all run at once only if every worker takes its share.
    spec = {"entry": "run.py", "args": [], "cpus": 1, "walltime": 300}
    slots = sum(offered_cpus(name) for name in worker_names)
    ids = [submit(admin, {**spec, "name": f"verify-share-{n}"}, [("run.py", SHARE_JOB)])
           for n in range(slots)]
    jobs = [wait(admin, job_id) for job_id in ids]
    assert [job["state"] for job in jobs] == ["succeeded"] * len(ids)
    assert {job["worker"] for job in jobs} == worker_names
    for job_id in ids:
        stdout = admin.get(f"{admin.base}/jobs/{job_id}/log", timeout=30).json()["stdout"]
        assert stdout == "token: PermissionError\n", stdout


IN_ENVIRONMENT = b"""
import sys
import six
try:
    open(sys.prefix + "/planted", "w")
    print("wrote into the environment")
except OSError as exc:
    print(six.__version__, sys.prefix, type(exc).__name__)
"""

SWEEP_TASK = b"""
import os
open("out.txt", "w").write(str(int(os.environ["JOBQUEUE_ARRAY_TASK_ID"]) ** 2))
"""

MERGE = b"""
import pathlib
print(sum(int(p.read_text()) for p in pathlib.Path(".").glob("*/*/out.txt")))
"""


def test_environments_and_a_sweep_then_merge_pipeline(admin):
    """The inventory's environment (jobqueue_environments: six, which the worker's own
    Python lacks) serves a job that names it, read-only; a job without it cannot import
    six. A sweep's merge step reads every task's result (inputs_from)."""
    base = {"entry": "run.py", "walltime": 300}
    in_env = submit(admin, {**base, "environment": "analysis"}, [("run.py", IN_ENVIRONMENT)])
    no_env = submit(admin, base, [("run.py", IN_ENVIRONMENT)])
    sweep = admin.post(f"{admin.base}/jobs", data={"spec": json.dumps({**base, "array": "0-3"})},
                       files=[("files", ("run.py", SWEEP_TASK))], timeout=60)
    assert sweep.status_code == 201, sweep.text
    array_id = sweep.json()["array"]["id"]
    merge = submit(admin, {**base, "inputs_from": [array_id]}, [("run.py", MERGE)])

    def log(job_id):
        return admin.get(f"{admin.base}/jobs/{job_id}/log", timeout=30).json()

    assert wait(admin, in_env)["state"] == "succeeded", log(in_env)
    assert log(in_env)["stdout"].split() == ["1.16.0", "/opt/jobqueue/envs/analysis",
                                             "PermissionError"]
    assert wait(admin, no_env)["state"] == "failed"
    assert "ModuleNotFoundError: No module named 'six'" in log(no_env)["stderr"]
    assert wait(admin, merge)["state"] == "succeeded", log(merge)
    assert log(merge)["stdout"] == f"{0 + 1 + 4 + 9}\n"
