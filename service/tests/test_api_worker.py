"""The worker side of the API and the job lifecycle: claims, leases, uploads, roles."""

from __future__ import annotations

import datetime as dt
import io
import json
import tarfile
import threading
import time

import pytest

from conftest import SCRIPT, tar_bytes
from jobqueue.controller import admin
from jobqueue.controller.app import create_app
from jobqueue.models import Job, utcnow

USER_ROUTES = [("get", "/api/v1/jobs"), ("post", "/api/v1/jobs"), ("get", "/api/v1/jobs/J"),
               ("get", "/api/v1/jobs/J/files"), ("get", "/api/v1/jobs/J/files/main.py"),
               ("get", "/api/v1/jobs/J/log"), ("get", "/api/v1/jobs/J/results"),
               ("post", "/api/v1/jobs/J/cancel"), ("delete", "/api/v1/jobs/J")]
WORKER_ROUTES = [("post", "/api/v1/worker/claim"), ("post", "/api/v1/worker/jobs/J/heartbeat"),
                 ("get", "/api/v1/worker/jobs/J/input"), ("post", "/api/v1/worker/jobs/J/result"),
                 ("post", "/api/v1/worker/jobs/J/release"),
                 ("post", "/api/v1/worker/jobs/J/log/stdout")]
ALL_ROUTES = USER_ROUTES + WORKER_ROUTES + [("get", "/metrics"), ("get", "/api/v1/openapi.json"),
                                            ("get", "/api/v1/me")]


def call(stack, method, path, who=None, job="0" * 32, headers=None):
    return getattr(stack.http, method)(path.replace("J", job),
                                       headers=headers if headers else stack.headers(who))


@pytest.mark.parametrize("method, path", ALL_ROUTES)
def test_every_route_needs_a_token(stack, method, path):
    for headers in (None, {"Authorization": "Bearer jq_wrong"}, {"Authorization": "Basic eDp5"},
                    {"Authorization": "Bearer "}):
        response = call(stack, method, path, headers=headers)
        assert response.status_code == 401, headers
        assert response.get_json()["error"] == "unauthorized"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("method, path", USER_ROUTES)
def test_workers_cannot_use_user_routes(stack, method, path):
    job = stack.submit_ok()["id"]
    assert call(stack, method, path, "w1", job).status_code == 403


@pytest.mark.parametrize("method, path", WORKER_ROUTES)
@pytest.mark.parametrize("who", ["alice", "root"])
def test_users_cannot_use_worker_routes(stack, method, path, who):
    job = stack.submit_ok()["id"]
    assert call(stack, method, path, who, job).status_code == 403
    assert stack.job(job)["state"] == "queued"


def test_metrics_are_for_admins(stack):
    stack.submit_ok()
    assert stack.http.get("/metrics", headers=stack.headers("alice")).status_code == 403
    response = stack.http.get("/metrics", headers=stack.headers("root"))
    text = response.get_data(as_text=True)
    assert response.status_code == 200
    assert 'jobqueue_jobs{state="queued"} 1.0' in text
    assert "jobqueue_queue_depth 1.0" in text
    stack.claim_ok()
    text = stack.http.get("/metrics", headers=stack.headers("root")).get_data(as_text=True)
    assert "jobqueue_claim_latency_seconds_count 1.0" in text


def test_anonymous_access_only_when_configured(make_stack):
    closed = make_stack()
    assert closed.http.get("/api/v1/jobs").status_code == 401
    opened = make_stack(allow_anonymous=True)
    response = opened.submit(who=None)
    assert response.status_code == 201 and response.get_json()["owner"] == "anonymous"
    assert opened.claim(who=None).status_code == 403  # anonymous is a user, never a worker


def test_revoked_token_is_refused(stack):
    from jobqueue.controller.admin import main as admin

    assert stack.http.get("/api/v1/jobs", headers=stack.headers("bob")).status_code == 200
    import os
    os.environ["JOBQUEUE_DATABASE_URL"] = stack.settings.database_url
    try:
        assert admin(["--config", "/nonexistent", "revoke-tokens", "bob"]) == 0
    finally:
        del os.environ["JOBQUEUE_DATABASE_URL"]
    assert stack.http.get("/api/v1/jobs", headers=stack.headers("bob")).status_code == 401


