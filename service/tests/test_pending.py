"""Jobs no worker can run, and why queued jobs wait: what workers offer (from their
claims' capacity), checked at submit and shown on every queued job."""

from __future__ import annotations

import datetime as dt

from jobqueue.models import Worker


def offer(stack, cpus: int, who: str = "w1") -> None:
    """A claim of `who` that says it has `cpus` CPUs in all (and takes nothing)."""
    response = stack.http.post("/api/v1/worker/claim", headers=stack.headers(who),
                               json={"worker": who, "cpus": cpus, "wait": 0,
                                     "capacity": {"cpus": cpus}})
    assert response.status_code in (200, 204), response.get_json()


def test_a_job_larger_than_every_worker_is_refused_naming_the_largest(stack):
    offer(stack, 2, "w1")
    offer(stack, 1, "w2")
    response = stack.submit(spec={"entry": "main.py", "cpus": 8})
    assert response.status_code == 400
    body = response.get_json()
    assert body["error"] == "too_big"
    assert "8 CPUs" in body["message"] and "largest worker (w1) has 2" in body["message"]
    assert stack.jobs() == []
    assert stack.submit_ok(spec={"entry": "main.py", "cpus": 2})["state"] == "queued"


def test_a_worker_that_grew_counts_at_once(stack):
    offer(stack, 2)
    assert stack.submit(spec={"entry": "main.py", "cpus": 4}).status_code == 400
    offer(stack, 8)
    assert stack.submit(spec={"entry": "main.py", "cpus": 4}).status_code == 201


def test_workers_not_seen_within_the_window_do_not_count(stack):
    offer(stack, 2)
    with stack.app.extensions["jobqueue"].session_factory.begin() as session:
        session.get(Worker, "w1").seen_at -= dt.timedelta(days=2)
    job = stack.submit_ok(spec={"entry": "main.py", "cpus": 8})
    assert stack.job(job["id"])["pending_reason"] == "no worker has asked for jobs yet"


def test_held_instead_of_refused_when_so_configured(make_stack):
    stack = make_stack(oversized_jobs="hold")
    offer(stack, 2)
    job = stack.submit_ok(spec={"entry": "main.py", "cpus": 8})
    shown = stack.job(job["id"])
    assert shown["state"] == "queued" and shown["queue_position"] == 1
    assert "largest worker (w1) has 2" in shown["pending_reason"]
    assert "larger worker to join" in shown["pending_reason"]


def test_queued_jobs_show_their_place_and_reason(stack):
    first, second, third = (stack.submit_ok()["id"] for _ in range(3))
    assert stack.job(first)["pending_reason"] == "no worker has asked for jobs yet"
    offer(stack, 1, "w2")  # takes the first job
    assert stack.job(first)["state"] == "running"
    assert "queue_position" not in stack.job(first)
    listed = {j["id"]: j for j in stack.jobs()}
    assert (listed[second]["queue_position"], listed[third]["queue_position"]) == (1, 2)
    assert listed[second]["pending_reason"] == "waiting for a worker with 1 free CPU(s)"
    assert listed[third]["pending_reason"] == "1 job(s) ahead of it in the queue"
