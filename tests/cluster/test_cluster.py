"""The cluster as a whole (site.yml + run_experiment on a controller and two
workers): the experiment's checked results are on the control machine, and the
workers share the queue. Each worker's own checks are in tests/worker."""

import json

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


def test_every_worker_takes_a_share_of_the_queue_confined(admin, worker_names):
    # One CPU per worker VM: while each runs one of these, it can take no
    # other, so two one-CPU jobs submitted together run on two workers.
    spec = {"entry": "run.py", "args": [], "cpus": 1, "walltime": 300}
    ids = [submit(admin, {**spec, "name": f"verify-share-{n}"}, [("run.py", SHARE_JOB)])
           for n in range(len(worker_names))]
    jobs = [wait(admin, job_id) for job_id in ids]
    assert [job["state"] for job in jobs] == ["succeeded"] * len(ids)
    assert {job["worker"] for job in jobs} == worker_names
    for job_id in ids:
        stdout = admin.get(f"{admin.base}/jobs/{job_id}/log", timeout=30).json()["stdout"]
        assert stdout == "token: PermissionError\n", stdout