def test_a_rotation_revokes_all_but_the_token_it_keeps(stack, monkeypatch, capsys):
    monkeypatch.setenv("JOBQUEUE_DATABASE_URL", stack.settings.database_url)
    old = stack.tokens["w1"]
    assert admin.main(["--config", "/nonexistent", "issue-token", "w1"]) == 0
    new = capsys.readouterr().out.strip()
    # A token that is not w1's keeps nothing and revokes nothing.
    monkeypatch.setattr("sys.stdin", io.StringIO(stack.tokens["bob"] + "\n"))
    assert admin.main(["--config", "/nonexistent", "revoke-tokens", "w1", "--keep-stdin"]) == 2
    assert "not a live token of w1" in capsys.readouterr().err
    assert stack.claim(who="w1").status_code == 204  # nothing queued
    monkeypatch.setattr("sys.stdin", io.StringIO(new + "\n"))
    assert admin.main(["--config", "/nonexistent", "revoke-tokens", "w1", "--keep-stdin"]) == 0
    assert json.loads(capsys.readouterr().out) == {"user": "w1", "revoked": 1}
    assert stack.claim(who="w1").status_code == 401
    stack.tokens["w1"] = new
    assert stack.claim(who="w1").status_code == 204  # nothing queued
    assert old != new


def test_claim_hands_out_oldest_fitting_job_once(stack):
    first = stack.submit_ok()["id"]
    big = stack.submit_ok(spec={"entry": "main.py", "cpus": 4})["id"]
    third = stack.submit_ok()["id"]
    claimed = stack.claim_ok(cpus=1)
    assert claimed["id"] == first and claimed["state"] == "running" and claimed["lease"]
    assert claimed["worker"] == "w1" and claimed["attempts"] == 1
    assert stack.claim_ok(cpus=2)["id"] == third  # the 4-CPU job does not fit in 2
    assert stack.claim(cpus=2).status_code == 204
    assert stack.claim_ok(cpus=4)["id"] == big


def test_claim_long_poll_wakes_on_submit(stack):
    got = {}

    def waiter():
        started = time.monotonic()
        got["response"] = stack.claim(wait=10)
        got["waited"] = time.monotonic() - started

    thread = threading.Thread(target=waiter)
    thread.start()
    time.sleep(0.3)
    job = stack.submit_ok()["id"]
    thread.join(15)
    assert got["response"].status_code == 200 and got["response"].get_json()["id"] == job
    # Woken by the submission, not by the once-a-second re-check or the 10 s wait.
    assert got["waited"] < 0.3 + 0.9


def claim_with_capacity(stack, cpus, capacity, wait=0):
    body = {"worker": "w1", "cpus": cpus, "wait": wait, "capacity": capacity}
    return stack.http.post("/api/v1/worker/claim", json=body, headers=stack.headers("w1"))


def test_a_claim_with_capacity_fits_the_job_to_what_is_free_when_handed_out(stack):
    first = stack.submit_ok()["id"]
    claimed = claim_with_capacity(stack, 2, {"cpus": 2}).get_json()
    assert claimed["id"] == first
    big = stack.submit_ok(spec={"entry": "main.py", "cpus": 2})["id"]
    # One of the two CPUs is taken by the running job, whatever 'cpus' says is free.
    assert claim_with_capacity(stack, 2, {"cpus": 2}).status_code == 204
    assert stack.upload(first, claimed["lease"]).status_code == 200
    # A stale 'cpus' (one free, as when the claim was sent) no longer holds it back.
    assert claim_with_capacity(stack, 1, {"cpus": 2}).get_json()["id"] == big


def test_a_claim_with_capacity_counts_the_workers_jobs(stack):
    stack.submit_ok()
    stack.submit_ok()
    assert claim_with_capacity(stack, 4, {"cpus": 4, "jobs": 1}).status_code == 200
    assert claim_with_capacity(stack, 4, {"cpus": 4, "jobs": 1}).status_code == 204
    assert claim_with_capacity(stack, 4, {"cpus": 4, "jobs": 2}).status_code == 200


