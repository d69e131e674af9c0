"""Job arrays: the `array` syntax, array submits through the API (one row per task, one
input for all), the %N limit at claim time, the array's summary and cancel; and an
array run end to end by a real worker."""

from __future__ import annotations

import datetime as dt
import io
import json
import tarfile

import pytest
from sqlalchemy import create_engine, select

from jobqueue.arrayspec import BadArray, parse_array
from jobqueue.controller.db import migrate
from jobqueue.models import Base, Job


# -- the syntax -------------------------------------------------------------------------


@pytest.mark.parametrize("text, indices, limit", [
    ("0-4", (0, 1, 2, 3, 4), None),
    ("7", (7,), None),
    ("1,3,7-9", (1, 3, 7, 8, 9), None),
    ("0-20:5", (0, 5, 10, 15, 20), None),
    ("0-99%10", tuple(range(100)), 10),
    (" 2-3 , 5 %1", (2, 3, 5), 1),
])
def test_array_syntax(text, indices, limit):
    parsed = parse_array(text, 10000)
    assert (parsed.indices, parsed.max_running, parsed.size) == (indices, limit, len(indices))


@pytest.mark.parametrize("text, says", [
    ("", "must be a range"),
    ("a-b", "'a-b' is not an index"),
    ("-1", "'-1' is not an index"),
    ("1,,2", "'' is not an index"),
    ("5-1", "ends before it starts"),
    ("1-4:0", "step must be at least 1"),
    ("0-100", "below 100"),
    ("1,1", "index 1 is given twice"),
    ("0-3,2", "index 2 is given twice"),
    ("0-9%0", "at least 1"),
    ("0-9%x", "at least 1"),
    ("0-9%", "at least 1"),
    ("1" * 20, "is not an index"),
    ("0," * 6000, "at most 10000 characters"),
])
def test_bad_array_syntax(text, says):
    with pytest.raises(BadArray, match=says):
        parse_array(text, 100)


