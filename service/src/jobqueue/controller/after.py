"""Dependencies between jobs as the API sees them: the ids a submit's `after` names,
resolved to the jobs they stand for, and each job's `after` and reason to wait.

What a finished job does to the jobs waiting on it is the queue's part
(`jobqueue.queue.dependencies`)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import or_, select

from jobqueue.controller import lookup
from jobqueue.controller.errors import ApiError, bad_request, conflict
from jobqueue.models import Dependency, Job, JobArray, User
from jobqueue.states import JobState

def resolve(session, user: User, names: Sequence[str]) -> list[Job]:
    """The jobs `after` names (an array's id: all its tasks), locked until the submit
    commits, so none can finish unseen in between. Each name is an id or a unique start
    of one (jobqueue.controller.lookup), of the caller's jobs or arrays (an admin's:
    anyone's). A job that already ended other than succeeded is refused: the new job
    could never start."""
    job_ids: set[str] = set()
    array_ids: set[str] = set()
    for name in names:
        if not lookup.is_id_or_prefix(name):
            raise bad_request(f"spec field 'after': {lookup.why_not(name)}")
        jobs = lookup.matching(session, user, Job, name)
        arrays = lookup.matching(session, user, JobArray, name)
        found = [("job", i) for i in jobs] + [("array", i) for i in arrays]
        if not found:
            raise ApiError(404, "not_found", f"spec field 'after': no job or array {name!r}")
        if len(found) > 1:
            raise conflict(f"spec field 'after': more than one job or array starts with "
                           f"{name!r}: give more of the id")
        kind, found_id = found[0]
        (job_ids if kind == "job" else array_ids).add(found_id)
    if not job_ids and not array_ids:
        return []
    parents = session.scalars(
        select(Job).where(or_(Job.id.in_(job_ids), Job.array_id.in_(array_ids)))
        .order_by(Job.id).with_for_update()).all()
    for parent in parents:
        if parent.job_state.finished and parent.job_state is not JobState.SUCCEEDED:
            raise ApiError(409, "dependency_failed",
                           f"spec field 'after': job {parent.id} already ended {parent.state}; "
                           "a job after it could never start")
    return list(parents)


def unmet(parents: Iterable[Job]) -> int:
    """How many of `parents` have yet to succeed (none has ended otherwise: `resolve`)."""
    return sum(1 for p in parents if p.job_state is not JobState.SUCCEEDED)


def record(session, waiter: str, parents: Iterable[Job]) -> None:
    """`waiter` (a job's id, or an array's for all its tasks) runs after `parents`."""
    session.add_all(Dependency(waiter=waiter, parent_id=p.id) for p in parents)


def after_of(session, jobs: Sequence[Job]) -> dict[str, list[str]]:
    """Each job's `after`: the ids of the jobs it waits (or waited) for, in one query."""
    waiters = {j.id for j in jobs} | {j.array_id for j in jobs if j.array_id}
    found: dict[str, list[str]] = {}
    if waiters:
        for waiter, parent in session.execute(
                select(Dependency.waiter, Dependency.parent_id)
                .where(Dependency.waiter.in_(waiters)).order_by(Dependency.parent_id)):
            found.setdefault(waiter, []).append(parent)
    return {j.id: found.get(j.id, []) + found.get(j.array_id or "", []) for j in jobs}


def first_unmet(session, job: Job) -> str | None:
    """The id of a job `job` still waits for (None: it waits for none)."""
    if not job.waiting_on:
        return None
    waiters = [job.id] + ([job.array_id] if job.array_id else [])
    return session.scalar(
        select(Dependency.parent_id).join(Job, Job.id == Dependency.parent_id)
        .where(Dependency.waiter.in_(waiters), Job.state != JobState.SUCCEEDED.value)
        .order_by(Dependency.parent_id).limit(1))
