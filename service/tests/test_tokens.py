"""Tokens that expire and that can be revoked one at a time, by their owner over the API
or by an admin with jobqueue-admin."""

from __future__ import annotations

import json

import pytest

from jobqueue.controller.admin import main as admin_main
from jobqueue.models import Token


def get(stack, path, token):
    return stack.http.get(f"/api/v1{path}", headers={"Authorization": f"Bearer {token}"})


def test_an_expired_token_is_refused_saying_so(stack):
    token = stack.tokens["alice"]
    assert get(stack, "/me", token).get_json()["token"]["expires_at"] is None
    with stack.app.extensions["jobqueue"].session_factory.begin() as session:
        for row in session.query(Token):
            row.expires_at = row.created_at.replace(year=2000)
    refused = get(stack, "/me", token)
    assert refused.status_code == 401
    assert refused.get_json()["message"] == "invalid, expired or revoked token"


def test_one_token_is_revoked_and_the_others_stay_live(stack, capsys, monkeypatch):
    monkeypatch.setenv("JOBQUEUE_DATABASE_URL", stack.settings.database_url)
    monkeypatch.setenv("JOBQUEUE_DATA_DIR", stack.settings.data_dir)
    monkeypatch.setenv("JOBQUEUE_CONFIG", "/nonexistent.toml")
    assert admin_main(["issue-token", "alice", "--label", "laptop", "--days", "30"]) == 0
    laptop = capsys.readouterr().out.strip()
    me = get(stack, "/me", laptop).get_json()["token"]
    assert me["label"] == "laptop" and me["expires_at"] > me["created_at"]
    listed = get(stack, "/tokens", stack.tokens["alice"]).get_json()["tokens"]
    assert [(t["label"], t["current"]) for t in listed] == [("", True), ("laptop", False)]
    assert stack.http.delete(f"/api/v1/tokens/{me['id']}",
                             headers=stack.headers("bob")).status_code == 404
    revoked = stack.http.delete(f"/api/v1/tokens/{me['id']}", headers=stack.headers("alice"))
    assert revoked.status_code == 200 and revoked.get_json()["revoked_at"]
    assert get(stack, "/me", laptop).status_code == 401
    assert get(stack, "/me", stack.tokens["alice"]).status_code == 200
    assert admin_main(["list-tokens", "alice"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["label"], r["revoked_at"] is not None) for r in rows] == [
        ("", False), ("laptop", True)]
    first = rows[0]["id"]
    assert admin_main(["revoke-token", str(first)]) == 0
    assert get(stack, "/me", stack.tokens["alice"]).status_code == 401


@pytest.mark.e2e
def test_login_says_when_the_token_expires_and_tokens_lists_them(cluster, tmp_path):
    from test_e2e import jobqueue

    c = cluster()
    config = tmp_path / "client.toml"
    login = jobqueue(c, "login", c.url, "--config", str(config), stdin=c.tokens["alice"])
    assert login.returncode == 0 and "it does not expire" in login.stdout, login.stderr
    listed = jobqueue(c, "tokens")
    assert listed.returncode == 0 and listed.stdout.splitlines()[1].split()[:2] == ["1", "*"]
    revoked = jobqueue(c, "revoke-token", "1")
    assert revoked.returncode == 0
    assert revoked.stdout.strip() == "token 1 revoked (the one in use here: sign in again)"
    assert jobqueue(c, "tokens").returncode != 0


@pytest.mark.parametrize("token_id", ["0", "2147483648", "99999999999999999999999"])
def test_revoking_a_token_that_is_not_there_is_a_404(stack, token_id):
    response = stack.http.delete(f"/api/v1/tokens/{token_id}", headers=stack.headers("alice"))
    assert response.status_code == 404 and response.get_json()["error"] == "not_found"
