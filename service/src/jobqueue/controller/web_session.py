"""The web page's sign-in: the token a user types is checked once and kept in an
HttpOnly, SameSite=Strict cookie for the API's paths, so every tab of the browser is
signed in and no script can read the token; beside it the CSRF cookie that state
changes must echo (jobqueue.controller.auth). Signing out clears both, and revokes the
token if single sign-on made it (jobqueue.controller.single_sign_on)."""

from __future__ import annotations

import secrets

from flask import Blueprint, g, jsonify, request

from jobqueue.controller.auth import CSRF_COOKIE, SESSION_COOKIE, current_user, require
from jobqueue.controller.tokens import live_token
from jobqueue.models import utcnow

bp = Blueprint("web_session", __name__)

API_PATH = "/api/v1"
SINGLE_SIGN_ON_LABEL = "web page, single sign-on"


def set_session_cookies(response, token: str):
    """`response` with the cookies that stand for `token` until the browser closes or
    the page signs out."""
    secure = request.is_secure
    response.set_cookie(SESSION_COOKIE, token, httponly=True, secure=secure,
                        samesite="Strict", path=API_PATH)
    response.set_cookie(CSRF_COOKIE, secrets.token_urlsafe(32), secure=secure,
                        samesite="Strict", path="/")
    return response


@bp.post("/session")
@require("user", "admin")
def sign_in():
    """Called with the token in the Authorization header: answers who it is, and sets
    the cookies that stand for it until the browser closes or the page signs out."""
    if "Authorization" not in request.headers:
        return jsonify(error="bad_request", message="sign in with the token in the "
                       "Authorization header"), 400
    user = current_user()
    token = request.headers["Authorization"].partition(" ")[2].strip()
    return set_session_cookies(jsonify(name=user.name, role=user.role), token)


@bp.delete("/session")
def sign_out():
    row = live_token(g.db, request.cookies.get(SESSION_COOKIE, ""))
    if row is not None and row.label == SINGLE_SIGN_ON_LABEL:
        row.revoked_at = utcnow()
        g.db.commit()
    response = jsonify(signed_out=True)
    response.delete_cookie(SESSION_COOKIE, path=API_PATH, samesite="Strict")
    response.delete_cookie(CSRF_COOKIE, path="/", samesite="Strict")
    return response
