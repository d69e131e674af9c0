"""Input that used to reach a 500: each is now a 4xx with a JSON message naming the
problem, and the controller goes on serving (the next request works)."""

from __future__ import annotations

import base64
import io
import json
import threading
from urllib.parse import quote

import pytest

from conftest import tar_bytes


def assert_refused(response, status: int, *words: str) -> None:
    assert response.status_code == status, (response.status_code, response.get_data()[:300])
    body = response.get_json()
    assert body["error"] and body["message"], body
    for word in words:
        assert word in body["message"], body


def test_a_deeply_nested_spec_is_400(stack):
    nested = "[" * 100_000 + "]" * 100_000
    response = stack.submit(spec=json.dumps({"entry": "main.py"})[:-1] + f', "args": {nested}}}')
    assert_refused(response, 400, "nested")
    assert stack.submit_ok()["state"] == "queued"


def test_a_spec_with_nan_is_400(stack):
    assert_refused(stack.submit(spec='{"entry": "main.py", "cpus": NaN}'), 400, "NaN")


@pytest.mark.parametrize("name", ["a" * 300, "dir/" + "b" * 256, ("c" * 200 + "/") * 25 + "d"])
def test_a_file_name_too_long_for_the_disk_is_400(stack, name):
    response = stack.submit(files={"main.py": b"pass\n", name: b"x"})
    assert_refused(response, 400, "too long")
    assert stack.jobs() == []


@pytest.mark.parametrize("names", [("a", "a/b"), ("a/b", "a"), ("a/b/c", "a/b")])
def test_a_file_and_a_directory_of_the_same_name_are_400(stack, names):
    files = {"main.py": b"pass\n"} | {name: b"x" for name in names}
    response = stack.submit(files=files)
    assert_refused(response, 400, "a")
    assert stack.jobs() == []


def test_a_file_where_the_archive_has_a_directory_is_400(stack):
    archive = tar_bytes({"main.py": b"pass\n", "data/x.csv": b"1\n"})
    response = stack.submit(files={"data": b"x"}, archive=archive)
    assert_refused(response, 400, "data")


@pytest.mark.parametrize("stamp", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00",
                                   "2026-01-01T00:00:00"])
def test_a_cursor_out_of_range_or_without_a_zone_is_400(stack, stamp):
    cursor = base64.urlsafe_b64encode(f"{stamp}|x".encode()).decode()
    response = stack.http.get("/api/v1/jobs", query_string={"cursor": cursor},
                              headers=stack.headers("alice"))
    assert_refused(response, 400, "cursor")


def run_to_result(stack, results: bytes) -> str:
    job = stack.submit_ok()
    claimed = stack.claim_ok()
    response = stack.upload(job["id"], claimed["lease"], results=results)
    assert response.status_code == 200, response.get_json()
    return job["id"]


@pytest.mark.parametrize("name", ["a\rb.txt", "a\nb.txt", "tab\there.txt"])
def test_a_result_file_with_a_control_character_downloads(stack, name):
    job_id = run_to_result(stack, tar_bytes({name: b"content"}))
    listed = stack.http.get(f"/api/v1/jobs/{job_id}/files", headers=stack.headers("alice"))
    assert name in [f["path"] for f in listed.get_json()["files"]]
    response = stack.http.get(f"/api/v1/jobs/{job_id}/files/{quote(name)}",
                              headers=stack.headers("alice"))
    assert response.status_code == 200
    assert response.get_data() == b"content"
    disposition = response.headers["Content-Disposition"]
    assert "\r" not in disposition and "\n" not in disposition


@pytest.mark.parametrize("cpus", [10**30, 2**63, 1 << 21])
def test_a_claim_with_absurd_cpus_is_400(stack, cpus):
    stack.submit_ok()
    response = stack.http.post("/api/v1/worker/claim", json={"worker": "w1", "cpus": cpus,
                                                             "wait": 0},
                               headers=stack.headers("w1"))
    assert_refused(response, 400, "cpus")
    assert stack.claim_ok()["state"] == "running"  # the job is still there to claim


@pytest.mark.parametrize("wait", ["NaN", "Infinity", "-Infinity"])
def test_a_claim_waiting_a_non_number_is_400_and_leaves_the_job_queued(stack, wait):
    job = stack.submit_ok()
    body = '{"worker": "w1", "cpus": 1, "wait": ' + wait + "}"
    response = stack.http.post("/api/v1/worker/claim", data=body,
                               content_type="application/json", headers=stack.headers("w1"))
    assert_refused(response, 400, wait.lstrip("-"))
    assert stack.job(job["id"])["state"] == "queued"
    assert stack.claim_ok()["id"] == job["id"]


def test_a_deeply_nested_worker_body_is_400(stack):
    body = '{"worker": "w1", "cpus": ' + "[" * 100_000 + "]" * 100_000 + "}"
    response = stack.http.post("/api/v1/worker/claim", data=body,
                               content_type="application/json", headers=stack.headers("w1"))
    assert_refused(response, 400, "nested")


@pytest.mark.parametrize("code", [10**30, 2**63, -(2**63) - 1, 2**31])
def test_an_exit_code_out_of_range_is_400_and_the_upload_can_be_retried(stack, code):
    job = stack.submit_ok()
    claimed = stack.claim_ok()
    response = stack.upload(job["id"], claimed["lease"], state="failed", exit_code=code)
    assert_refused(response, 400, "exit_code")
    assert stack.job(job["id"])["state"] == "running"
    retried = stack.upload(job["id"], claimed["lease"], state="failed", exit_code=3)
    assert retried.status_code == 200
    assert stack.job(job["id"])["exit_code"] == 3


def test_a_claim_of_nan_does_not_spin_a_thread(stack):
    """What the NaN once did: a controller thread busy for good. Now the request ends."""
    done = threading.Event()

    def claim():
        stack.http.post("/api/v1/worker/claim", data='{"worker": "w1", "wait": NaN}',
                        content_type="application/json", headers=stack.headers("w1"))
        done.set()

    threading.Thread(target=claim, daemon=True).start()
    assert done.wait(5)


def test_the_upload_status_with_nan_is_400(stack):
    job = stack.submit_ok()
    claimed = stack.claim_ok()
    status = '{"lease": "' + claimed["lease"] + '", "state": "failed", "exit_code": NaN}'
    data = {"status": status,
            "stdout": (io.BytesIO(b""), "stdout")}
    response = stack.http.post(f"/api/v1/worker/jobs/{job['id']}/result", data=data,
                               headers=stack.headers("w1"), content_type="multipart/form-data")
    assert_refused(response, 400, "NaN")
