"""Who is calling: the bearer token of a request, or the web page's session cookie
(which holds the token, out of the reach of scripts), or anonymous where allowed.

A request that changes something on the strength of the cookie must also carry the
CSRF token (a second cookie the page's script reads and sends back as X-CSRF-Token):
another site can make the browser send the cookie, but not read it to forge that
header."""

from __future__ import annotations

import functools
import hmac

from flask import current_app, g, request

from jobqueue.controller.errors import ApiError
from jobqueue.models import User
from jobqueue.controller.tokens import get_or_create_user, live_token

ANONYMOUS = "anonymous"
SESSION_COOKIE = "jobqueue_session"
CSRF_COOKIE = "jobqueue_csrf"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, {"WWW-Authenticate": 'Bearer realm="jobqueue"'})


def current_user() -> User:
    """The caller, from the Authorization header (or anonymous, where allowed)."""
    if "user" in g:
        return g.user
    session = g.db
    header = request.headers.get("Authorization", "")
    if not header and (cookie := request.cookies.get(SESSION_COOKIE)):
        _check_csrf()
        header = f"Bearer {cookie}"
    if not header:
        if not current_app.config["JOBQUEUE"].allow_anonymous:
            raise _unauthorized("a bearer token is required")
        user, _ = get_or_create_user(session, ANONYMOUS, "user")
        session.commit()
    else:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _unauthorized("the Authorization header must be 'Bearer <token>'")
        row = live_token(session, token.strip())
        if row is None:
            raise _unauthorized("invalid, expired or revoked token")
        user = row.user
        g.token = row
        session.commit()  # end the read: on SQLite every transaction holds the write lock
    g.user = user
    return user


def _check_csrf() -> None:
    if request.method in SAFE_METHODS:
        return
    expected = request.cookies.get(CSRF_COOKIE, "")
    given = request.headers.get(CSRF_HEADER, "")
    if not expected or not hmac.compare_digest(expected.encode(), given.encode()):
        raise ApiError(403, "csrf", f"a change made with the web page's sign-in needs its "
                                    f"{CSRF_HEADER} header")


def require(*roles: str):
    """Allow a view only to callers with one of `roles`."""

    def decorator(view):
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            user = current_user()
            if user.role not in roles:
                raise ApiError(403, "forbidden", f"this needs the role {' or '.join(roles)}")
            return view(*args, **kwargs)

        return wrapper

    return decorator
