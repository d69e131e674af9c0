"""Dependencies (`after`): a job or array waits until the jobs it names have ended as
its condition asks (afterok, the default: succeeded; afterany; afternotok), and is
cancelled, naming the job, when one of them ends any other way. `inputs_from` brings a
parent's results in as inputs."""

from __future__ import annotations

import io
import tarfile

import pytest

from conftest import SCRIPT, tar_bytes

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
    assert shown["message"] == (f"cancelled: it was to run once job {parent['id']} "
                                "succeeded, but it ended failed")
    shown = stack.job(grandchild["id"])
    assert shown["state"] == "cancelled" and child["id"] in shown["message"]
    assert stack.job(bystander["id"])["state"] == "queued"


def test_cancelling_a_queued_parent_cancels_its_waiters(stack):
    parent = stack.submit_ok()
    child = after(stack, parent["id"])
    stack.http.post(f"/api/v1/jobs/{parent['id']}/cancel", headers=stack.headers("alice"))
    assert stack.job(child["id"])["state"] == "cancelled"
    assert "but it ended cancelled" in stack.job(child["id"])["message"]


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
    assert "but it ended lost" in stack.job(child["id"])["message"]


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


# -- conditions: afterany, afternotok --------------------------------------------------

def finish(stack, job_id, state):
    claimed = stack.claim_ok()
    assert claimed["id"] == job_id
    assert stack.upload(job_id, claimed["lease"], state=state,
                        exit_code=0 if state == "succeeded" else 1).status_code == 200


@pytest.mark.parametrize("parent_ends", ["succeeded", "failed"])
def test_afterany_runs_however_its_parent_ended(stack, parent_ends):
    parent = stack.submit_ok()
    child = after(stack, f"afterany:{parent['id']}")
    assert child["after"] == [f"afterany:{parent['id']}"]
    assert stack.job(child["id"])["pending_reason"] == f"waiting for job {parent['id']}"
    finish(stack, parent["id"], parent_ends)
    assert stack.claim_ok()["id"] == child["id"]


def test_afternotok_runs_after_a_failure_and_is_cancelled_by_a_success(stack):
    good, bad = stack.submit_ok(), stack.submit_ok()
    on_good = after(stack, f"afternotok:{good['id']}")
    on_bad = after(stack, f"afternotok:{bad['id']}")
    finish(stack, good["id"], "succeeded")
    shown = stack.job(on_good["id"])
    assert shown["state"] == "cancelled"
    assert shown["message"] == (f"cancelled: it was to run once job {good['id']} ended other "
                                "than succeeded, but it ended succeeded")
    finish(stack, bad["id"], "failed")
    assert stack.claim_ok()["id"] == on_bad["id"]


def test_a_cancelled_waiter_lets_its_own_afterany_waiter_run(stack):
    parent = stack.submit_ok()
    child = after(stack, parent["id"])
    clean_up = after(stack, f"afterany:{child['id']}")
    finish(stack, parent["id"], "failed")
    assert stack.job(child["id"])["state"] == "cancelled"
    assert stack.claim_ok()["id"] == clean_up["id"]


def test_a_condition_an_ended_parent_cannot_meet_is_refused(stack):
    parent = stack.submit_ok()
    finish(stack, parent["id"], "succeeded")
    response = stack.submit(spec={"entry": "main.py", "after": [f"afternotok:{parent['id']}"]})
    assert response.status_code == 409
    assert "not ended other than succeeded" in response.get_json()["message"]
    assert after(stack, f"afterany:{parent['id']}")["state"] == "queued"
    assert stack.claim_ok()  # nothing left to wait for


@pytest.mark.parametrize("after_value, says", [
    (["afterfoo:abcd"], "the condition is one of afterok, afterany, afternotok"),
    (["before:abcd"], "the condition is one of"),
    (["abcd", "afterany:abcd"], "gives 'abcd' two conditions"),
])
def test_bad_conditions_are_refused(stack, after_value, says):
    response = stack.submit(spec={"entry": "main.py", "after": after_value})
    assert response.status_code == 400 and says in response.get_json()["message"]


def test_one_job_named_twice_with_two_conditions_is_refused(stack):
    parent = stack.submit_ok()
    response = stack.submit(spec={"entry": "main.py",
                                  "after": [parent["id"][:6], f"afterany:{parent['id']}"]})
    assert response.status_code == 400
    assert "twice, with two conditions" in response.get_json()["message"]


# -- inputs_from: a finished job's results as inputs -------------------------------------

def input_names(stack, job_id, lease) -> dict[str, bytes]:
    response = stack.http.get(f"/api/v1/worker/jobs/{job_id}/input?lease={lease}",
                              headers=stack.headers("w1"))
    assert response.status_code == 200
    with tarfile.open(fileobj=io.BytesIO(response.data)) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def test_inputs_from_brings_the_parents_results_under_its_id(stack):
    parent = stack.submit_ok()
    claimed = stack.claim_ok()
    merge = stack.submit_ok(spec={"entry": "main.py", "inputs_from": [parent["id"][:8]]})
    assert merge["after"] == [parent["id"]] and merge["inputs_from"] == [parent["id"]]
    assert stack.claim().status_code == 204  # it waits for the parent to succeed
    stack.upload(parent["id"], claimed["lease"],
                 results=tar_bytes({"out/score.txt": b"0.93", "main.py": b"# the parent's"}))
    claimed = stack.claim_ok()
    assert claimed["id"] == merge["id"]
    assert input_names(stack, merge["id"], claimed["lease"]) == {
        "main.py": SCRIPT, f"{parent['id']}/out/score.txt": b"0.93",
        f"{parent['id']}/main.py": b"# the parent's"}


