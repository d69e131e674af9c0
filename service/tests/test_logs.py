"""A job's stdout and stderr: kept whole up to the job's output limit (with a line
saying where they were cut), the end of each in the log's JSON, all of it raw."""

from __future__ import annotations

import pytest

from conftest import tar_bytes


def finish(stack, stdout: bytes, stderr: bytes = b"", results: bytes | None = None,
           output_limit: int = 8) -> str:
    job = stack.submit_ok(spec={"entry": "main.py", "output_limit": output_limit})
    lease = stack.claim_ok()["lease"]
    response = stack.upload(job["id"], lease, stdout=stdout, stderr=stderr, results=results)
    assert response.status_code == 200, response.get_json()
    return job["id"]


def raw(stack, job_id: str, name: str, offset: int | None = None):
    query = {} if offset is None else {"offset": offset}
    return stack.http.get(f"/api/v1/jobs/{job_id}/log/{name}", query_string=query,
                          headers=stack.headers("alice"))


def test_the_whole_log_is_kept_and_served_raw(make_stack):
    stack = make_stack(log_tail_bytes=1000)
    stdout = b"".join(b"line %05d\n" % n for n in range(50_000))  # 550 kB
    job_id = finish(stack, stdout, b"warning\n")
    response = raw(stack, job_id, "stdout")
    assert response.status_code == 200 and response.get_data() == stdout
    assert response.headers["X-Log-Size"] == str(len(stdout))
    assert raw(stack, job_id, "stderr").get_data() == b"warning\n"
    assert raw(stack, job_id, "stdout", offset=len(stdout) - 11).get_data() == b"line 49999\n"
    assert raw(stack, job_id, "stdout", offset=len(stdout)).get_data() == b""


def test_the_json_log_shows_the_end_from_a_line_start_and_says_what_it_left_out(make_stack):
    stack = make_stack(log_tail_bytes=1000)
    stdout = b"".join(b"line %05d\n" % n for n in range(50_000))
    job_id = finish(stack, stdout)
    shown = stack.http.get(f"/api/v1/jobs/{job_id}/log", headers=stack.headers("alice"))
    text = shown.get_json()["stdout"]
    marker, _, rest = text.partition("\n")
    assert marker.startswith("[jobqueue: the first ") and "GET .../log/stdout" in marker
    assert rest.startswith("line ") and rest.endswith("line 49999\n")
    assert len(rest) <= 1000 and stdout.endswith(rest.encode())


def test_a_log_over_the_output_limit_is_cut_with_a_marker(stack):
    limit = 1 << 20
    files = tar_bytes({"data.bin": b"x" * (limit // 2)})
    job_id = finish(stack, b"y" * limit, results=files, output_limit=1)
    kept = raw(stack, job_id, "stdout").get_data()
    head, _, marker = kept.rpartition(b"\n[jobqueue: ")
    assert head == b"y" * (limit - limit // 2)  # what the job's files left of its limit
    assert b"cut here at the job's output limit" in marker and b"524288 more bytes" in marker


@pytest.mark.parametrize("path, status", [("log/other", 404), ("log/stdout?offset=-1", 400),
                                          ("log/stdout?offset=x", 400)])
def test_bad_log_requests_are_4xx(stack, path, status):
    job_id = finish(stack, b"out\n")
    response = stack.http.get(f"/api/v1/jobs/{job_id}/{path}", headers=stack.headers("alice"))
    assert response.status_code == status and response.get_json()["message"]


def test_a_running_jobs_log_is_empty_not_an_error(stack):
    job = stack.submit_ok()
    stack.claim_ok()
    response = raw(stack, job["id"], "stdout")
    assert response.status_code == 200 and response.get_data() == b""
    assert response.headers["X-Log-Size"] == "0"
