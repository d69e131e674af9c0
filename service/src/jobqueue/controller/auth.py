"""Bearer tokens: random strings shown once, stored only as sha256 digests."""

from __future__ import annotations

import functools
import hashlib
import secrets

from flask import current_app, g, request
from sqlalchemy import select

from jobqueue.controller.errors import ApiError
from jobqueue.controller.models import ROLES, Token, User, utcnow

TOKEN_PREFIX = "jq_"
ANONYMOUS = "anonymous"


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def issue_token(session, user: User, label: str = "") -> str:
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(Token(user=user, digest=digest(token), label=label))
    return token


def user_for_token(session, token: str) -> User | None:
    row = session.scalars(
        select(Token).where(Token.digest == digest(token), Token.revoked_at.is_(None))
    ).first()
    return row.user if row else None


def get_or_create_user(session, name: str, role: str) -> tuple[User, bool]:
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r} (roles: {', '.join(ROLES)})")
    user = session.scalars(select(User).where(User.name == name)).first()
    if user is not None:
        return user, False
    user = User(name=name, role=role, created_at=utcnow())
    session.add(user)
    return user, True


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
        user = user_for_token(session, token.strip())
        if user is None:
            raise _unauthorized("invalid or revoked token")
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
