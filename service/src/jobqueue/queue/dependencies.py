"""What a finished job means for the jobs waiting on it (`after`): each waiter whose
condition the job's end meets counts down its `waiting_on`; each whose condition it can
no longer meet is cancelled, and so are theirs in turn (a dependency that can never be
met, as Slurm's kill_invalid_depend). Run in the transaction that finishes the job, so
no waiter is left waiting on a job whose end has passed.

Conditions, as Slurm's: `ok` (the parent succeeded), `any` (it ended, however),
`notok` (it ended other than succeeded: failed, cancelled, timed out, lost)."""

from __future__ import annotations

from sqlalchemy import or_, select, update

from jobqueue.models import Dependency, Job, utcnow
from jobqueue.states import JobState, check_transition

# Each condition and what the parent's end must be, as messages say it.
CONDITIONS = {"ok": "succeeded", "any": "ended", "notok": "ended other than succeeded"}


def met(condition: str, state: JobState) -> bool:
    """Whether a parent that ended in `state` meets `condition`."""
    return condition == "any" or (state is JobState.SUCCEEDED) == (condition == "ok")


def _rows_of(waiters: list[str]):
    """The jobs that stand for `waiters` (jobs, or arrays: their tasks)."""
    return or_(Job.id.in_(waiters), Job.array_id.in_(waiters))


def settle(session, job: Job) -> None:
    """`job` has just reached a finished state (in `session`): update its waiters."""
    ended = [job]
    while ended:
        parent = ended.pop()
        met_by, doomed_by = [], []
        for waiter, condition in session.execute(
                select(Dependency.waiter, Dependency.condition)
                .where(Dependency.parent_id == parent.id)):
            (met_by if met(condition, parent.job_state) else doomed_by).append(
                (waiter, condition))
        if met_by:
            session.execute(update(Job)
                            .where(_rows_of([w for w, _ in met_by]), Job.waiting_on > 0)
                            .values(waiting_on=Job.waiting_on - 1)
                            .execution_options(synchronize_session=False))
        for waiter_id, condition in doomed_by:
            doomed = session.scalars(
                select(Job).where(_rows_of([waiter_id]), Job.state == JobState.QUEUED.value)
                .with_for_update()).all()
            for waiter in doomed:
                waiter.state = check_transition(waiter.state, JobState.CANCELLED).value
                waiter.finished_at = utcnow()
                waiter.message = (f"cancelled: it was to run once job {parent.id} "
                                  f"{CONDITIONS[condition]}, but it ended {parent.state}")
                ended.append(waiter)
