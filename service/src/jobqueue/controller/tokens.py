"""Bearer tokens: random strings shown once, stored only as sha256 digests.

Kept apart from the request-side checks (auth) so that jobqueue-admin, which
the deploy runs several times per host, does not import Flask.
"""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import select

from jobqueue.models import ROLES, Token, User, utcnow

TOKEN_PREFIX = "jq_"


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
