"""A database that goes away answers 503 with Retry-After, never 500, and the
controller recovers by itself once the database is back."""

from __future__ import annotations

import io
import json

from sqlalchemy import event

from conftest import SCRIPT


class DatabaseDown:
    """Drop the app's database connections and refuse new ones, as a restarting server does."""

    def __init__(self, stack):
        self.engine = stack.app.extensions["jobqueue"].session_factory.kw["bind"]
        self.error = self.engine.dialect.loaded_dbapi.OperationalError

    def _refuse(self, *_args):
        raise self.error("connection refused: the database system is shutting down")

    def __enter__(self):
        event.listen(self.engine, "do_connect", self._refuse)
        self.engine.dispose()  # the pool's connections are gone with the server
        return self

    def __exit__(self, *exc):
        event.remove(self.engine, "do_connect", self._refuse)


def assert_unavailable(response):
    assert response.status_code == 503, response.get_data(as_text=True)
    assert response.get_json()["error"] == "unavailable"
    assert "database" in response.get_json()["message"]
    assert int(response.headers["Retry-After"]) > 0


def test_requests_during_an_outage_are_503_and_work_again_after(stack):
    job = stack.submit_ok()["id"]
    lease = stack.claim_ok()["lease"]
    with DatabaseDown(stack):
        assert_unavailable(stack.submit())
        assert_unavailable(stack.http.get("/healthz"))
        assert_unavailable(stack.http.get(f"/api/v1/jobs/{job}", headers=stack.headers("alice")))
        assert_unavailable(stack.claim())
        assert_unavailable(stack.heartbeat(job, lease))
        assert_unavailable(stack.upload(job, lease))
        assert_unavailable(stack.http.post(f"/api/v1/worker/jobs/{job}/release",
                                           json={"lease": lease}, headers=stack.headers("w1")))
    assert stack.http.get("/healthz").status_code == 200
    assert stack.heartbeat(job, lease).status_code == 200
    assert stack.upload(job, lease).get_json()["duplicate"] is False
    assert stack.job(job)["state"] == "succeeded" and stack.job(job)["attempts"] == 1


def test_a_connection_dropped_mid_request_is_503(stack):
    """The connection dies between the request's queries (the server was restarted)."""
    engine = stack.app.extensions["jobqueue"].session_factory.kw["bind"]
    error = engine.dialect.loaded_dbapi.OperationalError
    calls = []

    def drop_on_insert(conn, cursor, statement, *_args):
        if statement.lstrip().upper().startswith("INSERT INTO JOBS"):
            calls.append(statement)
            raise error("server closed the connection unexpectedly")

    event.listen(engine, "before_cursor_execute", drop_on_insert)
    try:
        response = stack.submit()
    finally:
        event.remove(engine, "before_cursor_execute", drop_on_insert)
    assert calls, "the fault was never reached"
    assert_unavailable(response)
    assert stack.jobs() == []
    # Nothing of the refused submit stays on disk.
    assert not any((stack.files.root).iterdir())


def test_an_upload_whose_commit_fails_keeps_its_files_for_the_retry(stack):
    job = stack.submit_ok()["id"]
    lease = stack.claim_ok()["lease"]
    engine = stack.app.extensions["jobqueue"].session_factory.kw["bind"]
    error = engine.dialect.loaded_dbapi.OperationalError

    def drop_on_finish(conn, cursor, statement, *_args):
        if statement.lstrip().upper().startswith("UPDATE JOBS"):
            raise error("server closed the connection unexpectedly")

    event.listen(engine, "before_cursor_execute", drop_on_finish)
    try:
        first = stack.upload(job, lease, stdout=b"the output\n")
    finally:
        event.remove(engine, "before_cursor_execute", drop_on_finish)
    assert_unavailable(first)
    # Whether a failed commit happened is unknown: the upload stays, ready to be placed.
    assert [p.name.split(".")[0] for p in stack.files.uploads.iterdir()] == ["ready"]
    retry = stack.upload(job, lease, stdout=b"the output\n")
    assert retry.status_code == 200
    log = stack.http.get(f"/api/v1/jobs/{job}/log", headers=stack.headers("alice")).get_json()
    assert log["stdout"] == "the output\n"
    assert list(stack.files.uploads.iterdir()) == []  # the first upload's files were dropped


def test_a_submit_with_a_key_can_be_retried_after_a_503(stack):
    path = "/api/v1/jobs"
    data = {"spec": json.dumps({"entry": "main.py"}), "files": [(io.BytesIO(SCRIPT), "main.py")]}
    headers = stack.headers("alice") | {"Idempotency-Key": "retry-me"}
    with DatabaseDown(stack):
        assert_unavailable(stack.http.post(path, data=data, headers=headers))
    data["files"] = [(io.BytesIO(SCRIPT), "main.py")]
    assert stack.http.post(path, data=data, headers=headers).status_code == 201
    assert len(stack.jobs()) == 1
