"""Views of the whole cluster any user may have: the queue (as squeue), the workers
(as sinfo) and usage per user (as sreport), through the API and the command line."""

from __future__ import annotations

import json

import pytest

from jobqueue.models import Job


def get(stack, path, who="alice"):
    response = stack.http.get(f"/api/v1{path}", headers=stack.headers(who))
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def test_the_queue_shows_everyones_unfinished_jobs_and_only_ones_own_names(stack):
    mine = stack.submit_ok(spec={"entry": "main.py", "name": "my sweep"})
    theirs = stack.submit_ok("bob", spec={"entry": "main.py", "name": "bob's secret"})
    done = stack.submit_ok(spec={"entry": "main.py", "name": "done"})
    running = stack.claim_ok()  # the oldest: mine
    stack.upload(running["id"], running["lease"])
    assert running["id"] == mine["id"]
    running = stack.claim_ok()
    shown = {job["id"]: job for job in get(stack, "/queue")["jobs"]}
    assert set(shown) == {theirs["id"], done["id"]}
    assert shown[theirs["id"]]["owner"] == "bob" and shown[theirs["id"]]["name"] is None
    assert shown[done["id"]]["name"] == "done"
    assert shown[theirs["id"]]["state"] == "running" and shown[theirs["id"]]["worker"] == "w1"
    as_admin = {job["id"]: job for job in get(stack, "/queue", "root")["jobs"]}
    assert as_admin[theirs["id"]]["name"] == "bob's secret"


def test_workers_show_cpus_in_use_and_a_state(stack):
    body = {"worker": "w1", "cpus": 4, "wait": 0, "capacity": {"cpus": 4}}
    stack.http.post("/api/v1/worker/claim", json=body, headers=stack.headers("w1"))
    assert get(stack, "/cluster/workers")["workers"][0] | {"seen_at": None} == {
        "worker": "w1", "cpus": 4, "cpus_used": 0, "state": "idle", "jobs": None,
        "memory_mib": None, "quarantined_slots": 0, "drained": False, "running": 0,
        "environments": [], "seen_at": None}
    stack.submit_ok(spec={"entry": "main.py", "cpus": 3})
    assert stack.http.post("/api/v1/worker/claim", json=body,
                           headers=stack.headers("w1")).status_code == 200
    shown = get(stack, "/cluster/workers")["workers"][0]
    assert (shown["cpus_used"], shown["state"]) == (3, "mixed")
    stack.http.post("/api/v1/workers/w1/drain", headers=stack.headers("root"))
    assert get(stack, "/cluster/workers")["workers"][0]["state"] == "drained"


def test_usage_sums_each_users_finished_jobs(stack):
    for who, state in (("alice", "succeeded"), ("alice", "failed"), ("bob", "succeeded")):
        job = stack.submit_ok(who)
        claimed = stack.claim_ok()
        status = {"lease": claimed["lease"], "state": state, "exit_code": 0, "message": "",
                  "accounting": {"cpu_seconds": 1800.0, "peak_memory": 1 << 20,
                                 "wall_seconds": 3600.0, "signal": None}}
        assert stack.http.post(f"/api/v1/worker/jobs/{job['id']}/result",
                               data={"status": json.dumps(status)},
                               headers=stack.headers("w1")).status_code == 200
    assert get(stack, "/usage")["users"] == [{
        "user": "alice", "jobs": 2, "succeeded": 1, "failed": 1, "timed_out": 0,
        "cancelled": 0, "cpu_hours": 1.0, "cpu_hours_held": 2.0, "peak_memory": 1 << 20}]
    assert [u["user"] for u in get(stack, "/usage", "root")["users"]] == ["alice", "bob"]
    with stack.app.extensions["jobqueue"].session_factory.begin() as session:
        for job in session.query(Job):
            job.finished_at = job.finished_at.replace(year=2000)
    assert get(stack, "/usage?days=7")["users"] == []


@pytest.mark.parametrize("days", ["0", "x", "-1", "99999", "\u00b2", "9" * 5000])
def test_usage_refuses_a_bad_period(stack, days):
    response = stack.http.get(f"/api/v1/usage?days={days}", headers=stack.headers("alice"))
    assert response.status_code == 400 and "'days'" in response.get_json()["message"]


@pytest.mark.e2e
def test_the_cli_shows_the_queue_workers_and_usage(cluster):
    from test_e2e import jobqueue

    c = cluster()
    c.start_worker("w1", cpus=1)
    running = c.submit("import time; time.sleep(30)\n", name="long")
    c.wait_for(running, lambda j: j["state"] == "running")
    waiting = c.submit("pass\n", name="next")
    queue = jobqueue(c, "queue")
    assert queue.returncode == 0, queue.stderr
    lines = queue.stdout.splitlines()
    assert lines[0].split()[:4] == ["ID", "OWNER", "NAME", "STATE"]
    assert [line.split()[:4] for line in lines[1:]] == [
        [running[:12], "alice", "long", "running"], [waiting[:12], "alice", "next", "queued"]]
    workers = jobqueue(c, "workers")
    assert workers.returncode == 0, workers.stderr
    assert workers.stdout.splitlines()[1].split()[:4] == ["w1", "allocated", "1/1", "1"]
    c.client.cancel(running)
    c.client.wait(waiting, timeout=60)
    usage = jobqueue(c, "usage", "--days", "1", "--json")
    assert usage.returncode == 0, usage.stderr
    assert json.loads(usage.stdout)["users"][0] | {"cpu_hours": 0, "cpu_hours_held": 0,
                                                  "peak_memory": 0} == {
        "user": "alice", "jobs": 2, "succeeded": 1, "failed": 0, "timed_out": 0,
        "cancelled": 1, "cpu_hours": 0, "cpu_hours_held": 0, "peak_memory": 0}
