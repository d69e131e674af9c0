"""A running job's logs: its worker streams them to the controller as they grow
(`POST /worker/jobs/{id}/log/{name}?lease=&offset=`), the owner reads them with the
same route as a finished job's, and `jobqueue log -f` follows them to the job's end."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from test_e2e import jobqueue

pytestmark = pytest.mark.e2e


def append(stack, job_id: str, lease: str | None, data: bytes, offset: int = 0,
           name: str = "stdout", who: str = "w1"):
    query = {"offset": offset} | ({"lease": lease} if lease is not None else {})
    return stack.http.post(f"/api/v1/worker/jobs/{job_id}/log/{name}", query_string=query,
                           data=data, headers=stack.headers(who),
                           content_type="application/octet-stream")


def read(stack, job_id: str, name: str = "stdout", offset: int = 0):
    return stack.http.get(f"/api/v1/jobs/{job_id}/log/{name}", query_string={"offset": offset},
                          headers=stack.headers("alice"))


def running(stack, output_limit: int = 8) -> tuple[str, str]:
    job = stack.submit_ok(spec={"entry": "main.py", "output_limit": output_limit})["id"]
    return job, stack.claim_ok()["lease"]


def test_appended_bytes_are_read_while_the_job_runs_and_a_retry_adds_nothing(stack):
    job, lease = running(stack)
    first = append(stack, job, lease, b"first line\n")
    assert first.status_code == 200 and first.get_json() == {"size": 11, "cut": False}
    shown = read(stack, job)
    assert shown.get_data() == b"first line\n"
    assert shown.headers["X-Log-Size"] == "11" and shown.headers["X-Log-Live"] == "true"
    # The same append again (its answer was lost), and one that overlaps what is stored.
    assert append(stack, job, lease, b"first line\n").get_json()["size"] == 11
    assert append(stack, job, lease, b"line\nsecond\n", offset=6).get_json()["size"] == 18
    assert read(stack, job).get_data() == b"first line\nsecond\n"
    assert read(stack, job, offset=11).get_data() == b"second\n"
    assert append(stack, job, lease, b"err\n", name="stderr").get_json()["size"] == 4
    assert stack.http.get(f"/api/v1/jobs/{job}/log", headers=stack.headers("alice")
                          ).get_json() == {"stdout": "first line\nsecond\n", "stderr": "err\n"}
    # Bytes would be missing: refused, nothing stored.
    gap = append(stack, job, lease, b"later\n", offset=30)
    assert gap.status_code == 400 and "past the end" in gap.get_json()["message"]
    assert read(stack, job).headers["X-Log-Size"] == "18"


@pytest.mark.parametrize("offset", [19, 28004748091835, 1 << 63, 10 ** 30])
def test_an_offset_past_the_end_reads_nothing(stack, offset):
    """Past the end, however far (ext4 refuses a seek past 16 TiB with EINVAL, Python
    one past 2^63 with OverflowError): an empty read that says the log's size."""
    job, lease = running(stack)
    append(stack, job, lease, b"first line\nsecond\n")
    shown = read(stack, job, offset=offset)
    assert shown.status_code == 200 and shown.get_data() == b""
    assert shown.headers["X-Log-Size"] == "18"


def test_the_results_logs_replace_the_streamed_ones(stack):
    job, lease = running(stack)
    append(stack, job, lease, b"partial")
    assert stack.upload(job, lease, stdout=b"the whole log\n").status_code == 200
    shown = read(stack, job)
    assert shown.get_data() == b"the whole log\n" and shown.headers["X-Log-Live"] == "false"
    assert not (stack.files.job_dir(job) / "live").exists()
    late = append(stack, job, lease, b"partial more", offset=0)
    assert late.status_code == 409 and late.get_json()["error"] == "lease_lost"


@pytest.mark.parametrize("lease, who", [("not-the-lease", "w1"), (None, "w1"), ("", "w1"),
                                        ("LEASE", "w2")])
def test_an_append_without_the_jobs_lease_is_refused(stack, lease, who):
    job, real = running(stack)
    response = append(stack, job, real if lease == "LEASE" else lease, b"x", who=who)
    assert response.status_code == 409, response.get_data()
    assert response.get_json()["error"] == "lease_lost" and response.get_json()["message"]
    assert read(stack, job).get_data() == b""


@pytest.mark.parametrize("path, status", [("log/other?offset=0", 404),
                                          ("log/stdout?offset=-1", 400),
                                          ("log/stdout?offset=x", 400),
                                          ("log/stdout", 400)])
def test_bad_appends_are_4xx_json(stack, path, status):
    job, lease = running(stack)
    sep = "&" if "?" in path else "?"
    response = stack.http.post(f"/api/v1/worker/jobs/{job}/{path}{sep}lease={lease}",
                               data=b"x", headers=stack.headers("w1"))
    assert response.status_code == status and response.get_json()["message"]
    user = append(stack, job, lease, b"x", who="alice")
    assert user.status_code == 403
    too_big = append(stack, job, lease, b"x" * ((4 << 20) + 1))
    assert too_big.status_code == 413 and too_big.get_json()["error"] == "too_large"


