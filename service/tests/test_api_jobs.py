"""The user side of the API: submit, list, read, cancel, delete, and every bad input."""

from __future__ import annotations

import html
import io
import json
import re
import tarfile
from pathlib import Path

import pytest

from conftest import SCRIPT, tar_bytes


def job_dirs(stack) -> set[str]:
    root = Path(stack.settings.data_dir) / "jobs"
    return {p.name for p in root.iterdir()} if root.exists() else set()


def test_healthz_needs_no_token(stack):
    response = stack.http.get("/healthz")
    assert response.status_code == 200
    assert response.get_json()["status"] == "ok"


def test_submit_returns_unguessable_id_and_links(stack):
    first = stack.submit_ok()
    second = stack.submit_ok()
    assert first["state"] == "queued" and first["owner"] == "alice"
    assert len(first["id"]) == 32 and first["id"] != second["id"]
    assert int(first["id"], 16) != int(second["id"], 16) - 1  # not sequential
    assert first["links"]["self"] == f"/api/v1/jobs/{first['id']}"
    assert {"files", "log", "results", "cancel"} <= set(first["links"])


def test_submit_applies_spec_and_defaults(stack):
    job = stack.submit_ok(spec={"entry": "main.py", "name": "sweep", "args": ["-n", "3"],
                                "cpus": 2, "walltime": 60})
    assert (job["name"], job["args"], job["cpus"], job["walltime"]) == (
        "sweep", ["-n", "3"], 2, 60)
    assert job["memory"] == stack.settings.default_memory
    assert job["output_limit"] == stack.settings.default_output_limit


def test_submit_with_nested_files_and_archive(stack):
    job = stack.submit_ok(files={"main.py": SCRIPT, "data/in.txt": b"1 2 3"},
                          archive=tar_bytes({"more/extra.csv": b"a,b"}))
    files = stack.http.get(f"/api/v1/jobs/{job['id']}/files", headers=stack.headers("alice"))
    assert [f["path"] for f in files.get_json()["files"]] == [
        "data/in.txt", "main.py", "more/extra.csv"]


@pytest.mark.parametrize("spec, message", [
    (None, "spec"),
    ("{not json", "not valid JSON"),
    ("[1, 2]", "JSON object"),
    ({"entry": "main.py", "colour": "red"}, "colour"),
    ({}, "entry"),
    ({"entry": "other.py"}, "not among the uploaded files"),
    ({"entry": "../main.py"}, "leaves the job directory"),
    ({"entry": "main.py", "cpus": 0}, "cpus"),
    ({"entry": "main.py", "cpus": 1000}, "cpus"),
    ({"entry": "main.py", "cpus": "2"}, "cpus"),
    ({"entry": "main.py", "cpus": True}, "cpus"),
    ({"entry": "main.py", "walltime": -5}, "walltime"),
    ({"entry": "main.py", "args": "-n 3"}, "args"),
    ({"entry": "main.py", "args": [1, 2]}, "args"),
    ({"entry": "main.py", "name": ""}, "name"),
])
def test_malformed_spec_is_a_400_naming_the_problem(stack, spec, message):
    before = job_dirs(stack)
    if spec is None:
        response = stack.http.post("/api/v1/jobs", data={"files": [(io.BytesIO(SCRIPT),
                                   "main.py")]}, headers=stack.headers("alice"),
                                   content_type="multipart/form-data")
    else:
        response = stack.submit(spec=spec)
    assert response.status_code == 400
    body = response.get_json()
    assert body["error"] == "bad_request" and message in body["message"]
    assert job_dirs(stack) == before  # nothing half-stored


@pytest.mark.parametrize("name", ["../escape.py", "/etc/passwd", "a/../../b", ""])
def test_upload_names_leaving_the_job_directory_are_refused(stack, name):
    existing = stack.submit_ok()
    response = stack.submit(files={"main.py": SCRIPT, name: b"x"})
    assert response.status_code == 400
    assert job_dirs(stack) == {existing["id"]}
    assert stack.job(existing["id"])["state"] == "queued"  # earlier work untouched


@pytest.mark.parametrize("archive", [
    tar_bytes({"../evil.txt": b"x"}),
    tar_bytes({"/abs.txt": b"x"}),
    tar_bytes({}, links={"link": "/etc/passwd"}),
    tar_bytes({}, links={"link": "../../outside"}),
    b"this is not a tar archive",
])
def test_unsafe_archives_are_refused(stack, archive):
    response = stack.submit(archive=archive)
    assert response.status_code == 400
    assert response.get_json()["error"] == "bad_request"
    assert job_dirs(stack) == set()


