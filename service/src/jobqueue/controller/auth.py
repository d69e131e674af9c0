"""Who is calling: the bearer token of a request (or anonymous, where allowed)."""

from __future__ import annotations

import functools

from flask import current_app, g, request

from jobqueue.controller.errors import ApiError
from jobqueue.models import User
from jobqueue.controller.tokens import get_or_create_user, live_token

ANONYMOUS = "anonymous"


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, {"WWW-Authenticate": 'Bearer realm="jobqueue"'})


def current_user() -> User:
    """The caller, from the Authorization header (or anonymous, where allowed)."""
    if "user" in g:
        return g.user
    session = g.db
    header = request.headers.get("Authorization", "")
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