def test_the_models_match_the_migrations(tmp_path):
    """A new column in models.py without its migration (or the reverse) fails here."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    engine = create_engine(f"sqlite:///{tmp_path}/schema.db")
    migrate(engine)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


# -- submitting an array ----------------------------------------------------------------


def submit_array(stack, who="alice", **spec):
    return stack.submit_ok(who, spec={"entry": "main.py", **spec})


def test_an_array_submit_makes_one_job_per_task(stack):
    made = submit_array(stack, array="0-20:5%2", args=["common"], name="sweep")
    array, ids = made["array"], made["jobs"]
    assert (array["name"], array["size"], array["max_running"]) == ("sweep", 5, 2)
    assert array["counts"] == {"queued": 5} and len(set(ids)) == 5
    assert stack.http.get(f"/api/v1/arrays/{array['id']}",
                          headers=stack.headers("alice")).get_json() == array
    for index, job_id in zip((0, 5, 10, 15, 20), ids, strict=True):
        job = stack.job(job_id)
        assert job["array"] == {"id": array["id"], "index": index, "size": 5, "task_count": 5}
        assert job["after"] == [] and job["args"] == ["common"] and job["name"] == "sweep"
    listed = stack.http.get(f"/api/v1/jobs?array={array['id'][:8]}",
                            headers=stack.headers("alice")).get_json()["jobs"]
    assert sorted(j["id"] for j in listed) == sorted(ids)
    single = stack.submit_ok()
    assert single["array"] is None and single["after"] == []


def test_array_args_give_each_task_its_own(stack):
    made = submit_array(stack, args=["-v"], array_args=[["a", "1"], ["b"], []])
    assert made["array"]["size"] == 3
    assert [stack.job(i)["args"] for i in made["jobs"]] == [["-v", "a", "1"], ["-v", "b"],
                                                            ["-v"]]
    assert [stack.job(i)["array"]["index"] for i in made["jobs"]] == [0, 1, 2]
    made = submit_array(stack, array="4,2", array_args=[["four"], ["two"]])
    assert [(stack.job(i)["array"]["index"], stack.job(i)["args"]) for i in made["jobs"]] \
        == [(2, ["two"]), (4, ["four"])]  # in index order


def test_tasks_share_one_copy_of_the_input(stack):
    made = submit_array(stack, array="0-2")
    jobs_dir = stack.files.root
    assert (jobs_dir / made["array"]["id"] / "input" / "main.py").is_file()
    for job_id in made["jobs"]:
        assert not (jobs_dir / job_id / "input").exists()
        files = stack.http.get(f"/api/v1/jobs/{job_id}/files", headers=stack.headers("alice"))
        assert files.get_json()["files"] == [{"path": "main.py", "size": 15}]
    claimed = stack.claim_ok()
    assert claimed["array"]["index"] == 0 and claimed["id"] == made["jobs"][0]
    archive = stack.http.get(f"/api/v1/worker/jobs/{claimed['id']}/input",
                             query_string={"lease": claimed["lease"]}, headers=stack.headers("w1"))
    with tarfile.open(fileobj=io.BytesIO(archive.data)) as tar:
        assert tar.getnames() == ["main.py"]


@pytest.mark.parametrize("spec, says", [
    ({"array": 5}, "'array' must be a string"),
    ({"array": "1-x"}, "spec field 'array': '1-x' is not an index"),
    ({"array": "0-10"}, "spec field 'array': indices must be below 10"),
    ({"array": "0-3%0"}, "spec field 'array': the limit after '%'"),
    ({"array_args": "a b"}, "'array_args' must be a list of lists of strings"),
    ({"array_args": [["a"], "b"]}, "'array_args' must be a list of lists of strings"),
    ({"array_args": [[1]]}, "'array_args' must be a list of lists of strings"),
    ({"array_args": []}, "'array_args' must hold 1 to 10 lists"),
    ({"array_args": [[]] * 11}, "'array_args' must hold 1 to 10 lists"),
    ({"array": "0-2", "array_args": [["a"], ["b"]]},
     "'array_args' has 2 lists but 'array' names 3 tasks"),
    ({"array": "0-1", "array_args": [["x"] * 1001, []]}, "at most 1000 arguments"),
])
def test_bad_array_fields_are_400_naming_the_field(make_stack, spec, says):
    stack = make_stack(max_array_size=10)
    response = stack.submit(spec={"entry": "main.py", **spec})
    assert response.status_code == 400, response.get_json()
    body = response.get_json()
    assert body["error"] == "bad_request" and says in body["message"], body
    assert stack.jobs() == [] and list(stack.files.root.iterdir()) == []


def test_the_array_size_bound_is_a_setting(make_stack):
    stack = make_stack(max_array_size=4)
    assert stack.submit(spec={"entry": "main.py", "array": "0-4"}).status_code == 400
    assert submit_array(stack, array="0-3")["array"]["size"] == 4


def test_an_array_submit_replays_with_its_idempotency_key(stack):
    spec = {"entry": "main.py", "array": "0-3"}
    first = stack.submit(spec=spec, key="k1")
    again = stack.submit(spec=spec, key="k1")
    assert first.status_code == again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json()["array"]["id"] == first.get_json()["array"]["id"]
    assert again.get_json()["jobs"] == first.get_json()["jobs"]
    assert first.headers["Location"].endswith("/arrays/" + first.get_json()["array"]["id"])
    assert len(stack.jobs()) == 4


def test_array_colon_index_names_a_task_on_every_job_route(stack):
    made = submit_array(stack, array="0-20:5", name="sweep")
    array, ids = made["array"]["id"], made["jobs"]
    alice = stack.headers("alice")
    for name in (f"{array}:10", f"{array[:6]}:10"):
        assert stack.http.get(f"/api/v1/jobs/{name}", headers=alice).get_json()["id"] == ids[2]
    log = stack.http.get(f"/api/v1/jobs/{array[:6]}:0/log", headers=alice)
    assert log.status_code == 200 and set(log.get_json()) >= {"stdout", "stderr"}
    cancelled = stack.http.post(f"/api/v1/jobs/{array[:6]}:5/cancel", headers=alice)
    assert cancelled.get_json()["id"] == ids[1] and stack.job(ids[1])["state"] == "cancelled"
    for name, says in ((f"{array}:3", "no task 3 in array"), (f"{array}:x", "not a task index"),
                       (f"{array}:\u00b2", "not a task index"),
                       (array, "is a job array: "), ("zz:1", "not an id")):
        answer = stack.http.get(f"/api/v1/jobs/{name}/log", headers=alice)
        assert answer.status_code == 404 and says in answer.get_json()["message"], name
    # Someone else's array is no one's.
    assert stack.http.get(f"/api/v1/jobs/{array}:10",
                          headers=stack.headers("bob")).status_code == 404


def test_others_cannot_see_an_array(stack):
    array = submit_array(stack, array="0-1")["array"]
    for path in (f"/api/v1/arrays/{array['id']}", f"/api/v1/jobs?array={array['id']}"):
        response = stack.http.get(path, headers=stack.headers("bob"))
        assert response.status_code == 404 and response.get_json()["error"] == "not_found"
    response = stack.http.post(f"/api/v1/arrays/{array['id']}/cancel", headers=stack.headers("bob"))
    assert response.status_code == 404
    assert stack.http.get(f"/api/v1/arrays/{array['id']}",
                          headers=stack.headers("root")).status_code == 200
    for bad in ("zz", "0123456789abcdef0123456789abcdef0", "xyz!"):
        response = stack.http.get(f"/api/v1/arrays/{bad}", headers=stack.headers("alice"))
        assert response.status_code == 404 and "no such array" in response.get_json()["message"]


# -- %N and claims ----------------------------------------------------------------------


def test_an_array_runs_at_most_its_limit_at_once(stack):
    made = submit_array(stack, array="0-4%2")
    other = stack.submit_ok()
    first, second = stack.claim_ok(), stack.claim_ok()
    assert [first["array"]["index"], second["array"]["index"]] == [0, 1]
    # The array is at its limit: the next claim passes over its tasks to the other job.
    assert stack.claim_ok()["id"] == other["id"]
    assert stack.claim().status_code == 204
    waiting = stack.job(made["jobs"][2])
    assert waiting["pending_reason"] == "array limit %2 reached"
    assert stack.upload(first["id"], first["lease"]).status_code == 200
    third = stack.claim_ok()
    assert third["array"]["index"] == 2
    assert stack.claim().status_code == 204
    summary = stack.http.get(f"/api/v1/arrays/{made['array']['id']}",
                             headers=stack.headers("alice")).get_json()
    assert summary["counts"] == {"queued": 2, "running": 2, "succeeded": 1}


def test_cancelling_an_array_cancels_every_unfinished_task(stack):
    made = submit_array(stack, array="0-3")
    done, running = stack.claim_ok(), stack.claim_ok()
    stack.upload(done["id"], done["lease"])
    response = stack.http.post(f"/api/v1/arrays/{made['array']['id']}/cancel",
                               headers=stack.headers("alice"))
    assert response.status_code == 200
    assert response.get_json()["counts"] == {"cancelled": 2, "running": 1, "succeeded": 1}
    assert stack.job(running["id"])["cancel_requested"] is True
    assert stack.heartbeat(running["id"], running["lease"]).get_json()["cancel"] is True
    assert stack.claim().status_code == 204


def test_deleting_the_last_task_removes_the_array_and_its_input(stack):
    made = submit_array(stack, array="0-1")
    array_dir = stack.files.root / made["array"]["id"]
    stack.http.post(f"/api/v1/arrays/{made['array']['id']}/cancel", headers=stack.headers("alice"))
    first, second = made["jobs"]
    assert stack.http.delete(f"/api/v1/jobs/{first}",
                             headers=stack.headers("alice")).status_code == 204
    assert (array_dir / "input" / "main.py").is_file()
    assert stack.job(second)["array"]["size"] == 2
    assert stack.http.delete(f"/api/v1/jobs/{second}",
                             headers=stack.headers("alice")).status_code == 204
    assert not array_dir.exists()
    assert stack.http.get(f"/api/v1/arrays/{made['array']['id']}",
                          headers=stack.headers("alice")).status_code == 404


# -- end to end -------------------------------------------------------------------------

TASK = """\
import json, os, sys, time
time.sleep(0.5)
with open("task.json", "w") as fh:
    json.dump({"index": os.environ["JOBQUEUE_ARRAY_TASK_ID"],
               "array": os.environ["JOBQUEUE_ARRAY_ID"],
               "count": os.environ["JOBQUEUE_ARRAY_TASK_COUNT"], "args": sys.argv[1:]}, fh)
