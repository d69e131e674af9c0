"""Per-user limits on submitting, so that one user's flood delays only that user.

A user may have at most `max_queued_per_user` jobs waiting (each task of an array
counts) and may submit at most `max_submits_per_minute` times a minute (an array is one
submission). Past either, the submit is refused with 429 and a Retry-After, before its
files are unpacked. Admins are not limited: they run the service.
"""

from __future__ import annotations

import datetime as dt
import math

from sqlalchemy import func, select

from jobqueue.controller.errors import ApiError
from jobqueue.controller.settings import ControllerSettings
from jobqueue.models import Job, User, utcnow
from jobqueue.states import JobState

WINDOW = dt.timedelta(minutes=1)
QUEUE_RETRY_SECONDS = 60  # a full queue drains at the pace jobs end: ask again later


def check_submit(session, user: User, new_jobs: int, settings: ControllerSettings) -> None:
    """Raise a 429 if `user` may not submit `new_jobs` more jobs now."""
    if user.role == "admin":
        return
    queued = session.scalar(select(func.count()).select_from(Job).where(
        Job.owner_id == user.id, Job.state == JobState.QUEUED.value))
    if queued + new_jobs > settings.max_queued_per_user:
        raise ApiError(429, "too_many_queued",
                       f"you have {queued} jobs queued and may have at most "
                       f"{settings.max_queued_per_user}: wait for some to start",
                       {"Retry-After": str(QUEUE_RETRY_SECONDS)})
    since = utcnow() - WINDOW
    submitted, oldest = session.execute(
        select(func.count(func.distinct(func.coalesce(Job.array_id, Job.id))),
               func.min(Job.created_at))
        .where(Job.owner_id == user.id, Job.created_at >= since)).one()
    if submitted >= settings.max_submits_per_minute:
        wait = math.ceil((oldest - since).total_seconds()) if oldest is not None else 1
        raise ApiError(429, "too_many_submits",
                       f"at most {settings.max_submits_per_minute} submissions a minute",
                       {"Retry-After": str(max(1, wait))})