def test_inputs_from_an_array_gives_a_folder_per_task(stack):
    array = stack.submit_ok(spec={"entry": "main.py", "array": "3,5"})
    for index in (3, 5):
        claimed = stack.claim_ok()
        stack.upload(claimed["id"], claimed["lease"],
                     results=tar_bytes({"out.txt": str(index).encode()}))
    array_id = array["array"]["id"]
    merge = stack.submit_ok(spec={"entry": "main.py", "inputs_from": [array_id],
                                  "after": [f"afterany:{array_id}"]})
    assert merge["after"] == [f"afterany:{t}" for t in sorted(array["jobs"])]
    claimed = stack.claim_ok()
    assert input_names(stack, merge["id"], claimed["lease"]) == {
        "main.py": SCRIPT, f"{array_id}/3/out.txt": b"3", f"{array_id}/5/out.txt": b"5"}


def test_inputs_from_results_larger_than_an_upload_fail_the_job_saying_so(make_stack):
    stack = make_stack(max_upload_bytes=1000)
    parent = stack.submit_ok()
    claimed = stack.claim_ok()
    merge = stack.submit_ok(spec={"entry": "main.py", "inputs_from": [parent["id"]]})
    stack.upload(parent["id"], claimed["lease"], results=tar_bytes({"big.bin": b"x" * 999}))
    claimed = stack.claim_ok()
    response = stack.http.get(f"/api/v1/worker/jobs/{merge['id']}/input?lease="
                              f"{claimed['lease']}", headers=stack.headers("w1"))
    assert response.status_code == 409 and response.get_json()["error"] == "lease_lost"
    shown = stack.job(merge["id"])
    assert shown["state"] == "failed"
    assert shown["message"].startswith(
        f"its inputs with the results of inputs_from are {999 + len(SCRIPT)} bytes in 2 files")


def test_inputs_from_another_users_job_is_not_found(stack):
    theirs = stack.submit_ok("bob")
    response = stack.submit(spec={"entry": "main.py", "inputs_from": [theirs["id"]]})
    assert response.status_code == 404
    assert response.get_json()["message"] == (
        f"spec field 'inputs_from': no job or array {theirs['id']!r}")


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
    assert cancelled["message"] == (f"cancelled: it was to run once job {bad} succeeded, "
                                    "but it ended failed")


MERGE = """\
import pathlib, sys
found = sorted(str(p) for p in pathlib.Path(".").glob("*/made-by-parent.txt"))
print(" ".join(found))
"""


@pytest.mark.e2e
def test_a_merge_step_reads_what_its_parents_made(cluster):
    c = cluster()
    c.start_worker("w1", cpus=2)
    parents = [c.submit(PARENT, args=["0"]) for _ in range(2)]
    merge = c.client.submit({"merge.py": MERGE.encode()},
                            {"entry": "merge.py", "inputs_from": parents})["id"]
    done = c.client.wait(merge, timeout=60, interval=0.1)
    assert done["state"] == "succeeded", c.logs()
    assert c.client.log(merge)["stdout"].split() == [
        f"{p}/made-by-parent.txt" for p in sorted(parents)]


SWEEP = """\
import os
open("out.txt", "w").write(os.environ["JOBQUEUE_ARRAY_TASK_ID"])
"""

SUM = """\
import pathlib
print(sum(int(p.read_text()) for p in pathlib.Path(".").glob("*/*/out.txt")))
"""


@pytest.mark.e2e
def test_a_pipeline_from_the_command_line(cluster, tmp_path):
    from test_e2e import jobqueue

    c = cluster()
    (tmp_path / "sweep.py").write_text(SWEEP)
    (tmp_path / "sum.py").write_text(SUM)
    (tmp_path / "fail.py").write_text("raise SystemExit(2)\n")
    sweep = jobqueue(c, "submit", str(tmp_path / "sweep.py"), "--array", "1-4").stdout.strip()
    failing = jobqueue(c, "submit", str(tmp_path / "fail.py")).stdout.strip()
    # The sum reads every task's out.txt; a clean-up runs however both end.
    total = jobqueue(c, "submit", str(tmp_path / "sum.py"), "--inputs-from", sweep[:8])
    clean_up = jobqueue(c, "submit", str(tmp_path / "sum.py"), "--after",
                        f"afterany:{sweep}:{failing}")
    assert total.returncode == 0 and clean_up.returncode == 0, total.stderr + clean_up.stderr
    c.start_worker("w1", cpus=2)
    waited = jobqueue(c, "wait", total.stdout.strip())
    assert waited.returncode == 0, waited.stdout + waited.stderr
    assert c.client.log(total.stdout.strip())["stdout"].strip() == "10"
    assert c.client.wait(clean_up.stdout.strip(), timeout=60)["state"] == "succeeded"
    tasks = [j["id"] for j in c.client.list(array=sweep)]
    assert sorted(c.client.get(clean_up.stdout.strip())["after"]) == sorted(
        f"afterany:{i}" for i in tasks + [failing])