"""


@pytest.mark.e2e
def test_an_array_runs_each_task_once_with_its_index_and_args(cluster):
    c = cluster()
    c.start_worker("w1", cpus=2)
    c.start_worker("w2", cpus=2)
    made = c.client.submit({"main.py": TASK.encode()}, {
        "entry": "main.py", "array": "0-14:2%2", "args": ["x"],
        "array_args": [[f"arg{n}"] for n in range(8)]})
    array_id = made["array"]["id"]
    jobs = [c.client.wait(job_id, timeout=120, interval=0.2) for job_id in made["jobs"]]
    assert all(j["state"] == "succeeded" for j in jobs), c.logs()
    for n, job in enumerate(jobs):
        assert job["attempts"] == 1
        seen = json.loads(c.client.read_file(job["id"], "task.json"))
        assert seen == {"index": str(2 * n), "array": array_id, "count": "8",
                        "args": ["x", f"arg{n}"]}
    # Never more than 2 at once, by the server's own start and finish times.
    spans = [(dt.datetime.fromisoformat(j["started_at"]),
              dt.datetime.fromisoformat(j["finished_at"])) for j in jobs]
    most = max(sum(1 for s, f in spans if s <= start < f) for start, _ in spans)
    assert most == 2, spans


def test_concurrent_claims_never_pass_the_limit(stack):
    """Many claims at once (on PostgreSQL each in its own transaction, SKIP LOCKED) still
    start no more than %N tasks of an array."""
    from concurrent.futures import ThreadPoolExecutor

    made = submit_array(stack, array="0-39%3")
    with stack.app.extensions["jobqueue"].session_factory() as session:
        owner_id = session.get(Job, made["jobs"][0]).owner_id
    for _round in range(4):
        with ThreadPoolExecutor(8) as pool:
            claims = list(pool.map(lambda n: stack.backend._try_claim(f"w{n}", 1), range(8)))
        with stack.app.extensions["jobqueue"].session_factory.begin() as session:
            running = session.scalars(select(Job).where(
                Job.owner_id == owner_id, Job.state == "running")).all()
            assert len(running) == 3 and len([c for c in claims if c]) <= 3
            for job in running[:2]:  # two finish: room for two more
                stack.backend.finish(session, job, job.lease, "succeeded", 0, "")


# -- the command line -------------------------------------------------------------------

CLI_TASK = """\
import os, sys
open("out.txt", "w").write(os.environ["JOBQUEUE_ARRAY_TASK_ID"] + " " + " ".join(sys.argv[1:]))
"""


@pytest.mark.e2e
def test_the_cli_submits_waits_fetches_and_cancels_an_array_as_one(cluster, tmp_path):
    from test_e2e import jobqueue

    c = cluster()
    script = tmp_path / "task.py"
    script.write_text(CLI_TASK)
    lines = tmp_path / "args.txt"
    lines.write_text("alpha 'two words'\n\n# a comment\nbeta\n")
    submitted = jobqueue(c, "submit", str(script), "--args-from", str(lines), "--arg=-x")
    assert submitted.returncode == 0, submitted.stderr
    array_id = submitted.stdout.strip()
    assert c.client.array(array_id)["size"] == 2
    # A job after the whole array, and an array of 3 held back by a job that waits.
    blocker = c.submit("import time; time.sleep(60)\n")
    later = jobqueue(c, "submit", str(script), "--array", "0-2%1", "--after",
                     f"{blocker},{array_id[:8]}")
    assert later.returncode == 0, later.stderr
    later_id = later.stdout.strip()
    c.start_worker("w1", cpus=2)
    waited = jobqueue(c, "wait", array_id[:8])
    assert waited.returncode == 0 and f"array {array_id[:8]} 2 succeeded" in waited.stdout

    fetched = jobqueue(c, "fetch", array_id, "-o", str(tmp_path / "got"))
    assert fetched.returncode == 0, fetched.stderr
    assert (tmp_path / "got" / "0" / "out.txt").read_text() == "0 -x alpha two words"
    assert (tmp_path / "got" / "1" / "out.txt").read_text() == "1 -x beta"

    listed = jobqueue(c, "list", "--array", later_id)
    assert listed.returncode == 0 and listed.stdout.count("queued") == 3, listed.stdout
    shown = jobqueue(c, "status", later_id)
    assert "size:" in shown.stdout and "3 queued" in shown.stdout, shown.stdout
    early = jobqueue(c, "fetch", later_id, "-o", str(tmp_path / "early"))
    assert early.returncode == 1 and "3 of its 3 tasks have not finished" in early.stderr
    cancelled = jobqueue(c, "cancel", later_id)
    assert cancelled.returncode == 0 and "3 task(s) cancelled" in cancelled.stdout
    assert c.client.array(later_id)["counts"] == {"cancelled": 3}
    assert jobqueue(c, "wait", later_id).returncode == cli_not_succeeded()
    assert c.client.get(blocker)["state"] == "running"  # cancelling the array left it be
    c.client.cancel(blocker)


def cli_not_succeeded() -> int:
    from jobqueue.client.cli import EXIT_JOB_NOT_SUCCEEDED

    return EXIT_JOB_NOT_SUCCEEDED