def test_a_waiting_claim_wakes_when_its_workers_job_ends(stack):
    first = stack.submit_ok()["id"]
    lease = claim_with_capacity(stack, 1, {"cpus": 1}).get_json()["lease"]
    second = stack.submit_ok()["id"]
    got = {}

    def waiter():
        started = time.monotonic()
        got["response"] = claim_with_capacity(stack, 1, {"cpus": 1}, wait=10)
        got["waited"] = time.monotonic() - started

    thread = threading.Thread(target=waiter)
    thread.start()
    time.sleep(0.3)
    assert stack.upload(first, lease).status_code == 200
    thread.join(15)
    assert got["response"].get_json()["id"] == second
    assert got["waited"] < 0.3 + 0.5  # woken by the end of the job, not the 1 s re-check


def test_slots_a_worker_set_aside_show_in_the_metrics_and_jobqueue_admin(
        stack, database_url, monkeypatch, capsys):
    assert claim_with_capacity(stack, 2, {"cpus": 2, "jobs": 1, "quarantined": 1}
                               ).status_code == 204
    text = stack.http.get("/metrics", headers=stack.headers("root")).get_data(as_text=True)
    assert 'jobqueue_worker_quarantined_slots{worker="w1"} 1.0' in text
    monkeypatch.setenv("JOBQUEUE_DATABASE_URL", database_url)
    assert admin.main(["--config", "/nonexistent.toml", "workers"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["worker"], r["cpus"], r["jobs"], r["quarantined_slots"]) for r in rows] == \
        [("w1", 2, 1, 1)]


def test_a_drained_worker_keeps_its_job_and_gets_no_new_one_until_resumed(
        stack, database_url, monkeypatch, capsys):
    root = stack.headers("root")
    assert stack.http.post("/api/v1/workers/w1/drain", headers=root).status_code == 404
    first, second = stack.submit_ok()["id"], stack.submit_ok()["id"]
    running = claim_with_capacity(stack, 1, {"cpus": 2}).get_json()
    assert running["id"] == first
    drained = stack.http.post("/api/v1/workers/w1/drain", headers=root)
    assert drained.status_code == 200
    assert (drained.get_json()["drained"], drained.get_json()["running"]) == (True, 1)
    assert stack.http.post("/api/v1/workers/w1/drain",
                           headers=stack.headers("alice")).status_code == 403
    assert claim_with_capacity(stack, 1, {"cpus": 2}).status_code == 204
    assert stack.heartbeat(first, running["lease"]).status_code == 200  # its job goes on
    # Another worker still gets the queued job; the drain is shown to admins.
    assert stack.http.post("/api/v1/worker/claim", headers=stack.headers("w2"), json={
        "worker": "w2", "cpus": 1, "wait": 0, "capacity": {"cpus": 1}}).get_json()["id"] == second
    listed = {w["worker"]: w for w in stack.http.get("/api/v1/workers", headers=root).get_json()}
    assert listed["w1"]["drained"] and not listed["w2"]["drained"]
    monkeypatch.setenv("JOBQUEUE_DATABASE_URL", database_url)
    assert admin.main(["--config", "/nonexistent.toml", "resume", "w1"]) == 0
    assert json.loads(capsys.readouterr().out)["drained"] is False
    third = stack.submit_ok()["id"]
    assert claim_with_capacity(stack, 1, {"cpus": 2}).get_json()["id"] == third
    assert admin.main(["--config", "/nonexistent.toml", "drain", "nobody"]) == 2
    assert "no worker named 'nobody'" in capsys.readouterr().err