def test_a_streamed_log_over_the_output_limit_is_cut_with_a_marker(stack):
    job, lease = running(stack, output_limit=1)
    limit = 1 << 20
    assert append(stack, job, lease, b"e" * 1000, name="stderr").get_json()["size"] == 1000
    stored = append(stack, job, lease, b"y" * limit).get_json()
    assert stored == {"size": limit - 1000, "cut": True}
    shown = read(stack, job)
    head, _, marker = shown.get_data().rpartition(b"\n[jobqueue: ")
    assert head == b"y" * (limit - 1000) and b"cut here at the job's output limit" in marker
    assert shown.headers["X-Log-Cut"] == "true"
    # Full: more is not kept, a retry changes nothing.
    assert append(stack, job, lease, b"z", offset=limit).get_json() == stored
    assert append(stack, job, lease, b"y" * limit).get_json() == stored
    assert read(stack, job).get_data() == shown.get_data()


# -- a real worker streaming a real job --------------------------------------------------

TWO_LINES = """\
import time
print("first line", flush=True)
time.sleep(float(__import__("sys").argv[1]))
print("second line")
"""


def test_a_running_jobs_log_reaches_its_owner_and_log_f_follows_it(cluster):
    c = cluster()
    c.start_worker("w1", log_seconds=0.2)
    job_id = c.submit(TWO_LINES, args=["4"])
    follower = follow(c, job_id[:8])
    deadline = time.monotonic() + 30
    while True:
        assert time.monotonic() < deadline, c.logs()
        response = c.client._request("GET", f"/jobs/{job_id}/log/stdout")
        if response.content:
            break
        time.sleep(0.1)
    assert response.content == b"first line\n", c.logs()
    assert response.headers["X-Log-Live"] == "true"
    assert c.client.get(job_id)["state"] == "running"
    out, err = follower.communicate(timeout=60)
    assert follower.returncode == 0, err
    assert out == "first line\nsecond line\n"
    assert err.strip() == f"job {job_id} succeeded"
    assert b"".join(c.client.follow_log(job_id)) == b"first line\nsecond line\n"


def follow(c, *argv: str) -> subprocess.Popen:
    """`jobqueue log -f ARGV` as alice, in the background."""
    env = dict(os.environ, JOBQUEUE_URL=c.url, JOBQUEUE_TOKEN=c.tokens["alice"])
    return subprocess.Popen([sys.executable, "-m", "jobqueue.client.cli", "log", "-f", *argv],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_log_f_ends_with_the_jobs_exit_status_for_a_job_that_fails_and_follows_stderr(cluster):
    c = cluster()
    c.start_worker("w1", log_seconds=0.2)
    job_id = c.submit("import sys, time\nprint('oops', file=sys.stderr, flush=True)\n"
                      "time.sleep(1)\nsys.exit(2)\n")
    result = jobqueue(c, "log", "-f", "--stderr", job_id)
    assert result.returncode == 2, result.stderr  # the job's sys.exit(2)
    assert result.stdout == ""
    assert result.stderr.startswith("oops\n") and result.stderr.endswith(f"job {job_id} failed\n")
    assert jobqueue(c, "log", "--stderr", job_id).returncode == 2  # --stderr goes with -f


def test_a_jobs_output_over_its_limit_stops_streaming_with_the_cut_marker(cluster):
    c = cluster()
    c.start_worker("w1", log_seconds=0.2)
    job_id = c.submit("import sys, time\n"
                      "sys.stderr.write('e' * 600_000); sys.stderr.flush()\n"
                      "time.sleep(1.5)\n"
                      "sys.stdout.write('o' * 600_000); sys.stdout.flush()\n"
                      "time.sleep(60)\n", output_limit=1)
    deadline = time.monotonic() + 30
    while b"cut here" not in (shown := c.client._request(
            "GET", f"/jobs/{job_id}/log/stdout")).content:
        assert time.monotonic() < deadline, c.logs()
        time.sleep(0.2)
    assert shown.headers["X-Log-Cut"] == "true" and c.client.get(job_id)["state"] == "running"
    kept, _, marker = shown.content.partition(b"\n[jobqueue: ")
    assert kept == b"o" * ((1 << 20) - 600_000)
    assert marker.startswith(b"stdout cut here at the job's output limit")
    c.client.cancel(job_id)
    followed = b"".join(c.client.follow_log(job_id))  # the live log, up to its marker
    assert followed == shown.content
    assert c.client.get(job_id)["state"] == "cancelled"


def test_log_f_waits_for_a_queued_job(cluster):
    c = cluster()
    job_id = c.submit("print('late')\n")
    follower = follow(c, job_id)
    time.sleep(1.5)
    assert follower.poll() is None  # no worker yet: still waiting
    c.start_worker("w1")
    out, err = follower.communicate(timeout=60)
    assert (follower.returncode, out) == (0, "late\n"), err

