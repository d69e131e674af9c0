"""Running an array's failed tasks again (`POST /arrays/{id}/rerun`, `jobqueue rerun`): a
new array of those tasks, each with its index, arguments and inputs, after the same
jobs; the first array keeps its tasks as they ended."""

from __future__ import annotations

import pytest

from conftest import SCRIPT, tar_bytes
from test_dependencies import input_names


def ended_array(stack, ends: list[str], **spec) -> dict:
    """An array of one task per entry of `ends`, each run and ended so."""
    made = stack.submit_ok(spec={"entry": "main.py", "array": f"0-{len(ends) - 1}",
                                 "array_args": [[f"a{i}"] for i in range(len(ends))], **spec})
    for index, end in enumerate(ends):
        claimed = stack.claim_ok()
        assert claimed["array"]["index"] == index
        stack.upload(claimed["id"], claimed["lease"], state=end,
                     exit_code=0 if end == "succeeded" else 1)
    return made


def rerun(stack, array_id: str, who="alice", body=None):
    return stack.http.post(f"/api/v1/arrays/{array_id}/rerun", json=body,
                           headers=stack.headers(who))


def summary(stack, array_id: str, who="alice") -> dict:
    return stack.http.get(f"/api/v1/arrays/{array_id}", headers=stack.headers(who)).get_json()


def test_a_rerun_is_a_new_array_of_the_failed_tasks_with_their_index_args_and_inputs(stack):
    first = ended_array(stack, ["succeeded", "failed", "timed_out", "cancelled", "failed"])
    first_id = first["array"]["id"]
    response = rerun(stack, first_id[:8])
    assert response.status_code == 201, response.get_json()
    made = response.get_json()
    array = made["array"]
    assert response.headers["Location"] == array["links"]["self"]
    assert (array["size"], array["rerun_of"], array["counts"]) == (3, first_id, {"queued": 3})
    tasks = [stack.job(job_id) for job_id in made["jobs"]]
    assert [t["array"]["index"] for t in tasks] == [1, 2, 4]
    assert [t["args"] for t in tasks] == [["a1"], ["a2"], ["a4"]]
    assert all(t["array"]["size"] == 3 and t["array"]["task_count"] == 5 for t in tasks)
    # The first array is left as it ended.
    assert summary(stack, first_id)["counts"] == {
        "cancelled": 1, "failed": 2, "succeeded": 1, "timed_out": 1}
    # The same input, linked, not copied again.
    own, theirs = (stack.files.root / i / "input" / "main.py" for i in (array["id"], first_id))
    assert own.stat().st_ino == theirs.stat().st_ino
    claimed = stack.claim_ok()
    assert claimed["array"] == {"id": array["id"], "index": 1, "size": 3, "task_count": 5}
    assert input_names(stack, claimed["id"], claimed["lease"]) == {"main.py": SCRIPT}


def test_a_rerun_takes_the_states_asked_for_and_a_rerun_of_it_keeps_the_first_count(stack):
    first = ended_array(stack, ["failed", "cancelled", "succeeded"])
    made = rerun(stack, first["array"]["id"], body={"states": ["cancelled", "succeeded"]})
    assert made.status_code == 201
    again = made.get_json()
    assert [stack.job(i)["array"]["index"] for i in again["jobs"]] == [1, 2]
    for _ in again["jobs"]:
        claimed = stack.claim_ok()
        stack.upload(claimed["id"], claimed["lease"], state="failed", exit_code=1)
    third = rerun(stack, again["array"]["id"], body={}).get_json()
    assert third["array"]["rerun_of"] == again["array"]["id"]
    assert [stack.job(i)["array"]["task_count"] for i in third["jobs"]] == [3, 3]


@pytest.mark.parametrize("body, status, says", [
    ({"states": ["running"]}, 400, "'states' must be a list of finished states"),
    ({"states": "failed"}, 400, "'states' must be a list"),
    ({"states": []}, 400, "'states' must be a list"),
    ({"states": [1]}, 400, "'states' must be a list"),
    (None, 409, "is failed or lost or timed_out"),
])
def test_a_rerun_with_nothing_to_run_or_a_bad_body_is_refused_saying_why(stack, body, status,
                                                                       says):
    first = ended_array(stack, ["succeeded", "cancelled"])
    before = len(stack.jobs())
    response = rerun(stack, first["array"]["id"], body=body)
    assert response.status_code == status and says in response.get_json()["message"]
    assert len(stack.jobs()) == before