def test_jobqueue_admin_drain_waits_for_the_running_jobs(stack, database_url, monkeypatch,
                                                         capsys):
    monkeypatch.setenv("JOBQUEUE_DATABASE_URL", database_url)
    job_id = stack.submit_ok()["id"]
    lease = claim_with_capacity(stack, 1, {"cpus": 2}).get_json()["lease"]
    drain = ["--config", "/nonexistent.toml", "drain", "w1", "--wait"]
    assert admin.main([*drain, "0.5"]) == 0  # it gives up: the job still runs
    assert json.loads(capsys.readouterr().out)["running"] == 1
    ends = threading.Timer(1.0, lambda: stack.upload(job_id, lease))
    ends.start()
    started = time.monotonic()
    assert admin.main([*drain, "60"]) == 0
    ends.join()
    found = json.loads(capsys.readouterr().out)
    assert (found["drained"], found["running"]) == (True, 0)
    assert time.monotonic() - started < 30


def test_a_controller_process_that_starts_renews_leases_no_worker_could(stack):
    job_id = stack.submit_ok()["id"]
    lease = stack.claim_ok()["lease"]
    # The lease ran out while no controller process served (an upgrade): the job ended
    # meanwhile, and its worker has been trying to report.
    with stack.app.extensions["jobqueue"].session_factory.begin() as session:
        session.get(Job, job_id).lease_expires_at = utcnow() - dt.timedelta(seconds=5)
    restarted = create_app(stack.settings)
    try:
        answer = restarted.test_client().post(
            f"/api/v1/worker/jobs/{job_id}/heartbeat", json={"lease": lease},
            headers=stack.headers("w1"))
        assert answer.status_code == 200, answer.get_json()
        assert stack.upload(job_id, lease).status_code == 200
        assert (stack.job(job_id)["state"], stack.job(job_id)["attempts"]) == ("succeeded", 1)
    finally:
        restarted.extensions["jobqueue"].backend.close()
        restarted.extensions["jobqueue"].session_factory.kw["bind"].dispose()


def test_a_claim_in_flight_when_its_worker_is_drained_takes_no_job(stack):
    # The claim read "not drained" before the drain: the job submitted after it must
    # still not go to the drained worker, or an admin counting its running jobs to
    # zero would restart it under a job.
    root = stack.headers("root")
    assert claim_with_capacity(stack, 1, {"cpus": 1}).status_code == 204
    got = {}
    thread = threading.Thread(target=lambda: got.update(
        response=claim_with_capacity(stack, 1, {"cpus": 1}, wait=3)))
    thread.start()
    time.sleep(0.5)  # the claim is waiting for a job
    assert stack.http.post("/api/v1/workers/w1/drain", headers=root).status_code == 200
    job = stack.submit_ok()["id"]
    thread.join(15)
    assert got["response"].status_code == 204
    assert stack.job(job)["state"] == "queued"


@pytest.mark.parametrize("capacity", [0, [], {"cpus": 0}, {"cpus": "2"}, {"jobs": 1},
                                      {"cpus": 2, "jobs": 0}, {"cpus": 2, "gpus": 1},
                                      {"cpus": 1 << 30}, {"cpus": 2, "quarantined": -1},
                                      {"cpus": 2, "quarantined": "1"}])
def test_a_bad_capacity_is_400(stack, capacity):
    response = claim_with_capacity(stack, 1, capacity)
    assert response.status_code == 400 and "capacity" in response.get_json()["message"]


def test_claim_wait_is_bounded_by_settings(make_stack):
    stack = make_stack(claim_wait_seconds=1)
    started = time.monotonic()
    assert stack.claim(wait=60).status_code == 204
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("body", [{"cpus": 0}, {"cpus": "2"}, {"wait": -1}, {"worker": ""},
                                  {"worker": 5}, []])
def test_bad_claims_are_400(stack, body):
    response = stack.http.post("/api/v1/worker/claim", json=body, headers=stack.headers("w1"))
    assert response.status_code == 400


def test_input_archive_holds_the_submitted_files(stack):
    job = stack.submit_ok(files={"main.py": SCRIPT, "d/x.txt": b"x"})["id"]
    lease = stack.claim_ok()["lease"]
    response = stack.http.get(f"/api/v1/worker/jobs/{job}/input?lease={lease}",
                              headers=stack.headers("w1"))
    with tarfile.open(fileobj=io.BytesIO(response.data)) as tar:
        assert sorted(tar.getnames()) == ["d/x.txt", "main.py"]
    wrong = stack.http.get(f"/api/v1/worker/jobs/{job}/input?lease=nope",
                           headers=stack.headers("w1"))
    assert wrong.status_code == 409


