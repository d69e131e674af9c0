"""Per-user limits: one user's flood is refused with 429 and a Retry-After, while other
users (and admins) submit as before."""

from __future__ import annotations

import datetime as dt

from jobqueue.models import Job


def test_queued_jobs_past_the_user_limit_are_refused_others_go_on(make_stack):
    stack = make_stack(max_queued_per_user=3)
    for _ in range(3):
        stack.submit_ok()
    refused = stack.submit()
    assert refused.status_code == 429 and refused.get_json()["error"] == "too_many_queued"
    assert "3 jobs queued" in refused.get_json()["message"]
    assert int(refused.headers["Retry-After"]) > 0
    # An array counts each task; it would take alice past, and bob's own limit is whole.
    assert stack.submit("bob", spec={"entry": "main.py", "array": "0-3"}).status_code == 429
    assert stack.submit_ok("bob", spec={"entry": "main.py", "array": "0-2"})
    assert stack.submit_ok("root")  # the admin
    # A job that starts frees its place.
    stack.claim_ok()
    assert stack.submit_ok()
    assert len(stack.jobs()) == 4


def test_submissions_past_the_rate_are_refused_until_the_minute_passes(make_stack):
    stack = make_stack(max_submits_per_minute=2)
    stack.submit_ok()
    stack.submit_ok(spec={"entry": "main.py", "array": "0-9"})  # an array is one submission
    refused = stack.submit()
    assert refused.status_code == 429 and refused.get_json()["error"] == "too_many_submits"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert stack.submit_ok("bob")
    with stack.app.extensions["jobqueue"].session_factory.begin() as session:
        for job in session.query(Job).all():
            job.created_at -= dt.timedelta(seconds=61)
    assert stack.submit_ok()