def test_symlink_inside_the_job_directory_is_allowed(stack):
    job = stack.submit_ok(archive=tar_bytes({"data/a.txt": b"a"}, links={"b.txt": "data/a.txt"}))
    assert job["state"] == "queued"


def test_duplicate_file_names_are_refused(stack):
    response = stack.submit(files={"main.py": SCRIPT}, archive=tar_bytes({"main.py": b"x"}))
    assert response.status_code == 400 and "twice" in response.get_json()["message"]


def test_oversized_upload_is_a_413(make_stack):
    stack = make_stack(max_upload_bytes=4096)
    response = stack.submit(files={"main.py": SCRIPT, "big.bin": b"x" * 10000})
    assert response.status_code == 413
    assert response.get_json()["error"] == "request_entity_too_large"
    assert job_dirs(stack) == set()


def test_oversized_archive_content_is_a_413(make_stack):
    stack = make_stack(max_upload_bytes=4096)
    bomb = tar_bytes({"zeros.bin": b"\0" * 100_000})  # compresses far below the body cap
    assert len(bomb) < 4096
    response = stack.submit(archive=bomb)
    assert response.status_code == 413
    assert job_dirs(stack) == set()


def test_not_multipart_is_a_400(stack):
    response = stack.http.post("/api/v1/jobs", json={"entry": "main.py"},
                               headers=stack.headers("alice"))
    assert response.status_code == 400


def test_list_shows_only_own_jobs_newest_first(stack):
    a1 = stack.submit_ok("alice")["id"]
    a2 = stack.submit_ok("alice")["id"]
    stack.submit_ok("bob")
    body = stack.http.get("/api/v1/jobs", headers=stack.headers("alice")).get_json()
    assert [j["id"] for j in body["jobs"]] == [a2, a1] and body["next"] is None


def test_admin_lists_everyone_with_all(stack):
    stack.submit_ok("alice")
    stack.submit_ok("bob")
    own = stack.http.get("/api/v1/jobs", headers=stack.headers("root")).get_json()["jobs"]
    everyone = stack.http.get("/api/v1/jobs?all=1", headers=stack.headers("root")).get_json()
    assert own == [] and {j["owner"] for j in everyone["jobs"]} == {"alice", "bob"}


def test_list_paginates_with_cursor(stack):
    ids = [stack.submit_ok()["id"] for _ in range(5)]
    seen, cursor = [], None
    while True:
        query = "/api/v1/jobs?limit=2" + (f"&cursor={cursor}" if cursor else "")
        body = stack.http.get(query, headers=stack.headers("alice")).get_json()
        seen += [j["id"] for j in body["jobs"]]
        cursor = body["next"]
        if cursor is None:
            break
    assert seen == ids[::-1]


def test_list_filters_by_state(stack):
    queued = stack.submit_ok()["id"]
    cancelled = stack.submit_ok()["id"]
    stack.http.post(f"/api/v1/jobs/{cancelled}/cancel", headers=stack.headers("alice"))
    body = stack.http.get("/api/v1/jobs?state=cancelled", headers=stack.headers("alice"))
    assert [j["id"] for j in body.get_json()["jobs"]] == [cancelled]
    body = stack.http.get("/api/v1/jobs?state=queued", headers=stack.headers("alice"))
    assert [j["id"] for j in body.get_json()["jobs"]] == [queued]


def test_list_filters_by_part_of_the_name(stack):
    wanted = stack.submit_ok(spec={"entry": "main.py", "name": "Fit 100%_model"})["id"]
    stack.submit_ok(spec={"entry": "main.py", "name": "fit 1000 models"})
    stack.submit_ok(spec={"entry": "main.py", "name": "plot"})
    stack.submit_ok("bob", spec={"entry": "main.py", "name": "fit 100%_model"})
    for text in ("100%_", "fit 100%_MODEL"):  # % and _ are text here, not patterns
        body = stack.http.get("/api/v1/jobs", query_string={"name": text},
                              headers=stack.headers("alice")).get_json()
        assert [j["id"] for j in body["jobs"]] == [wanted], text
    body = stack.http.get("/api/v1/jobs?name=FIT", headers=stack.headers("alice")).get_json()
    assert len(body["jobs"]) == 2


@pytest.mark.parametrize("query", ["state=sleeping", "limit=0", "limit=x", "limit=100000",
                                   "cursor=%%%", "cursor=bm90LWEtY3Vyc29y", "name=" + "x" * 201])
def test_bad_list_queries_are_400(stack, query):
    response = stack.http.get(f"/api/v1/jobs?{query}", headers=stack.headers("alice"))
    assert response.status_code == 400
    assert "message" in response.get_json()