def test_a_body_that_is_not_json_is_a_400(stack):
    first = ended_array(stack, ["failed"])
    response = stack.http.post(f"/api/v1/arrays/{first['array']['id']}/rerun", data=b"{x",
                               headers=stack.headers("alice"))
    assert response.status_code == 400 and "not valid JSON" in response.get_json()["message"]


def test_others_cannot_rerun_an_array_and_an_admins_rerun_is_the_owners(stack):
    first = ended_array(stack, ["failed"])
    assert rerun(stack, first["array"]["id"], who="bob").status_code == 404
    made = rerun(stack, first["array"]["id"], who="root")
    assert made.status_code == 201
    assert summary(stack, made.get_json()["array"]["id"])["owner"] == "alice"


def test_a_rerun_is_within_the_owners_queue_limit(make_stack):
    stack = make_stack(max_queued_per_user=2)
    first = ended_array(stack, ["failed", "failed"])
    stack.submit_ok()
    response = rerun(stack, first["array"]["id"])
    assert response.status_code == 429 and response.get_json()["error"] == "too_many_queued"


def test_a_rerun_runs_after_the_same_jobs_with_their_results(stack):
    parent = stack.submit_ok()
    claimed = stack.claim_ok()
    stack.upload(parent["id"], claimed["lease"], results=tar_bytes({"score.txt": b"0.93"}))
    first = ended_array(stack, ["failed"], inputs_from=[parent["id"]])
    made = rerun(stack, first["array"]["id"]).get_json()
    task = stack.job(made["jobs"][0])
    assert (task["after"], task["inputs_from"]) == ([parent["id"]], [parent["id"]])
    claimed = stack.claim_ok()
    assert claimed["id"] == task["id"]
    assert input_names(stack, task["id"], claimed["lease"]) == {
        "main.py": SCRIPT, f"{parent['id']}/score.txt": b"0.93"}


def test_a_rerun_after_a_job_that_failed_is_refused_as_it_could_never_start(stack):
    parent = stack.submit_ok()
    waiting = stack.submit_ok(spec={"entry": "main.py", "array": "0-1", "after": [parent["id"]]})
    claimed = stack.claim_ok()
    stack.upload(parent["id"], claimed["lease"], state="failed", exit_code=1)
    assert summary(stack, waiting["array"]["id"])["counts"] == {"cancelled": 2}
    refused = rerun(stack, waiting["array"]["id"], body={"states": ["cancelled"]})
    assert refused.status_code == 409 and refused.get_json()["error"] == "dependency_failed"
    assert f"job {parent['id']} already ended failed" in refused.get_json()["message"]


# -- end to end -------------------------------------------------------------------------

FLAKY_TASK = """\
import os, sys
if not os.path.exists(sys.argv[1]):
    sys.exit(f"no {sys.argv[1]} yet")
with open("out.txt", "w") as fh:
    fh.write(os.environ["JOBQUEUE_ARRAY_TASK_ID"] + " " + os.environ["JOBQUEUE_ARRAY_TASK_COUNT"])
"""


@pytest.mark.e2e
def test_the_cli_reruns_the_tasks_that_failed_and_they_succeed(cluster, tmp_path):
    from test_arrays import cli_not_succeeded
    from test_e2e import jobqueue

    c = cluster()
    marker = tmp_path / "ready"
    c.start_worker("w1", cpus=2)
    made = c.client.submit({"main.py": FLAKY_TASK.encode()}, {
        "entry": "main.py", "array": "0-3",
        "array_args": [[str(marker) if n % 2 else "/"] for n in range(4)]})
    first_id = made["array"]["id"]
    assert jobqueue(c, "wait", first_id).returncode == cli_not_succeeded()
    assert c.client.array(first_id)["counts"] == {"failed": 2, "succeeded": 2}
    marker.touch()
    rerun_cli = jobqueue(c, "rerun", first_id[:8])
    assert rerun_cli.returncode == 0, rerun_cli.stderr
    rerun_id = rerun_cli.stdout.strip()
    assert f"2 task(s) of array {first_id} again" in rerun_cli.stderr
    waited = jobqueue(c, "wait", rerun_id)
    assert waited.returncode == 0, waited.stdout + c.logs()
    tasks = c.client.array_tasks(rerun_id)
    assert [c.client.read_file(t["id"], "out.txt") for t in tasks] == [b"1 4", b"3 4"]
    nothing = jobqueue(c, "rerun", rerun_id)
    assert nothing.returncode != 0 and "is failed or lost or timed_out" in nothing.stderr
