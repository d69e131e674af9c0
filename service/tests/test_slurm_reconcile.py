"""The slurm backend's state mapping and reconcile pass, against a scripted Slurm: the
commands' answers in Slurm's own formats, the controller and its database real. The
same backend against a real Slurm: test_slurm.py."""

from __future__ import annotations

import itertools

import pytest

from jobqueue.queue.batch import MISSING_PASSES, SchedulerError
from jobqueue.queue.slurm import SlurmQueue
from jobqueue.scheduler_states import SLURM_STATES, Outcome, slurm_outcome


@pytest.mark.parametrize("state, outcome", sorted(SLURM_STATES.items()))
def test_every_slurm_state_has_its_meaning(state, outcome):
    assert slurm_outcome(state) == (outcome, "")


@pytest.mark.parametrize("state, expected", [
    ("CANCELLED by 1000", (Outcome.CANCELLED, "uid 1000")),
    ("CANCELLED+", (Outcome.CANCELLED, "")),
    ("OUT_OF_MEMORY", (Outcome.OUT_OF_MEMORY, "")),
    ("NODE_FAIL", (Outcome.FAILED, "")),
    ("PREEMPTED", (Outcome.FAILED, "")),
    ("TIMEOUT", (Outcome.TIMED_OUT, "")),
    # A word this version does not know must never pass for a success.
    ("SOMETHING_NEW", (Outcome.FAILED, "")),
])
def test_states_with_details_and_unknown_words(state, expected):
    assert slurm_outcome(state) == expected


def test_only_completed_means_done():
    assert [s for s, o in SLURM_STATES.items() if o is Outcome.DONE] == ["COMPLETED"]


class ScriptedSlurm:
    """sbatch, squeue, sacct and scancel answering from a table of jobs. `forget` drops
    a job from squeue (after MinJobAge) but keeps it in sacct; `vanish` from both."""

    def __init__(self) -> None:
        self.jobs: dict[str, dict] = {}
        self.ids = itertools.count(100)
        self.calls: list[tuple[str, tuple[str, ...]]] = []
        self.sbatch_error = ""  # what sbatch writes to stderr when it fails

    def run(self, name: str, *args: str, stdin: str | None = None) -> str:
        self.calls.append((name, args))
        if name == "sbatch" and self.sbatch_error:
            raise SchedulerError(f"sbatch: {self.sbatch_error}")
        if name == "sbatch":
            eid = str(next(self.ids))
            job_name = next(a for a in args if a.startswith("--job-name=")).split("=", 1)[1]
            self.jobs[eid] = {"name": job_name, "state": "PENDING", "reason": "Priority",
                              "node": "", "squeue": True, "sacct": True, "args": args,
                              "script": stdin}
            return f"{eid}\n"
        if name == "squeue":
            return "".join(f"{eid}|{j['name']}|{j['state']}|{j['reason']}|{j['node']}\n"
                           for eid, j in self.jobs.items() if j["squeue"])
        if name == "sacct":
            wanted = next(a for a in args if a.startswith("--jobs=")).split("=", 1)[1]
            return "".join(f"{eid}|{j['name']}|{j['state']}|{j['node']}\n"
                           for eid, j in self.jobs.items()
                           if eid in wanted.split(",") and j["sacct"])
        if name == "scancel":
            for eid in args:
                self.jobs[eid]["state"] = "CANCELLED by 0"
            return ""
        raise AssertionError(name)

    def set(self, eid: str, state: str, node: str = "node1") -> None:
        self.jobs[eid].update(state=state, node=node, reason="None")

    def count(self, name: str) -> int:
        return sum(1 for called, _ in self.calls if called == name)


@pytest.fixture
def slurm(make_stack, monkeypatch):
    stack = make_stack(queue_backend="slurm", max_attempts=2, lease_seconds=30)
    assert isinstance(stack.backend, SlurmQueue)
    scripted = ScriptedSlurm()
    monkeypatch.setattr(stack.backend, "_run", scripted.run)
    return stack, scripted


def start(stack, job_id, eid, who="w1"):
    return stack.http.post(f"/api/v1/worker/jobs/{job_id}/start",
                           json={"worker": who, "external_id": eid}, headers=stack.headers(who))