def test_another_users_job_is_not_found(stack):
    job = stack.submit_ok("alice")["id"]
    for method, path in [("get", ""), ("get", "/files"), ("get", "/files/main.py"),
                         ("get", "/log"), ("get", "/results"), ("post", "/cancel"),
                         ("delete", "")]:
        response = getattr(stack.http, method)(f"/api/v1/jobs/{job}{path}",
                                               headers=stack.headers("bob"))
        assert response.status_code == 404, (method, path)
    assert stack.job(job)["state"] == "queued"
    assert stack.job(job, who="root")["owner"] == "alice"  # an admin sees it


def test_unknown_job_is_404_json(stack):
    response = stack.http.get("/api/v1/jobs/" + "0" * 32, headers=stack.headers("alice"))
    assert response.status_code == 404 and response.get_json()["error"] == "not_found"
    response = stack.http.get("/api/v1/jobs/" + "x" * 300, headers=stack.headers("alice"))
    assert response.status_code == 404


def test_file_download_is_inert_attachment(stack):
    job = stack.submit_ok(files={"main.py": SCRIPT, "page.html": b"<script>alert(1)</script>"})
    response = stack.http.get(f"/api/v1/jobs/{job['id']}/files/page.html",
                              headers=stack.headers("alice"))
    assert response.status_code == 200 and response.data == b"<script>alert(1)</script>"
    assert response.headers["Content-Disposition"].startswith("attachment")
    assert response.headers["Content-Type"] == "application/octet-stream"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in response.headers["Content-Security-Policy"]


@pytest.mark.parametrize("path", ["../../../etc/passwd", "%2e%2e/%2e%2e/etc/passwd",
                                  "missing.txt"])
def test_file_paths_cannot_escape(stack, path):
    job = stack.submit_ok()
    response = stack.http.get(f"/api/v1/jobs/{job['id']}/files/{path}",
                              headers=stack.headers("alice"))
    assert response.status_code in (400, 404)
    assert b"root:" not in response.data


def test_cancel_queued_job(stack):
    job = stack.submit_ok()["id"]
    response = stack.http.post(f"/api/v1/jobs/{job}/cancel", headers=stack.headers("alice"))
    assert response.status_code == 200 and response.get_json()["state"] == "cancelled"
    assert stack.claim().status_code == 204  # a cancelled job is never handed out
    again = stack.http.post(f"/api/v1/jobs/{job}/cancel", headers=stack.headers("alice"))
    assert again.status_code == 409 and "already cancelled" in again.get_json()["message"]


def test_delete_only_finished_jobs(stack):
    job = stack.submit_ok()["id"]
    response = stack.http.delete(f"/api/v1/jobs/{job}", headers=stack.headers("alice"))
    assert response.status_code == 409
    stack.http.post(f"/api/v1/jobs/{job}/cancel", headers=stack.headers("alice"))
    response = stack.http.delete(f"/api/v1/jobs/{job}", headers=stack.headers("alice"))
    assert response.status_code == 204
    assert job not in job_dirs(stack)
    assert stack.http.get(f"/api/v1/jobs/{job}", headers=stack.headers("alice")).status_code \
        == 404


def test_results_log_and_files_after_a_run(stack):
    job = stack.submit_ok(files={"main.py": SCRIPT, "in.txt": b"input"})["id"]
    lease = stack.claim_ok()["lease"]
    results = tar_bytes({"out/result.txt": b"42\n", "in.txt": b"changed"})
    assert stack.upload(job, lease, results=results, stdout=b"hello\n",
                        stderr=b"warn\n").status_code == 200
    log = stack.http.get(f"/api/v1/jobs/{job}/log", headers=stack.headers("alice")).get_json()
    assert log == {"stdout": "hello\n", "stderr": "warn\n"}
    files = stack.http.get(f"/api/v1/jobs/{job}/files", headers=stack.headers("alice"))
    assert {f["path"]: f["size"] for f in files.get_json()["files"]} == {
        "in.txt": 7, "main.py": len(SCRIPT), "out/result.txt": 3}
    archive = stack.http.get(f"/api/v1/jobs/{job}/results", headers=stack.headers("alice"))
    assert archive.headers["Content-Type"] == "application/gzip"
    with tarfile.open(fileobj=io.BytesIO(archive.data)) as tar:
        contents = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}
    assert contents == {"in.txt": b"changed", "main.py": SCRIPT, "out/result.txt": b"42\n"}


