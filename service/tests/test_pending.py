"""Jobs no worker can run, and why queued jobs wait: what workers offer (from their
claims' capacity), checked at submit and shown on every queued job."""

from __future__ import annotations

import datetime as dt

from jobqueue.models import Worker


def offer(stack, cpus: int, who: str = "w1", memory: int | None = None) -> dict | None:
    """A claim of `who` that says it has `cpus` CPUs (and `memory` MiB for its jobs) in
    all; the job it took, if any."""
    capacity = {"cpus": cpus} | ({"memory": memory} if memory is not None else {})
    response = stack.http.post("/api/v1/worker/claim", headers=stack.headers(who),
                               json={"worker": who, "cpus": cpus, "wait": 0,
                                     "capacity": capacity})
    assert response.status_code in (200, 204), response.get_json()
    return response.get_json() if response.status_code == 200 else None


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
    assert listed[second]["pending_reason"] == \
        "waiting for a worker with 1 free CPU(s) and 1024 MiB"
    assert listed[third]["pending_reason"] == "1 job(s) ahead of it in the queue"


def test_a_job_asking_more_memory_than_every_worker_gives_is_refused(stack):
    offer(stack, 4, "w1", memory=900)
    offer(stack, 2, "w2", memory=3000)
    refused = stack.submit(spec={"entry": "main.py", "memory": 200_000})
    assert refused.status_code == 400 and refused.get_json()["error"] == "too_big"
    assert "200000 MiB" in refused.get_json()["message"]
    assert "3000 MiB (w2)" in refused.get_json()["message"]
    # Memory and CPUs must fit on one worker: w1 has the CPUs, w2 the memory.
    both = stack.submit(spec={"entry": "main.py", "cpus": 4, "memory": 2000})
    assert both.status_code == 400 and "900 MiB (w1)" in both.get_json()["message"]
    assert stack.submit(spec={"entry": "main.py", "cpus": 2, "memory": 2000}).status_code \
        == 201


def test_above_the_admin_maxima_is_refused_at_submit(make_stack):
    stack = make_stack(max_job_memory=4096, max_output_limit=100, default_output_limit=50)
    for field, value in (("memory", 4097), ("output_limit", 101)):
        response = stack.submit(spec={"entry": "main.py", field: value})
        assert response.status_code == 400
        assert field in response.get_json()["message"]
    assert stack.submit(spec={"entry": "main.py", "memory": 4096,
                              "output_limit": 100}).status_code == 201


def test_a_worker_is_handed_only_jobs_that_fit_its_memory_left(stack):
    """Asks that add up past the worker's memory wait, so the jobs together never ask
    the host for more than the worker offers."""
    big = [stack.submit_ok(spec={"entry": "main.py", "memory": 600})["id"] for _ in range(3)]
    small = stack.submit_ok(spec={"entry": "main.py", "memory": 200})["id"]
    taken = [offer(stack, 8, memory=1000) for _ in range(4)]
    assert [t["id"] if t else None for t in taken] == [big[0], small, None, None]
    assert {stack.job(i)["state"] for i in big[1:]} == {"queued"}


def test_a_claim_with_a_bad_memory_figure_is_a_4xx(stack):
    for memory in (0, -1, "1G", True, 1 << 40):
        response = stack.http.post("/api/v1/worker/claim", headers=stack.headers("w1"),
                                   json={"worker": "w1", "cpus": 1, "wait": 0,
                                         "capacity": {"cpus": 1, "memory": memory}})
        assert response.status_code == 400, memory
        assert "capacity.memory" in response.get_json()["message"]