def test_a_job_becomes_a_slurm_job_with_its_resources(slurm):
    stack, scripted = slurm
    job = stack.submit_ok(spec={"entry": "main.py", "cpus": 2, "memory": 300, "walltime": 600})
    stack.backend.reconcile()
    (eid, sent), = scripted.jobs.items()
    assert sent["name"] == f"jq-{job['id']}"
    # The job's memory and the node process' reserve (WORKER_MEMORY_MIB); its wall time
    # and the upload's grace, in minutes.
    for arg in ("--cpus-per-task=2", "--mem=428", "--time=12", "--no-requeue", "--export=NIL"):
        assert arg in sent["args"]
    assert f"--one-job {job['id']}" in sent["script"]
    seen = stack.job(job["id"])
    assert seen["state"] == "queued" and f"job {eid}: pending (Priority)" in seen["message"]
    stack.backend.reconcile()
    assert scripted.count("sbatch") == 1  # submitted once


def test_a_slurm_that_cannot_be_reached_gets_the_job_on_a_later_pass(slurm):
    stack, scripted = slurm
    job = stack.submit_ok(spec={"entry": "main.py"})
    scripted.sbatch_error = ("sbatch: error: Batch job submission failed: Unable to contact "
                             "slurm controller (connect failure)")
    stack.backend.reconcile()
    seen = stack.job(job["id"])
    assert seen["state"] == "queued" and "Unable to contact slurm controller" in seen["message"]
    scripted.sbatch_error = ""
    stack.backend.reconcile()
    assert len(scripted.jobs) == 1 and stack.job(job["id"])["state"] == "queued"


@pytest.mark.parametrize("error", [
    "sbatch: error: Memory specification can not be satisfied\nsbatch: error: Batch job "
    "submission failed: Requested node configuration is not available",
    "sbatch: error: Batch job submission failed: Invalid partition name specified",
])
def test_a_job_slurm_can_never_run_ends_failed_with_slurms_words(slurm, error):
    stack, scripted = slurm
    job = stack.submit_ok(spec={"entry": "main.py", "memory": 4096})
    waiter = stack.submit_ok(spec={"entry": "main.py", "after": [job["id"]]})
    scripted.sbatch_error = error
    stack.backend.reconcile()
    seen = stack.job(job["id"])
    assert seen["state"] == "failed"
    assert seen["message"].startswith("slurm refused the job: sbatch: ")
    assert error.splitlines()[-1].split(": ")[-1] in seen["message"]
    assert stack.job(waiter["id"])["state"] == "cancelled"  # it can never start
    stack.backend.reconcile()
    assert scripted.count("sbatch") == 1  # not asked again


def test_one_squeue_call_per_pass_whatever_the_number_of_jobs(slurm):
    stack, scripted = slurm
    for _ in range(5):
        stack.submit_ok()
    stack.backend.reconcile()
    before = scripted.count("squeue")
    stack.backend.reconcile()
    assert scripted.count("squeue") - before == 1
    assert scripted.count("sacct") == 0  # squeue still knows them all


def test_success_only_with_results_and_never_inferred(slurm):
    stack, scripted = slurm
    job = stack.submit_ok()
    stack.backend.reconcile()
    eid = next(iter(scripted.jobs))
    scripted.set(eid, "RUNNING")
    answer = start(stack, job["id"], eid)
    assert answer.status_code == 200, answer.get_json()
    lease = answer.get_json()["lease"]
    assert stack.upload(job["id"], lease).status_code == 200
    scripted.set(eid, "COMPLETED")
    stack.backend.reconcile()
    assert stack.job(job["id"])["state"] == "succeeded"

    # Ended COMPLETED but no results arrived: a failed attempt, requeued as a new job.
    other = stack.submit_ok()
    stack.backend.reconcile()
    eid2 = max(scripted.jobs, key=int)
    scripted.set(eid2, "RUNNING")
    assert start(stack, other["id"], eid2).status_code == 200
    scripted.set(eid2, "COMPLETED")
    stack.backend.reconcile()
    seen = stack.job(other["id"])
    assert seen["state"] == "queued" and "without results; requeued" in seen["message"]
    stack.backend.reconcile()
    assert max(scripted.jobs, key=int) != eid2  # a new Slurm job for the next attempt


def test_a_start_by_a_stale_slurm_job_is_refused(slurm):
    stack, scripted = slurm
    job = stack.submit_ok()
    stack.backend.reconcile()
    response = start(stack, job["id"], "999999")
    assert response.status_code == 409 and response.get_json()["message"]
    assert stack.job(job["id"])["state"] == "queued"


