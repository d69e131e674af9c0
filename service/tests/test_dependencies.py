"""Dependencies (`after`): a job or array waits until the jobs it names have succeeded,
and is cancelled, naming the job, when one of them ends any other way."""

from __future__ import annotations

import pytest

from jobqueue.models import Dependency, Job


def after(stack, *parents, who="alice", **spec):
    return stack.submit_ok(who, spec={"entry": "main.py", "after": list(parents), **spec})


def test_a_job_waits_until_its_parent_succeeded(stack):
    parent = stack.submit_ok()
    child = after(stack, parent["id"][:6])
    assert child["after"] == [parent["id"]]
    claimed = stack.claim_ok()
    assert claimed["id"] == parent["id"]
    assert stack.claim().status_code == 204  # the child waits
    shown = stack.job(child["id"])
    assert shown["pending_reason"] == f"waiting for job {parent['id']}"
    assert stack.upload(parent["id"], claimed["lease"]).status_code == 200
    assert stack.claim_ok()["id"] == child["id"]


def test_a_failed_parent_cancels_its_waiters_and_theirs(stack):
    parent = stack.submit_ok()
    child = after(stack, parent["id"])
    grandchild = after(stack, child["id"])
    bystander = stack.submit_ok()
    claimed = stack.claim_ok()
    stack.upload(parent["id"], claimed["lease"], state="failed", exit_code=1)
    shown = stack.job(child["id"])
    assert shown["state"] == "cancelled" and shown["finished_at"]
    assert shown["message"] == (f"cancelled: it was to run after job {parent['id']}, which "
                                "ended failed")
    shown = stack.job(grandchild["id"])
    assert shown["state"] == "cancelled" and child["id"] in shown["message"]
    assert stack.job(bystander["id"])["state"] == "queued"


def test_cancelling_a_queued_parent_cancels_its_waiters(stack):
    parent = stack.submit_ok()
    child = after(stack, parent["id"])
    stack.http.post(f"/api/v1/jobs/{parent['id']}/cancel", headers=stack.headers("alice"))
    assert stack.job(child["id"])["state"] == "cancelled"
    assert "which ended cancelled" in stack.job(child["id"])["message"]


def test_a_lost_parent_cancels_its_waiters(make_stack):
    stack = make_stack(max_attempts=1)
    parent = stack.submit_ok()
    child = after(stack, parent["id"])
    stack.claim_ok()
    with stack.app.extensions["jobqueue"].session_factory.begin() as session:
        job = session.get(Job, parent["id"])
        job.lease_expires_at = job.lease_expires_at.replace(year=2000)
    stack.backend.sync(force=True)
    assert stack.job(parent["id"])["state"] == "lost"
    assert "which ended lost" in stack.job(child["id"])["message"]


def test_an_array_after_an_array_waits_for_every_task(stack):
    parents = stack.submit_ok(spec={"entry": "main.py", "array": "0-2"})
    single = stack.submit_ok()
    children = after(stack, parents["array"]["id"], single["id"], array="0-1")
    for job_id in children["jobs"]:
        assert sorted(stack.job(job_id)["after"]) == sorted(parents["jobs"] + [single["id"]])
    with stack.app.extensions["jobqueue"].session_factory() as session:
        # One dependency per parent for the whole array, not one per task and parent.
        assert session.query(Dependency).count() == 4
    leases = {}
    for _ in range(4):
        claimed = stack.claim_ok()
        leases[claimed["id"]] = claimed["lease"]
    assert set(leases) == set(parents["jobs"]) | {single["id"]}
    for job_id in list(leases)[:-1]:
        stack.upload(job_id, leases[job_id])
    assert stack.claim().status_code == 204  # one parent still runs
    last = list(leases)[-1]
    stack.upload(last, leases[last])
    assert {stack.claim_ok()["id"], stack.claim_ok()["id"]} == set(children["jobs"])


def test_a_failed_task_cancels_the_array_waiting_on_its_array(stack):
    parents = stack.submit_ok(spec={"entry": "main.py", "array": "0-1"})
    children = after(stack, parents["array"]["id"], array="0-2")
    claimed = stack.claim_ok()
    stack.upload(claimed["id"], claimed["lease"], state="timed_out", exit_code=None)
    summary = stack.http.get(f"/api/v1/arrays/{children['array']['id']}",
                             headers=stack.headers("alice")).get_json()
    assert summary["counts"] == {"cancelled": 3}