def test_errors_are_json(stack):
    for response in (stack.http.get("/api/v1/nothing-here", headers=stack.headers("alice")),
                     stack.http.put("/api/v1/jobs", headers=stack.headers("alice"))):
        assert response.status_code in (404, 405)
        assert set(response.get_json()) == {"error", "message"}


def test_web_page_runs_only_its_own_static_script(stack):
    response = stack.http.get("/")
    assert response.status_code == 200 and b"jobqueue" in response.data
    policy = dict(part.strip().split(" ", 1)
                  for part in response.headers["Content-Security-Policy"].split(";"))
    assert policy["script-src"] == policy["style-src"] == "'self'"
    assert policy["default-src"] == policy["form-action"] == policy["frame-ancestors"] == "'none'"
    assert policy["connect-src"] == "'self'"
    assert b"<script>" not in response.data and b"<style" not in response.data
    assert not re.search(rb"\son[a-z]+\s*=", response.data)  # no inline event handlers
    for asset in ("/static/js/main.js", "/static/app.css"):
        assert asset.encode() in response.data
        served = stack.http.get(asset)
        assert served.status_code == 200 and served.data, asset
        assert served.mimetype in ("text/javascript", "text/css"), asset


def test_openapi_describes_every_route(stack):
    response = stack.http.get("/api/v1/openapi.json", headers=stack.headers("alice"))
    paths = response.get_json()["paths"]
    for rule in stack.app.url_map.iter_rules():
        if rule.endpoint in ("static", "index"):
            continue
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}",
                      str(rule).replace("<path:name>", "{path}"))
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert method.lower() in paths.get(path, {}), f"{method} {path} is not documented"
    json.dumps(paths)


def test_the_api_description_the_cli_and_the_page_take_their_states_from_states_py(stack):
    from jobqueue.client.cli import UsageError, build_parser
    from jobqueue.states import FINISHED, JobState

    states = [state.value for state in JobState]
    document = stack.http.get("/api/v1/openapi.json", headers=stack.headers("alice")).get_json()
    assert document["components"]["schemas"]["Job"]["properties"]["state"]["enum"] == states
    for state in states:
        assert build_parser().parse_args(["list", "--state", state]).state == state
    with pytest.raises(UsageError, match="invalid choice: 'paused'"):
        build_parser().parse_args(["list", "--state", "paused"])
    page = stack.http.get("/").data.decode()
    attributes = dict(re.findall(r'data-(states|finished)="([^"]*)"', page))
    assert json.loads(html.unescape(attributes["states"])) == states
    assert set(json.loads(html.unescape(attributes["finished"]))) == set(FINISHED)


def test_a_unique_start_of_an_id_names_the_job_on_every_user_route(stack):
    job = stack.submit_ok()
    prefix = job["id"][:6]
    headers = stack.headers("alice")
    assert stack.http.get(f"/api/v1/jobs/{prefix}", headers=headers).get_json()["id"] == job["id"]
    files = stack.http.get(f"/api/v1/jobs/{prefix}/files", headers=headers).get_json()["files"]
    assert [f["path"] for f in files] == ["main.py"]
    cancelled = stack.http.post(f"/api/v1/jobs/{prefix}/cancel", headers=headers).get_json()
    assert cancelled["id"] == job["id"] and cancelled["state"] == "cancelled"
    assert stack.http.delete(f"/api/v1/jobs/{prefix}", headers=headers).status_code == 204
    assert stack.http.get(f"/api/v1/jobs/{job['id']}", headers=headers).status_code == 404


def test_prefixes_that_are_short_ambiguous_or_someone_elses_are_refused(stack):
    from jobqueue.models import Job

    ids = [stack.submit_ok()["id"] for _ in range(2)]
    headers = stack.headers("alice")
    short = stack.http.get(f"/api/v1/jobs/{ids[0][:3]}", headers=headers)
    assert short.status_code == 404 and "at least 4 characters" in short.get_json()["message"]
    short = stack.http.get(f"/api/v1/arrays/{ids[0][:3]}", headers=headers)
    assert short.status_code == 404 and "at least 4 characters" in short.get_json()["message"]
    with stack.app.extensions["jobqueue"].session_factory.begin() as session:
        for n, job_id in enumerate(ids):  # two ids that start alike
            session.get(Job, job_id).id = f"abcd{n}" + "0" * 27
    response = stack.http.get("/api/v1/jobs/abcd", headers=headers)
    assert response.status_code == 409 and "more than one job" in response.get_json()["message"]
    assert stack.http.get("/api/v1/jobs/abcd0", headers=headers).get_json()["id"].startswith(
        "abcd0")
    assert stack.http.get("/api/v1/jobs/abcd0", headers=stack.headers("bob")).status_code == 404