@pytest.mark.parametrize("state, ours, limit", [
    ("TIMEOUT", "timed_out", "walltime"),
    ("OUT_OF_MEMORY", "failed", "memory"),
    ("CANCELLED by 1000", "cancelled", None),
])
def test_slurm_limits_and_cancels_end_the_job_with_the_reason(slurm, state, ours, limit):
    stack, scripted = slurm
    job = stack.submit_ok()
    stack.backend.reconcile()
    eid = next(iter(scripted.jobs))
    scripted.set(eid, "RUNNING")
    assert start(stack, job["id"], eid).status_code == 200
    scripted.set(eid, state)
    scripted.jobs[eid]["squeue"] = False  # past MinJobAge: only sacct says who cancelled
    stack.backend.reconcile()
    seen = stack.job(job["id"])
    assert (seen["state"], seen["limit"]) == (ours, limit)
    assert "node1" in seen["message"]
    if state.startswith("CANCELLED"):
        assert "uid 1000" in seen["message"]


@pytest.mark.parametrize("state", ["NODE_FAIL", "PREEMPTED", "FAILED", "BOOT_FAIL"])
def test_node_failures_requeue_then_give_up(slurm, state):
    stack, scripted = slurm  # max_attempts=2
    job = stack.submit_ok()
    for attempt in (1, 2):
        stack.backend.reconcile()
        eid = max(scripted.jobs, key=int)
        scripted.set(eid, "RUNNING")
        assert start(stack, job["id"], eid).status_code == 200
        scripted.set(eid, state)
        stack.backend.reconcile()
        seen = stack.job(job["id"])
        assert seen["attempts"] == attempt
    assert seen["state"] == "lost" and state in seen["message"]


def test_slurm_jobs_that_fail_before_ours_starts_use_up_the_attempts(slurm):
    stack, scripted = slurm  # max_attempts=2
    job = stack.submit_ok()
    for attempt in (1, 2):
        stack.backend.reconcile()
        scripted.set(max(scripted.jobs, key=int), "BOOT_FAIL")
        stack.backend.reconcile()
        assert stack.job(job["id"])["attempts"] == attempt
    seen = stack.job(job["id"])
    assert seen["state"] == "failed" and "BOOT_FAIL" in seen["message"]
    assert scripted.count("sbatch") == 2


def test_forgotten_by_squeue_asks_sacct_once_per_pass(slurm):
    stack, scripted = slurm
    jobs = [stack.submit_ok() for _ in range(3)]
    stack.backend.reconcile()
    for eid in scripted.jobs:
        scripted.set(eid, "NODE_FAIL")
        scripted.jobs[eid]["squeue"] = False
    stack.backend.reconcile()
    assert scripted.count("sacct") == 1
    assert {stack.job(j["id"])["state"] for j in jobs} == {"queued"}
    assert {stack.job(j["id"])["attempts"] for j in jobs} == {1}


def test_a_job_slurm_no_longer_knows_counts_as_failed_only_after_some_passes(slurm):
    stack, scripted = slurm
    job = stack.submit_ok()
    stack.backend.reconcile()
    eid = next(iter(scripted.jobs))
    scripted.jobs[eid].update(squeue=False, sacct=False)
    for _ in range(MISSING_PASSES - 1):
        stack.backend.reconcile()
        assert stack.job(job["id"])["attempts"] == 0
    stack.backend.reconcile()
    seen = stack.job(job["id"])
    assert seen["attempts"] == 1 and "vanished" in seen["message"]


def test_cancel_of_a_pending_job_is_carried_out_in_slurm(slurm):
    stack, scripted = slurm
    job = stack.submit_ok()
    stack.backend.reconcile()
    eid = next(iter(scripted.jobs))
    response = stack.http.post(f"/api/v1/jobs/{job['id']}/cancel", headers=stack.headers("alice"))
    assert response.status_code == 200
    stack.backend.reconcile()
    assert stack.job(job["id"])["state"] == "cancelled"
    assert ("scancel", (eid,)) in scripted.calls
    assert start(stack, job["id"], eid).status_code == 409  # it never starts


def running_in_slurm(stack, scripted) -> tuple[dict, str, str]:
    """A job handed to Slurm and started on its node: the job, its Slurm id, its lease."""
    job = stack.submit_ok()
    stack.backend.reconcile()
    eid = next(iter(scripted.jobs))
    scripted.set(eid, "RUNNING")
    return job, eid, start(stack, job["id"], eid).get_json()["lease"]


