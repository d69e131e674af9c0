"""The web page's sign-in: POST /session turns a token into an HttpOnly, SameSite=Strict
cookie for the API's paths and a CSRF cookie; changes made with the cookie need the
CSRF header; DELETE /session clears both. Single sign-on opens the same session from
the identity Apache's mod_auth_openidc vouches for."""

from __future__ import annotations

import datetime as dt


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


# -- single sign-on: Apache's mod_auth_openidc sets REMOTE_USER on /sso/login --------------

def _sso(stack, identity: str | None):
    environ = {"REMOTE_USER": identity} if identity is not None else {}
    return stack.http.get("/sso/login", environ_base=environ)


def test_single_sign_on_is_off_unless_set(stack):
    assert _sso(stack, "alice").status_code == 404
    assert b"/sso/login" not in stack.http.get("/").data


def test_single_sign_on_opens_a_web_session_that_signing_out_revokes(make_stack):
    stack = make_stack(single_sign_on="existing", single_sign_on_hours=2)
    assert b'href="/sso/login"' in stack.http.get("/").data
    signed = _sso(stack, "alice")
    assert signed.status_code == 303 and signed.headers["Location"] == "/"
    session = next(c for c in signed.headers.getlist("Set-Cookie")
                   if c.startswith("jobqueue_session="))
    assert "HttpOnly" in session and "SameSite=Strict" in session
    me = stack.http.get("/api/v1/me").get_json()  # the cookie alone
    assert me["name"] == "alice" and me["token"]["label"] == "web page, single sign-on"
    lifetime = (dt.datetime.fromisoformat(me["token"]["expires_at"])
                - dt.datetime.fromisoformat(me["token"]["created_at"]))
    assert lifetime == dt.timedelta(hours=2)
    token = session.split(";", 1)[0].split("=", 1)[1]
    assert stack.http.delete("/api/v1/session").status_code == 200
    # Revoked, not only forgotten: the token no longer works anywhere.
    again = stack.http.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert again.status_code == 401


def test_a_pasted_token_is_not_revoked_by_signing_out(stack):
    stack.http.post("/api/v1/session", headers=stack.headers("alice"))
    assert stack.http.delete("/api/v1/session").status_code == 200
    assert stack.http.get("/api/v1/me", headers=stack.headers("alice")).status_code == 200


def test_single_sign_on_refuses_what_it_cannot_map(make_stack):
    stack = make_stack(single_sign_on="existing")
    for identity, why in ((None, "no identity"), ("carol", "no account"),
                          ("w1", "worker"), ("a b/../c", "cannot be a user name")):
        refused = _sso(stack, identity)
        assert refused.status_code == 403, identity
        assert why in refused.get_json()["message"]
        assert stack.http.get_cookie("jobqueue_session", path="/api/v1") is None
    # A header cannot stand in for Apache's REMOTE_USER.
    assert stack.http.get("/sso/login", headers={"Remote-User": "alice"}).status_code == 403


def test_single_sign_on_may_create_the_user(make_stack):
    stack = make_stack(single_sign_on="create")
    assert _sso(stack, "carol@lab.example").status_code == 303
    me = stack.http.get("/api/v1/me").get_json()
    assert (me["name"], me["role"]) == ("carol@lab.example", "user")
