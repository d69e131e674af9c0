"""What a user may type for a job or an array: its id, or a unique start of it.

One rule for the API's paths (`/jobs/{id}`, `/arrays/{id}`) and a submit's `after`:
an id is 32 hexadecimal characters, and at least MIN_PREFIX of them name whichever of
the caller's jobs (an admin's: anyone's) starts with them, if only one does."""

from __future__ import annotations

from sqlalchemy import select

from jobqueue.models import User

ID_LENGTH = 32
MIN_PREFIX = 4
HEX = frozenset("0123456789abcdef")


def is_id_or_prefix(name: str) -> bool:
    return MIN_PREFIX <= len(name) <= ID_LENGTH and set(name) <= HEX


def why_not(name: str) -> str:
    """What is wrong with a name `is_id_or_prefix` refuses, said to the user."""
    if set(name) <= HEX and 0 < len(name) < MIN_PREFIX:
        return f"{name!r} is too short: give at least {MIN_PREFIX} characters of the id"
    return f"{name!r} is not an id (32 hexadecimal characters) or the start of one"


def may_see(user: User, row) -> bool:
    """Whether `user` may see `row` (a Job or a JobArray): its owner or an admin."""
    return user.role == "admin" or row.owner_id == user.id


def matching(session, user: User, table, name: str) -> list[str]:
    """Ids in `table` (Job or JobArray) that `name` names and `user` may see (`may_see`):
    none, one, or two when the prefix is not unique."""
    query = select(table.id)
    query = query.where(table.id == name) if len(name) == ID_LENGTH else \
        query.where(table.id.startswith(name, autoescape=True))
    if user.role != "admin":
        query = query.where(table.owner_id == user.id)
    return list(session.scalars(query.order_by(table.id).limit(2)))