def test_the_old_slurm_job_of_a_requeued_attempt_is_killed(slurm):
    stack, scripted = slurm
    job, eid, lease = running_in_slurm(stack, scripted)
    # Its node's process hands it back (shutting down) while Slurm still runs it.
    response = stack.http.post(f"/api/v1/worker/jobs/{job['id']}/release",
                               json={"lease": lease}, headers=stack.headers("w1"))
    assert response.status_code == 200
    stack.backend.reconcile()
    assert ("scancel", (eid,)) in scripted.calls
    assert len(scripted.jobs) == 2  # and a new one for the job


def test_a_job_requeued_by_its_owner_gets_a_new_slurm_job_and_the_old_is_killed(slurm):
    stack, scripted = slurm
    job, eid, lease = running_in_slurm(stack, scripted)
    response = stack.http.post(f"/api/v1/jobs/{job['id']}/requeue", headers=stack.headers("alice"))
    assert response.status_code == 200 and response.get_json()["state"] == "queued"
    assert stack.heartbeat(job["id"], lease).status_code == 409  # the node stops it
    stack.backend.reconcile()
    assert ("scancel", (eid,)) in scripted.calls
    (new_eid, sent), = ((e, j) for e, j in scripted.jobs.items() if e != eid)
    assert sent["name"] == f"jq-{job['id']}"
    assert start(stack, job["id"], eid).status_code == 409  # the old one never starts again
    assert start(stack, job["id"], new_eid).status_code == 200


def test_claims_are_refused_with_a_reason(slurm):
    stack, _ = slurm
    response = stack.claim()
    assert response.status_code == 409
    assert "slurm" in response.get_json()["message"]


def test_start_needs_the_scheduler_job_id(slurm):
    stack, _ = slurm
    job = stack.submit_ok()
    for body in ({"worker": "w1"}, {"worker": "w1", "external_id": 5},
                 {"worker": "w2", "external_id": "1"}):
        response = stack.http.post(f"/api/v1/worker/jobs/{job['id']}/start", json=body,
                                   headers=stack.headers("w1"))
        assert 400 <= response.status_code < 500 and response.get_json()["message"]


def test_start_is_refused_by_the_dispatcher(make_stack):
    stack = make_stack()
    job = stack.submit_ok()
    response = stack.http.post(f"/api/v1/worker/jobs/{job['id']}/start",
                               json={"worker": "w1", "external_id": "1"},
                               headers=stack.headers("w1"))
    assert response.status_code == 409


def test_a_job_waiting_for_another_is_handed_to_slurm_only_once_that_succeeded(slurm):
    stack, scripted = slurm
    parent = stack.submit_ok()
    child = stack.submit_ok(spec={"entry": "main.py", "after": [parent["id"]]})
    stack.backend.reconcile()
    assert [j["name"] for j in scripted.jobs.values()] == [f"jq-{parent['id']}"]
    eid = next(iter(scripted.jobs))
    scripted.set(eid, "RUNNING")
    lease = start(stack, parent["id"], eid).get_json()["lease"]
    assert stack.upload(parent["id"], lease).status_code == 200
    stack.backend.reconcile()
    assert f"jq-{child['id']}" in [j["name"] for j in scripted.jobs.values()]


def test_a_parent_ended_by_slurm_cancels_its_waiters(slurm):
    stack, scripted = slurm
    parent = stack.submit_ok()
    child = stack.submit_ok(spec={"entry": "main.py", "after": [parent["id"]]})
    stack.backend.reconcile()
    eid = next(iter(scripted.jobs))
    scripted.set(eid, "RUNNING")
    assert start(stack, parent["id"], eid).status_code == 200
    scripted.set(eid, "OUT_OF_MEMORY")
    stack.backend.reconcile()
    seen = stack.job(child["id"])
    assert seen["state"] == "cancelled" and parent["id"] in seen["message"]
    assert len(scripted.jobs) == 1  # the waiter never reached Slurm


def test_an_array_limit_bounds_what_is_handed_to_slurm(slurm):
    stack, scripted = slurm
    answer = stack.submit(spec={"entry": "main.py", "array": "0-3%2"})
    assert answer.status_code == 201, answer.get_json()
    stack.backend.reconcile()
    assert len(scripted.jobs) == 2
    first = min(scripted.jobs, key=int)
    job_id = scripted.jobs[first]["name"].removeprefix("jq-")
    scripted.set(first, "RUNNING")
    lease = start(stack, job_id, first).get_json()["lease"]
    assert stack.upload(job_id, lease).status_code == 200
    stack.backend.reconcile()
    assert len(scripted.jobs) == 3
