"""What a crash leaves, finished or dropped: result uploads cut at any step, and claims
whose answer never reached the worker."""

from __future__ import annotations

import io
import subprocess
import sys

from conftest import tar_bytes
from jobqueue.controller.app import create_app
from jobqueue.models import Job


def reopen(stack):
    """A new controller process on the same data: start-up recovery runs."""
    app = create_app(stack.settings)
    stack.app.extensions["jobqueue"].backend.close()
    stack.app, stack.http = app, app.test_client()
    return stack


def stage(stack, job, lease, content=b"result"):
    """A result upload written and marked ready (the step before the commit)."""
    return stack.files.stage_result(job, lease, io.BytesIO(tar_bytes({"out.txt": content})),
                                    io.BytesIO(b"out\n"), io.BytesIO(b""), 1 << 20)


def finish_without_placing(stack, job, lease):
    """The database says succeeded; the crash came before the files were moved."""
    state = stack.app.extensions["jobqueue"]
    with state.session_factory.begin() as session:
        state.backend.finish(session, session.get(Job, job), lease, "succeeded", 0, "")


def read(stack, job, name="out.txt"):
    return stack.http.get(f"/api/v1/jobs/{job}/files/{name}", headers=stack.headers("alice"))


def test_start_up_places_a_result_committed_but_not_moved(stack):
    job = stack.submit_ok()["id"]
    lease = stack.claim_ok()["lease"]
    stage(stack, job, lease, b"mine")
    finish_without_placing(stack, job, lease)
    assert not stack.files.has_result(job)
    reopen(stack)
    assert stack.files.has_result(job)
    assert read(stack, job).data == b"mine"
    assert list(stack.files.uploads.iterdir()) == []


def test_reading_places_a_result_committed_but_not_moved(stack):
    job = stack.submit_ok()["id"]
    lease = stack.claim_ok()["lease"]
    stage(stack, job, lease, b"mine")
    finish_without_placing(stack, job, lease)
    assert read(stack, job).data == b"mine"
    assert stack.http.get(f"/api/v1/jobs/{job}/log",
                          headers=stack.headers("alice")).get_json()["stdout"] == "out\n"


def test_a_retried_upload_brings_back_files_a_crash_lost(stack):
    """The old code answered 'duplicate' to the retry without checking for the files."""
    job = stack.submit_ok()["id"]
    lease = stack.claim_ok()["lease"]
    finish_without_placing(stack, job, lease)  # and the staged files are gone too
    retry = stack.upload(job, lease, results=tar_bytes({"out.txt": b"again"}))
    assert retry.status_code == 200 and retry.get_json()["duplicate"] is True
    assert read(stack, job).data == b"again"
    assert list(stack.files.uploads.iterdir()) == []


def test_start_up_keeps_the_upload_of_a_running_attempt_for_its_retry(stack):
    job = stack.submit_ok()["id"]
    lease = stack.claim_ok()["lease"]
    ready = stage(stack, job, lease)  # crash before the commit
    reopen(stack)
    assert ready.is_dir()
    assert stack.upload(job, lease, results=tar_bytes({"out.txt": b"retry"})).status_code == 200
    assert read(stack, job).data == b"retry"
    assert list(stack.files.uploads.iterdir()) == []


def test_start_up_drops_uploads_of_superseded_attempts_and_dead_staging(stack):
    job = stack.submit_ok()["id"]
    lease = stack.claim_ok()["lease"]
    stale = stage(stack, job, "an-older-lease")
    gone = stage(stack, "0" * 32, "lease-of-a-deleted-job")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    cut = stack.files.uploads / f"staging.{dead}.abcdef"
    (cut / "output").mkdir(parents=True)
    live = stack.files.uploads / "staging.1.abcdef"  # pid 1 runs: a write in progress
    live.mkdir()
    reopen(stack)
    assert not stale.exists() and not gone.exists() and not cut.exists()
    assert live.is_dir()
    assert stack.upload(job, lease).status_code == 200


def test_a_claim_repeated_after_a_lost_answer_gets_the_same_job(stack):
    job = stack.submit_ok()["id"]
    other = stack.submit_ok()["id"]
    body = {"worker": "w1", "cpus": 1, "wait": 0, "claim_id": "c-1"}
    claim = lambda who="w1", **change: stack.http.post(  # noqa: E731
        "/api/v1/worker/claim", json=body | change, headers=stack.headers(who))
    first = claim().get_json()
    again = claim().get_json()
    assert (again["id"], again["lease"], again["attempts"]) == (job, first["lease"], 1)
    # Another worker with the same claim id, or a new claim id, gets the next job.
    assert claim("w2", worker="w2").get_json()["id"] == other
    assert claim(claim_id="c-2").status_code == 204
    # Once the attempt is over, the claim id no longer hands the job out.
    assert stack.upload(job, first["lease"]).status_code == 200
    assert claim().status_code == 204


def test_bad_claim_ids_are_400(stack):
    for claim_id in ("", "x" * 65, 7):
        response = stack.http.post("/api/v1/worker/claim", json={"claim_id": claim_id},
                                   headers=stack.headers("w1"))
        assert response.status_code == 400 and "claim_id" in response.get_json()["message"]
