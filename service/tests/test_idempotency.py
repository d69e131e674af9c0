"""Idempotency-Key on POST /jobs: a retried submit returns the job it created."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import update

from jobqueue.models import IdempotencyKey, utcnow


def test_same_key_and_request_return_the_same_job(stack):
    first = stack.submit(key="k-1")
    assert first.status_code == 201 and "Idempotent-Replayed" not in first.headers
    again = stack.submit(key="k-1")
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json()["id"] == first.get_json()["id"]
    assert again.headers["Location"] == first.headers["Location"]
    assert [j["id"] for j in stack.jobs()] == [first.get_json()["id"]]


def test_the_same_files_in_another_order_are_the_same_request(stack):
    files = {"main.py": b"print(1)\n", "data/a.txt": b"a"}
    first = stack.submit(files=files, key="k")
    again = stack.submit(files=dict(reversed(files.items())), key="k")
    assert again.get_json()["id"] == first.get_json()["id"]


@pytest.mark.parametrize("change", [
    {"spec": {"entry": "main.py", "args": ["other"]}},
    {"files": {"main.py": b"print('something else')\n"}},
    {"files": {"main.py": b"print('hello')\n", "extra.txt": b"x"}},
])
def test_same_key_with_a_different_request_is_409(stack, change):
    first = stack.submit(key="k").get_json()
    response = stack.submit(key="k", **change)
    assert response.status_code == 409
    assert response.get_json()["error"] == "idempotency_key_reused"
    assert "k" in response.get_json()["message"]
    assert [j["id"] for j in stack.jobs()] == [first["id"]]


def test_keys_belong_to_their_user(stack):
    alice = stack.submit(key="shared").get_json()
    bob = stack.submit(who="bob", key="shared")
    assert bob.status_code == 201 and bob.get_json()["id"] != alice["id"]


def test_a_key_expires_after_the_window(make_stack):
    stack = make_stack(idempotency_window_seconds=60)
    first = stack.submit(key="k").get_json()
    with stack.app.extensions["jobqueue"].session_factory.begin() as session:
        session.execute(update(IdempotencyKey).values(
            created_at=utcnow() - dt.timedelta(seconds=61)))
    later = stack.submit(key="k")
    assert later.status_code == 201 and "Idempotent-Replayed" not in later.headers
    assert later.get_json()["id"] != first["id"]
    # The new use of the key is remembered in turn, and the expired row is gone.
    assert stack.submit(key="k").get_json()["id"] == later.get_json()["id"]
    with stack.app.extensions["jobqueue"].session_factory() as session:
        assert session.query(IdempotencyKey).count() == 1


def test_a_different_request_after_expiry_is_a_new_job(make_stack):
    stack = make_stack(idempotency_window_seconds=60)
    stack.submit(key="k")
    with stack.app.extensions["jobqueue"].session_factory.begin() as session:
        session.execute(update(IdempotencyKey).values(
            created_at=utcnow() - dt.timedelta(seconds=61)))
    assert stack.submit(key="k", spec={"entry": "main.py", "args": ["2"]}).status_code == 201


def test_without_a_key_every_submit_is_a_new_job(stack):
    ids = {stack.submit_ok()["id"] for _ in range(2)}
    assert len(ids) == 2


@pytest.mark.parametrize("key", ["", "has space", "x" * 256, "é"])
def test_malformed_keys_are_400(stack, key):
    response = stack.http.post("/api/v1/jobs", data={"spec": '{"entry": "main.py"}'},
                               headers=stack.headers("alice") | {"Idempotency-Key": key})
    assert response.status_code == 400 and "Idempotency-Key" in response.get_json()["message"]


def test_a_refused_submit_stores_no_key(stack):
    bad = stack.submit(key="k", spec={"entry": "missing.py"})
    assert bad.status_code == 400
    assert stack.submit(key="k").status_code == 201
    assert len(stack.jobs()) == 1


def test_deleting_the_job_frees_its_key(stack):
    job = stack.submit(key="k").get_json()["id"]
    lease = stack.claim_ok()["lease"]
    assert stack.upload(job, lease).status_code == 200
    assert stack.http.delete(f"/api/v1/jobs/{job}", headers=stack.headers("alice")).status_code \
        == 204
    again = stack.submit(key="k")
    assert again.status_code == 201 and again.get_json()["id"] != job
