"""Bearer tokens: random strings shown once, stored only as sha256 digests.

Kept apart from the request-side checks (auth) so that jobqueue-admin, which
the deploy runs several times per host, does not import Flask.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets

from sqlalchemy import or_, select
from sqlalchemy.orm import joinedload

from jobqueue.models import ROLES, Token, User, to_the_second, utcnow

TOKEN_PREFIX = "jq_"


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def issue_token(session, user: User, label: str = "", days: float | None = None) -> str:
    """A new token of `user`, live until revoked or, with `days`, that many days."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    expires = utcnow() + dt.timedelta(days=days) if days else None
    session.add(Token(user=user, digest=digest(token), label=label, expires_at=expires))
    return token


def describe(token: Token) -> dict:
    """A token as jobqueue-admin and the API show it (never its secret)."""
    return {"id": token.id, "label": token.label,
            "created_at": to_the_second(token.created_at),
            "expires_at": to_the_second(token.expires_at),
            "revoked_at": to_the_second(token.revoked_at)}


def live_token(session, token: str) -> Token | None:
    """The row of `token` if it is neither revoked nor expired, with its user (one query:
    every request asks)."""
    return session.scalars(
        select(Token).options(joinedload(Token.user))
        .where(Token.digest == digest(token), Token.revoked_at.is_(None),
               or_(Token.expires_at.is_(None), Token.expires_at > utcnow()))
    ).first()


def user_for_token(session, token: str) -> User | None:
    row = live_token(session, token)
    return row.user if row else None


def user_named(session, name: str) -> User | None:
    return session.scalars(select(User).where(User.name == name)).first()


def get_or_create_user(session, name: str, role: str) -> tuple[User, bool]:
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r} (roles: {', '.join(ROLES)})")
    user = user_named(session, name)
    if user is not None:
        return user, False
    user = User(name=name, role=role, created_at=utcnow())
    session.add(user)
    return user, True
