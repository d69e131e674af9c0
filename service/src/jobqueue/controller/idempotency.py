"""`Idempotency-Key` on submits: a client that lost the answer to a submit sends the same
request again with the same key and gets the job it already created, not a second one.

A key belongs to one user and lives for `idempotency_window_seconds`. It is tied to a
digest of the request's content (the spec and every file), so the same key on a
different request is refused (409) instead of silently returning an unrelated job.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Iterable
from typing import IO

from sqlalchemy import delete

from jobqueue.controller.errors import ApiError, bad_request
from jobqueue.models import IdempotencyKey, Job, User, utcnow

HEADER = "Idempotency-Key"
# Printable ASCII without spaces: a UUID, a ULID or any token a client likes.
KEY_PATTERN = re.compile(r"[\x21-\x7e]{1,255}")
CHUNK = 1 << 20


def key_from(headers) -> str | None:
    key = headers.get(HEADER)
    if key is None:
        return None
    if not KEY_PATTERN.fullmatch(key):
        raise bad_request(f"header {HEADER} must be 1 to 255 printable ASCII characters")
    return key


def _digest_stream(stream: IO[bytes]) -> str:
    digest = hashlib.sha256()
    while chunk := stream.read(CHUNK):
        digest.update(chunk)
    stream.seek(0)
    return digest.hexdigest()


def fingerprint(spec: str | None, files: Iterable[tuple[str, IO[bytes]]],
                archives: Iterable[IO[bytes]]) -> str:
    """A digest of what the request asks for, the same however its body was encoded."""
    try:
        spec_value = json.loads(spec or "")
    except ValueError:
        spec_value = spec
    content = {
        "spec": spec_value,
        "files": sorted((name, _digest_stream(stream)) for name, stream in files),
        "archives": [_digest_stream(stream) for stream in archives],
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def replay(session, user: User, key: str, digest: str, window: dt.timedelta) -> Job | None:
    """The job this key created within the window, or None; 409 if the key was used for
    a different request."""
    row = session.get(IdempotencyKey, (user.id, key))
    if row is None or row.created_at < utcnow() - window:
        return None
    if row.fingerprint != digest:
        raise ApiError(409, "idempotency_key_reused",
                       f"the {HEADER} {key!r} was already used for a different request")
    return session.get(Job, row.job_id)


def remember(session, user: User, key: str, digest: str, job: Job,
             window: dt.timedelta) -> None:
    """Store the key with the job (in the job's transaction), dropping expired keys."""
    session.execute(delete(IdempotencyKey).where(IdempotencyKey.created_at < utcnow() - window))
    session.add(IdempotencyKey(owner_id=user.id, key=key, fingerprint=digest, job_id=job.id,
                               created_at=utcnow()))
