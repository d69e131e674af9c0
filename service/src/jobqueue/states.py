"""Job states and the transitions between them; nothing else may change a job's state."""

from __future__ import annotations

import enum


class JobState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"
    LOST = "lost"

    @property
    def finished(self) -> bool:
        return self in FINISHED


FINISHED = frozenset(
    {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.TIMED_OUT, JobState.LOST}
)

# The states a worker may report when it uploads a job's result.
REPORTABLE = frozenset(
    {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.TIMED_OUT}
)

TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    # queued -> failed: a batch scheduler refused the job, or failed its last attempt
    # before the job itself started.
    JobState.QUEUED: frozenset({JobState.RUNNING, JobState.CANCELLED, JobState.FAILED}),
    # running -> queued: lease expired with attempts left, or the worker handed it back;
    # running -> lost: lease expired with no attempts left.
    JobState.RUNNING: REPORTABLE | {JobState.QUEUED, JobState.LOST},
    **{state: frozenset() for state in FINISHED},
}


class IllegalTransition(ValueError):
    def __init__(self, current: JobState, target: JobState):
        super().__init__(f"a {current.value} job cannot become {target.value}")
        self.current = current
        self.target = target


def check_transition(current: JobState | str, target: JobState | str) -> JobState:
    """Return `target` as a JobState if current -> target is legal, else raise."""
    current, target = JobState(current), JobState(target)
    if target not in TRANSITIONS[current]:
        raise IllegalTransition(current, target)
    return target


# The limits a worker reports as having ended a job (its record's "limit").
LIMITS = ("memory", "walltime", "output", "cpu")
