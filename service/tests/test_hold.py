"""Holding a queued job (as Slurm's scontrol hold): it stays queued, no worker gets it,
its reason says so, until it is released."""

from __future__ import annotations

import pytest


def post(stack, job_id, action, who="alice"):
    return stack.http.post(f"/api/v1/jobs/{job_id}/{action}", headers=stack.headers(who))


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