def test_heartbeat_extends_lease_and_reports_cancel(stack):
    job = stack.submit_ok()["id"]
    lease = stack.claim_ok()["lease"]
    beat = stack.heartbeat(job, lease)
    assert beat.status_code == 200 and beat.get_json()["cancel"] is False
    stack.http.post(f"/api/v1/jobs/{job}/cancel", headers=stack.headers("alice"))
    assert stack.job(job)["state"] == "running" and stack.job(job)["cancel_requested"]
    assert stack.heartbeat(job, lease).get_json()["cancel"] is True
    assert stack.upload(job, lease, state="cancelled", exit_code=-15).status_code == 200
    assert stack.job(job)["state"] == "cancelled"
    assert stack.heartbeat(job, lease).status_code == 409


def test_heartbeat_with_wrong_lease_is_409(stack):
    job = stack.submit_ok()["id"]
    stack.claim_ok()
    response = stack.heartbeat(job, "not-the-lease")
    assert response.status_code == 409 and response.get_json()["error"] == "lease_lost"
    assert stack.heartbeat(job, None).status_code == 400


@pytest.mark.parametrize("state, code", [("succeeded", 0), ("failed", 3), ("timed_out", -9)])
def test_upload_finishes_the_job(stack, state, code):
    job = stack.submit_ok()["id"]
    lease = stack.claim_ok()["lease"]
    response = stack.upload(job, lease, state=state, exit_code=code)
    assert response.status_code == 200 and response.get_json()["duplicate"] is False
    finished = stack.job(job)
    assert (finished["state"], finished["exit_code"]) == (state, code)
    assert finished["finished_at"] is not None


def test_retried_upload_is_idempotent(stack):
    job = stack.submit_ok()["id"]
    lease = stack.claim_ok()["lease"]
    assert stack.upload(job, lease, results=tar_bytes({"out.txt": b"first"})).status_code == 200
    retry = stack.upload(job, lease, results=tar_bytes({"out.txt": b"second"}))
    assert retry.status_code == 200 and retry.get_json()["duplicate"] is True
    files = stack.http.get(f"/api/v1/jobs/{job}/files/out.txt", headers=stack.headers("alice"))
    assert files.data == b"first"  # the retry changed nothing
    assert stack.job(job)["state"] == "succeeded"


def test_upload_for_a_queued_job_or_wrong_lease_is_409(stack):
    job = stack.submit_ok()["id"]
    assert stack.upload(job, "made-up").status_code == 409
    lease = stack.claim_ok()["lease"]
    assert stack.upload(job, lease + "x").status_code == 409
    assert stack.job(job)["state"] == "running"


def test_late_upload_from_an_expired_lease_is_refused(make_stack):
    stack = make_stack(lease_seconds=1)
    job = stack.submit_ok()["id"]
    old = stack.claim_ok(who="w1")["lease"]
    time.sleep(1.2)
    stack.backend.sync(force=True)
    requeued = stack.job(job)
    assert requeued["state"] == "queued" and requeued["attempts"] == 1
    new = stack.claim_ok(who="w2")
    assert new["attempts"] == 2 and new["worker"] == "w2"
    late = stack.upload(job, old, results=tar_bytes({"out.txt": b"late"}), who="w1")
    assert late.status_code == 409
    assert stack.upload(job, new["lease"], who="w2",
                        results=tar_bytes({"out.txt": b"on time"})).status_code == 200
    out = stack.http.get(f"/api/v1/jobs/{job}/files/out.txt", headers=stack.headers("alice"))
    assert out.data == b"on time"


def test_expired_lease_refused_even_before_the_sweep(make_stack):
    stack = make_stack(lease_seconds=1)
    job = stack.submit_ok()["id"]
    lease = stack.claim_ok()["lease"]
    time.sleep(1.2)
    assert stack.heartbeat(job, lease).status_code == 409
    assert stack.upload(job, lease).status_code == 409