def test_a_parent_that_already_succeeded_does_not_hold_a_job(stack):
    parent = stack.submit_ok()
    claimed = stack.claim_ok()
    stack.upload(parent["id"], claimed["lease"])
    child = after(stack, parent["id"])
    assert child["after"] == [parent["id"]]
    assert stack.claim_ok()["id"] == child["id"]


@pytest.mark.parametrize("after_value, status, says", [
    ("abc", 400, "'after' must be a list of job or array ids"),
    ([1], 400, "'after' must be a list of job or array ids"),
    (["a" * 33], 400, "'after' must be a list of job or array ids"),
    (["xyz1"], 400, "spec field 'after': 'xyz1' is not an id (32 hexadecimal characters) "
                    "or the start of one"),
    (["ab"], 400, "spec field 'after': 'ab' is too short: give at least 4 characters of the id"),
    (["0" * 32], 404, "spec field 'after': no job or array '" + "0" * 32 + "'"),
    (["0123"], 404, "no job or array '0123'"),
    (["a"] * 1001, 400, "'after' may hold at most 1000 ids"),
])
def test_bad_after_is_refused_naming_the_field(stack, after_value, status, says):
    response = stack.submit(spec={"entry": "main.py", "after": after_value})
    assert response.status_code == status, response.get_json()
    assert says in response.get_json()["message"]
    assert stack.jobs() == [] and list(stack.files.root.iterdir()) == []


def test_after_another_users_job_is_not_found(stack):
    theirs = stack.submit_ok("bob")
    response = stack.submit(spec={"entry": "main.py", "after": [theirs["id"]]})
    assert response.status_code == 404 and response.get_json()["error"] == "not_found"
    assert stack.jobs() == []
    assert after(stack, theirs["id"], who="root")["after"] == [theirs["id"]]  # an admin may


def test_after_a_job_that_already_failed_is_refused(stack):
    parent = stack.submit_ok()
    claimed = stack.claim_ok()
    stack.upload(parent["id"], claimed["lease"], state="failed", exit_code=2)
    response = stack.submit(spec={"entry": "main.py", "after": [parent["id"]]})
    assert response.status_code == 409
    body = response.get_json()
    assert body["error"] == "dependency_failed" and parent["id"] in body["message"]
    assert [j["id"] for j in stack.jobs()] == [parent["id"]]


def test_an_ambiguous_start_of_an_id_is_refused(stack):
    made = stack.submit_ok()
    with stack.app.extensions["jobqueue"].session_factory.begin() as session:
        job = session.get(Job, made["id"])
        for twin in ("abcd" + "0" * 28, "abcd" + "1" * 28):
            session.add(Job(id=twin, owner_id=job.owner_id, name="twin", entry="main.py",
                            walltime=60, memory=64, output_limit=1))
    response = stack.submit(spec={"entry": "main.py", "after": ["abcd"]})
    assert response.status_code == 409 and "give more of the id" in \
        response.get_json()["message"]
    assert after(stack, "abcd1")["after"] == ["abcd" + "1" * 28]


# -- end to end -------------------------------------------------------------------------

PARENT = """\
import sys, time
time.sleep(1)
open("made-by-parent.txt", "w").write("x")
sys.exit(int(sys.argv[1]))
"""


@pytest.mark.e2e
def test_a_dependent_job_runs_after_its_parent_and_not_after_a_failure(cluster):
    c = cluster()
    c.start_worker("w1", cpus=2)
    good = c.submit(PARENT, args=["0"])
    bad = c.submit(PARENT, args=["3"])
    after_good = c.client.submit({"main.py": b"print('after')\n"},
                                 {"entry": "main.py", "after": [good]})["id"]
    after_bad = c.client.submit({"main.py": b"print('never')\n"},
                                {"entry": "main.py", "after": [bad, good]})["id"]
    done = c.client.wait(after_good, timeout=60, interval=0.1)
    parent = c.client.get(good)
    assert done["state"] == "succeeded", c.logs()
    assert done["started_at"] >= parent["finished_at"]
    cancelled = c.client.wait(after_bad, timeout=60, interval=0.1)
    assert cancelled["state"] == "cancelled" and cancelled["started_at"] is None
    assert cancelled["message"] == (f"cancelled: it was to run after job {bad}, which ended "
                                    "failed")
