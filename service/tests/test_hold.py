"""Holding a queued job (as Slurm's scontrol hold): it stays queued, no worker gets it,
its reason says so, until it is released. Requeuing a running one (scontrol requeue):
its attempt loses its lease and stops, and the job starts again."""

from __future__ import annotations

import os
import time

import pytest


def post(stack, job_id, action, who="alice", body=None):
    return stack.http.post(f"/api/v1/jobs/{job_id}/{action}", json=body,
                           headers=stack.headers(who))


def test_a_held_job_is_handed_out_only_once_released(stack):
    held = stack.submit_ok()
    answer = post(stack, held["id"][:6], "hold")
    assert answer.status_code == 200 and answer.get_json()["held"] is True
    later = stack.submit_ok()
    assert stack.claim_ok()["id"] == later["id"]  # the held one is passed over
    assert stack.claim().status_code == 204
    assert stack.job(held["id"])["pending_reason"] == (
        "held: it starts once released (jobqueue release)")
    assert post(stack, held["id"], "release").get_json()["held"] is False
    assert stack.claim_ok()["id"] == held["id"]


def test_only_a_queued_job_of_ones_own_can_be_held(stack):
    running = stack.submit_ok()
    stack.claim_ok()
    refused = post(stack, running["id"], "hold")
    assert refused.status_code == 409
    assert refused.get_json()["message"] == "the job is running: only a queued job can be held"
    theirs = stack.submit_ok("bob")
    assert post(stack, theirs["id"], "hold").status_code == 404
    assert post(stack, theirs["id"], "hold", who="root").status_code == 200  # an admin may


def test_a_held_job_can_still_be_cancelled(stack):
    job = stack.submit_ok()
    post(stack, job["id"], "hold")
    assert post(stack, job["id"], "cancel").get_json()["state"] == "cancelled"


@pytest.mark.e2e
def test_hold_and_release_from_the_command_line(cluster):
    from test_e2e import jobqueue

    c = cluster()
    job = c.submit("print('released')\n", name="to-hold")
    held = jobqueue(c, "hold", "--name", "to-hold")
    assert held.returncode == 0 and held.stdout.strip() == f"job {job} held", held.stderr
    c.start_worker("w1")
    listed = jobqueue(c, "list")
    assert "held: it starts once released" in listed.stdout, listed.stdout
    assert c.client.get(job)["state"] == "queued"
    released = jobqueue(c, "release", job[:8])
    assert released.returncode == 0, released.stderr
    assert c.client.wait(job, timeout=60)["state"] == "succeeded"


def test_a_requeued_job_ends_its_attempts_lease_and_starts_again_uncounted(stack):
    job = stack.submit_ok()
    first = stack.claim_ok()
    answer = post(stack, job["id"][:6], "requeue")
    assert answer.status_code == 200, answer.get_json()
    shown = answer.get_json()
    assert (shown["state"], shown["attempts"], shown["held"], shown["worker"]) == (
        "queued", 0, False, None)
    assert shown["message"] == "requeued by alice"
    assert stack.heartbeat(job["id"], first["lease"]).status_code == 409
    assert stack.upload(job["id"], first["lease"]).status_code == 409
    again = stack.claim_ok()
    assert again["id"] == job["id"] and again["lease"] != first["lease"]
    assert stack.job(job["id"])["attempts"] == 1


def test_a_job_requeued_with_hold_waits_to_be_released(stack):
    job = stack.submit_ok()
    stack.claim_ok()
    shown = post(stack, job["id"], "requeue", body={"hold": True}).get_json()
    assert (shown["state"], shown["held"]) == ("queued", True)
    assert shown["message"] == "requeued by alice and held"
    assert stack.claim().status_code == 204
    post(stack, job["id"], "release")
    assert stack.claim_ok()["id"] == job["id"]


def test_only_a_running_job_of_ones_own_not_being_cancelled_can_be_requeued(stack):
    queued = stack.submit_ok()
    refused = post(stack, queued["id"], "requeue")
    assert refused.status_code == 409
    assert refused.get_json()["message"] == "the job is queued: only a running job can be requeued"
    stack.claim_ok()
    assert post(stack, queued["id"], "requeue", body={"hold": "yes"}).status_code == 400
    theirs = stack.submit_ok("bob")
    stack.claim_ok()
    assert post(stack, theirs["id"], "requeue").status_code == 404
    assert post(stack, theirs["id"], "requeue", who="root").status_code == 200  # an admin may
    post(stack, queued["id"], "cancel")
    assert post(stack, queued["id"], "requeue").get_json()["message"] == (
        "the job is being cancelled")


PID_WRITER = """\
import os, sys, time
with open(sys.argv[1], "a") as fh:
    fh.write(f"{os.getpid()}\\n")
time.sleep(120)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.e2e
def test_requeue_from_the_command_line_stops_the_attempt_and_runs_the_job_again(cluster,
                                                                                tmp_path):
    """On a worker with room for both: the same worker takes the job again at once, and
    stops the attempt that lost its lease."""
    from test_e2e import jobqueue

    c = cluster()
    starts = tmp_path / "pids"
    c.start_worker("w1", cpus=2)
    job = c.submit(PID_WRITER, args=[str(starts)], name="to-requeue")
    c.wait_for(job, lambda j: j["state"] == "running" and starts.is_file())
    requeued = jobqueue(c, "requeue", "--name", "to-requeue")
    assert requeued.returncode == 0, requeued.stderr
    assert requeued.stdout.strip() == f"job {job} requeued"
    deadline = time.monotonic() + 60
    while len(starts.read_text().split()) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    first, second = map(int, starts.read_text().split())
    while _alive(first) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(first), c.logs()
    assert _alive(second)
    shown = c.client.get(job)
    assert (shown["state"], shown["attempts"]) == ("running", 1)
    c.client.cancel(job)
    assert c.client.wait(job, timeout=60)["state"] == "cancelled"