def test_lease_expiry_after_max_attempts_is_lost(make_stack):
    stack = make_stack(lease_seconds=1, max_attempts=2)
    job = stack.submit_ok()["id"]
    for _ in range(2):
        stack.claim_ok()
        time.sleep(1.2)
        stack.backend.sync(force=True)
    lost = stack.job(job)
    assert lost["state"] == "lost" and lost["attempts"] == 2 and lost["finished_at"]
    assert stack.claim().status_code == 204


def test_lease_expiry_of_a_cancelled_job_cancels_it(make_stack):
    stack = make_stack(lease_seconds=1)
    job = stack.submit_ok()["id"]
    stack.claim_ok()
    stack.http.post(f"/api/v1/jobs/{job}/cancel", headers=stack.headers("alice"))
    time.sleep(1.2)
    stack.backend.sync(force=True)
    assert stack.job(job)["state"] == "cancelled"


def test_a_worker_token_cannot_claim_in_another_workers_name(stack):
    stack.submit_ok()
    response = stack.http.post("/api/v1/worker/claim", json={"worker": "w2", "cpus": 1,
                                                             "wait": 0},
                               headers=stack.headers("w1"))
    assert response.status_code == 403 and "'w1'" in response.get_json()["message"]


def test_another_worker_with_a_stolen_lease_is_refused_everywhere(stack):
    job = stack.submit_ok()["id"]
    lease = stack.claim_ok(who="w1")["lease"]
    w2 = stack.headers("w2")
    assert stack.heartbeat(job, lease, who="w2").status_code == 409
    assert stack.http.get(f"/api/v1/worker/jobs/{job}/input?lease={lease}",
                          headers=w2).status_code == 409
    assert stack.upload(job, lease, who="w2").status_code == 409
    assert stack.http.post(f"/api/v1/worker/jobs/{job}/release", json={"lease": lease},
                           headers=w2).status_code == 409
    # The job is untouched: its own worker finishes it.
    assert stack.heartbeat(job, lease, who="w1").status_code == 200
    assert stack.upload(job, lease, who="w1").status_code == 200


def test_release_with_an_error_uses_up_attempts_then_fails_the_job(make_stack):
    stack = make_stack(max_attempts=2)
    job = stack.submit_ok()["id"]
    messages = []
    for _ in range(2):
        lease = stack.claim_ok()["lease"]
        response = stack.http.post(f"/api/v1/worker/jobs/{job}/release",
                                   json={"lease": lease, "error": "OSError: disk full"},
                                   headers=stack.headers("w1"))
        assert response.status_code == 200
        messages.append(stack.job(job)["message"])
    assert "attempt 1 failed on its worker: OSError: disk full" in messages[0]
    failed = stack.job(job)
    assert (failed["state"], failed["attempts"]) == ("failed", 2) and failed["finished_at"]
    assert "OSError: disk full" in failed["message"]
    assert stack.claim().status_code == 204


def test_release_rejects_a_bad_error_field(stack):
    job = stack.submit_ok()["id"]
    lease = stack.claim_ok()["lease"]
    response = stack.http.post(f"/api/v1/worker/jobs/{job}/release",
                               json={"lease": lease, "error": 42}, headers=stack.headers("w1"))
    assert response.status_code == 400 and "'error'" in response.get_json()["message"]


def test_release_requeues_without_using_an_attempt(stack):
    job = stack.submit_ok()["id"]
    lease = stack.claim_ok()["lease"]
    response = stack.http.post(f"/api/v1/worker/jobs/{job}/release", json={"lease": lease},
                               headers=stack.headers("w1"))
    assert response.status_code == 200
    requeued = stack.job(job)
    assert requeued["state"] == "queued" and requeued["attempts"] == 0
    assert stack.claim_ok()["id"] == job
    again = stack.http.post(f"/api/v1/worker/jobs/{job}/release", json={"lease": lease},
                            headers=stack.headers("w1"))
    assert again.status_code == 409


