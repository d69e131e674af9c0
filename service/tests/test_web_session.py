"""The web page's sign-in: POST /session turns a token into an HttpOnly, SameSite=Strict
cookie for the API's paths and a CSRF cookie; changes made with the cookie need the
CSRF header; DELETE /session clears both."""

from __future__ import annotations


def test_a_session_cookie_signs_requests_in_and_changes_need_the_csrf_header(stack):
    signed = stack.http.post("/api/v1/session", headers=stack.headers("alice"))
    assert signed.status_code == 200 and signed.get_json() == {"name": "alice", "role": "user"}
    cookies = {c.split("=", 1)[0]: c for c in signed.headers.getlist("Set-Cookie")}
    session, csrf = cookies["jobqueue_session"], cookies["jobqueue_csrf"]
    assert "HttpOnly" in session and "SameSite=Strict" in session and "Path=/api/v1" in session
    assert "HttpOnly" not in csrf and "SameSite=Strict" in csrf and "Path=/" in csrf
    assert stack.http.get("/api/v1/me").get_json()["name"] == "alice"  # the cookie alone
    job = stack.submit_ok()
    refused = stack.http.post(f"/api/v1/jobs/{job['id']}/cancel")
    assert refused.status_code == 403 and refused.get_json()["error"] == "csrf"
    value = stack.http.get_cookie("jobqueue_csrf").value
    assert stack.http.post(f"/api/v1/jobs/{job['id']}/cancel",
                           headers={"X-CSRF-Token": value}).status_code == 200
    assert stack.http.delete("/api/v1/session").status_code == 200
    assert stack.http.get("/api/v1/me").status_code == 401


def test_a_worker_token_cannot_sign_in_to_the_page(stack):
    refused = stack.http.post("/api/v1/session", headers=stack.headers("w1"))
    assert refused.status_code == 403
    assert stack.http.get_cookie("jobqueue_session", path="/api/v1") is None
