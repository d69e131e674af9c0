"""What a finished job means for the jobs waiting on it (`after`): one that succeeded
counts down each waiter's `waiting_on`; one that ended any other way cancels its
waiters, and theirs in turn (a dependency that can never be met, as Slurm's
kill_invalid_depend). Run in the transaction that finishes the job, so no waiter is
left waiting on a job that will never succeed."""

from __future__ import annotations

from sqlalchemy import or_, select, update

from jobqueue.models import Dependency, Job, utcnow
from jobqueue.states import JobState, check_transition


def _waiters_of(session, parent_id: str):
    """Which rows wait for `parent_id` (jobs, or arrays' tasks); None if none do."""
    waiters = session.scalars(select(Dependency.waiter)
                              .where(Dependency.parent_id == parent_id)).all()
    return or_(Job.id.in_(waiters), Job.array_id.in_(waiters)) if waiters else None


def settle(session, job: Job) -> None:
    """`job` has just reached a finished state (in `session`): update its waiters."""
    if job.job_state is JobState.SUCCEEDED:
        if (waiting := _waiters_of(session, job.id)) is not None:
            session.execute(update(Job).where(waiting, Job.waiting_on > 0)
                            .values(waiting_on=Job.waiting_on - 1)
                            .execution_options(synchronize_session=False))
        return
    ended = [job]
    while ended:
        parent = ended.pop()
        if (waiting := _waiters_of(session, parent.id)) is None:
            continue
        doomed = session.scalars(
            select(Job).where(waiting, Job.state == JobState.QUEUED.value)
            .with_for_update()).all()
        for waiter in doomed:
            waiter.state = check_transition(waiter.state, JobState.CANCELLED).value
            waiter.finished_at = utcnow()
            waiter.message = (f"cancelled: it was to run after job {parent.id}, which ended "
                              f"{parent.state}")
            ended.append(waiter)