@pytest.mark.parametrize("status", ["not json", '{"state": "succeeded"}',
                                    '{"lease": "x", "state": "running"}',
                                    '{"lease": "x", "state": "succeeded", "exit_code": "0"}'])
def test_malformed_result_status_is_400(stack, status):
    job = stack.submit_ok()["id"]
    stack.claim_ok()
    response = stack.http.post(f"/api/v1/worker/jobs/{job}/result", data={"status": status},
                               headers=stack.headers("w1"), content_type="multipart/form-data")
    assert response.status_code == 400
    assert stack.job(job)["state"] == "running"


def test_unsafe_result_archive_is_refused_and_job_kept(stack):
    job = stack.submit_ok()["id"]
    lease = stack.claim_ok()["lease"]
    response = stack.upload(job, lease, results=tar_bytes({}, links={"x": "/etc/shadow"}))
    assert response.status_code == 400
    assert stack.job(job)["state"] == "running"
    assert stack.upload(job, lease, results=tar_bytes({"ok.txt": b"ok"})).status_code == 200


def test_results_over_the_output_limit_are_413(stack):
    job = stack.submit_ok(spec={"entry": "main.py", "output_limit": 1})["id"]
    lease = stack.claim_ok()["lease"]
    response = stack.upload(job, lease, results=tar_bytes({"big": b"\0" * (2 << 20)}))
    assert response.status_code == 413
    assert stack.job(job)["state"] == "running"


def test_many_concurrent_claims_hand_each_job_out_once(stack):
    jobs = {stack.submit_ok()["id"] for _ in range(12)}
    claimed, lock = [], threading.Lock()

    def worker(name):
        while True:
            response = stack.claim(who=name)
            if response.status_code == 204:
                return
            with lock:
                claimed.append(response.get_json()["id"])

    threads = [threading.Thread(target=worker, args=(n,)) for n in ("w1", "w2") * 3]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(claimed) == sorted(jobs)


def test_jobs_cannot_go_back_from_finished(stack):
    job = stack.submit_ok()["id"]
    lease = stack.claim_ok()["lease"]
    stack.upload(job, lease)
    assert stack.http.post(f"/api/v1/worker/jobs/{job}/release", json={"lease": lease},
                           headers=stack.headers("w1")).status_code == 409
    assert stack.heartbeat(job, lease).status_code == 409
    assert stack.job(job)["state"] == "succeeded"
    assert utcnow()  # timestamps are aware UTC


@pytest.mark.parametrize("who, role", [("alice", "user"), ("root", "admin"), ("w1", "worker")])
def test_me_names_the_token_holder(stack, who, role):
    response = call(stack, "get", "/api/v1/me", who)
    assert response.status_code == 200
    me = response.get_json()
    assert (me["name"], me["role"]) == (who, role)
    assert me["token"]["current"] is True and me["token"]["revoked_at"] is None


def test_fair_share_between_users_submission_order_within_one(stack):
    """The user with the fewest CPUs in use goes first; a user's own jobs go in the
    order they were submitted."""
    alice = [stack.submit_ok("alice")["id"] for _ in range(3)]
    bob = stack.submit_ok("bob")["id"]
    order = [stack.claim_ok(cpus=8)["id"] for _ in range(4)]
    # alice's first (the oldest, nobody busy), then bob's (alice has a CPU in use,
    # bob none) although alice's second is older, then alice's others in order.
    assert order == [alice[0], bob, alice[1], alice[2]]


def test_fair_share_counts_cpus_not_jobs(stack):
    wide = stack.submit_ok("alice", spec={"entry": "main.py", "cpus": 4})["id"]
    alice_next = stack.submit_ok("alice")["id"]
    bob = [stack.submit_ok("bob")["id"] for _ in range(3)]
    order = [stack.claim_ok(cpus=8)["id"] for _ in range(5)]
    # alice has 4 CPUs in use after her first: bob's three one-CPU jobs (1, 2, 3 CPUs in
    # use) all go before her next, older though it is. Counting jobs, not CPUs, would
    # have let it in second.
    assert order == [wide, *bob, alice_next]
