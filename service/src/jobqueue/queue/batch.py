"""The common part of every backend that hands jobs to an external batch scheduler
(Slurm; HTCondor or PBS would be one module each beside it).

The controller still owns each job's record, lease and files, exactly as in the
dispatcher: a job is `queued` until the process that the scheduler starts on a node
takes its lease (`start`, through the worker API), and `succeeded` only when that
process has uploaded the results. What the scheduler adds is where and when: a
reconcile pass (`reconcile`, run by `jobqueue-admin scheduler` in a process of its own,
never in Apache's request threads) submits new jobs, reads every job's state from the
scheduler in one query, and acts on what it finds:

- a job the scheduler ended without the results arriving is a failed attempt
  (requeued, or lost after `max_attempts`); never a success;
- a job ended by one of the scheduler's limits (time, memory) ends with that reason;
- a job the scheduler no longer knows at all counts as ended only after it has been
  missing for several passes (accounting can lag);
- a cancel of a job still waiting in the scheduler is carried out there; a running
  job is stopped by its node's process, which sees the request on its next heartbeat.

A subclass says how to submit, query and kill (`submit`, `query`, `kill`).
"""

from __future__ import annotations

import abc
import logging
import threading
from dataclasses import dataclass

from sqlalchemy import func, select

from jobqueue.models import Job, JobArray, new_lease, utcnow
from jobqueue.queue.base import Claim, LeasedQueue, LeaseLost, QueueEvents
from jobqueue.queue.leases import Leases
from jobqueue.scheduler_states import ENDED, Outcome
from jobqueue.states import FINISHED, JobState, check_transition

log = logging.getLogger(__name__)

MISSING_PASSES = 3  # passes a job may be unknown to the scheduler before it counts as ended


@dataclass(frozen=True)
class SchedulerJob:
    """One job as the scheduler sees it."""

    external_id: str
    state: str  # the scheduler's own word, e.g. PENDING, NODE_FAIL
    outcome: Outcome
    reason: str = ""  # why it waits
    node: str = ""
    by: str = ""  # who cancelled it


class SchedulerError(RuntimeError):
    """The scheduler's command failed or answered nothing we understand. `refused`: the
    scheduler will never take this job as it is asked for (trying again cannot help)."""

    def __init__(self, message: str, refused: bool = False):
        super().__init__(message)
        self.refused = refused


class BatchQueue(LeasedQueue):
    """Jobs run where an external batch scheduler puts them; see the module's docstring.
    Not a pull queue: the worker API refuses claims here."""

    def __init__(self, session_factory, settings, events=None, own_settings=None) -> None:
        self.session_factory = session_factory
        # No claims wait here for a running job to end: nothing to wake.
        self.leases = Leases(session_factory, settings)
        self.events = events or QueueEvents()
        self.own = own_settings
        self._missing: dict[str, int] = {}  # external id -> passes it has been missing
        self._reconcile_lock = threading.Lock()

    # -- what a subclass provides -----------------------------------------------------

    @abc.abstractmethod
    def submit(self, job: Job) -> str:
        """Hand `job` to the scheduler; return the scheduler's id for it."""

    @abc.abstractmethod
    def query(self, external_ids: list[str]) -> dict[str, SchedulerJob]:
        """The scheduler's view of these jobs, in as few calls as it allows; a job it
        does not know is left out."""

    @abc.abstractmethod
    def kill(self, external_ids: list[str]) -> None:
        """End these jobs in the scheduler, waiting or running."""

    # -- QueueBackend -----------------------------------------------------------------

    def enqueued(self, session, job: Job) -> None:
        pass  # the next reconcile pass submits it

    def cancel(self, session, job: Job) -> None:
        if job.job_state is JobState.QUEUED and job.external_id is None:
            # Not handed over yet: cancelled at once.
            self.leases.end(session, job, JobState.CANCELLED, "cancelled before it started")
        elif job.job_state in (JobState.QUEUED, JobState.RUNNING):
            job.cancel_requested = True  # the reconcile pass or the node carries it out
        else:
            check_transition(job.state, JobState.CANCELLED)  # raises: already finished

    def sync(self) -> None:
        """Leases that ran out; the scheduler's view comes with `reconcile`, in the
        scheduler's own process."""
        self.leases.expire()

    # -- the node's side ----------------------------------------------------------------

    def start(self, job_id: str, worker: str, external_id: str) -> Claim:
        """The scheduler started `external_id` on `worker`: give it the job's lease. A
        repeated start (its answer was lost) gets the same lease; a start by a
        scheduler job that is not the job's current one is refused (LeaseLost)."""
        with self.session_factory.begin() as session:
            job = session.get(Job, job_id, with_for_update=True)
            if job is None or job.external_id != external_id:
                raise LeaseLost("this scheduler job is not the job's current attempt")
            if job.job_state is JobState.RUNNING and job.worker == worker:
                job.lease_expires_at = utcnow() + self.leases.lease
                return Claim(job.id, job.lease)
            if job.job_state is not JobState.QUEUED or job.cancel_requested:
                raise LeaseLost(f"the job is {job.state}; it will not start")
            now = utcnow()
            job.state = check_transition(job.state, JobState.RUNNING).value
            job.attempts += 1
            job.worker = worker
            job.lease = new_lease()
            job.lease_expires_at = now + self.leases.lease
            job.started_at = now
            job.message = f"running as {self.name} job {external_id} on {worker}"
            waited = (now - job.queued_at).total_seconds()
            claim = Claim(job.id, job.lease)
        self.events.claimed(waited)
        return claim

    # -- the reconcile pass -------------------------------------------------------------

    def reconcile(self) -> None:
        """One pass: expire leases, submit new jobs, then act on the scheduler's view."""
        with self._reconcile_lock:
            self.leases.expire()
            self._submit_new()
            self._apply_view()

    def _submit_new(self) -> None:
        """Hand over the queued jobs that may start: not waiting for others (`after`),
        and of an array with `%N` only as many as N at once (submitted or running)."""
        with self.session_factory() as session:
            ids = session.scalars(
                select(Job.id).where(Job.state == JobState.QUEUED.value,
                                     Job.external_id.is_(None),
                                     Job.cancel_requested.is_(False),
                                     Job.waiting_on == 0, Job.held.is_(False))
                .order_by(Job.queued_at, Job.array_index, Job.id)).all()
        for job_id in ids:
            with self.session_factory.begin() as session:
                job = session.get(Job, job_id, with_for_update=True)
                if job is None or job.job_state is not JobState.QUEUED or job.held \
                        or job.external_id is not None or self._array_full(session, job):
                    continue
                try:
                    job.external_id = self.submit(job)
                except SchedulerError as exc:
                    if exc.refused:  # as asked, it can never run here: say so, now
                        self.leases.end(session, job, JobState.FAILED,
                                        f"{self.name} refused the job: {exc}")
                        continue
                    # Left queued with the reason: the next pass tries again.
                    log.warning("job %s: %s submission failed: %s", job.id, self.name, exc)
                    job.message = f"{self.name} refused the job for now: {exc}"
                    continue
                job.message = f"submitted to {self.name} as job {job.external_id}"
                log.info("job %s: %s", job.id, job.message)

    @staticmethod
    def _array_full(session, job: Job) -> bool:
        if job.array_id is None:
            return False
        limit = session.scalar(select(JobArray.max_running).where(JobArray.id == job.array_id))
        if limit is None:
            return False
        handed_over = session.scalar(
            select(func.count()).select_from(Job).where(
                Job.array_id == job.array_id, Job.external_id.is_not(None),
                Job.state.in_([JobState.QUEUED.value, JobState.RUNNING.value])))
        return handed_over >= limit

    def _apply_view(self) -> None:
        with self.session_factory() as session:
            tracked = dict(session.execute(
                select(Job.external_id, Job.id).where(
                    Job.external_id.is_not(None),
                    Job.state.in_([JobState.QUEUED.value, JobState.RUNNING.value]))).all())
        # The scheduler first, then the records: a job whose node process uploaded its
        # results before its scheduler job ended is seen succeeded below.
        view = self.query(sorted(tracked))
        to_kill: list[str] = []
        for external_id, job_id in tracked.items():
            with self.session_factory.begin() as session:
                job = session.get(Job, job_id, with_for_update=True)
                if job is None or job.external_id != external_id:
                    continue
                kill = self._apply(session, job, view.get(external_id))
                if kill:
                    to_kill.append(external_id)
        to_kill += self._strays(view)
        if to_kill:
            try:
                self.kill(sorted(set(to_kill)))
            except SchedulerError as exc:
                log.warning("killing %s jobs %s: %s", self.name, to_kill, exc)

    def _strays(self, view: dict[str, SchedulerJob]) -> list[str]:
        """Scheduler jobs of ours, waiting or running, that no job owns any more (the
        old attempt of a requeued job, a submission whose record was not saved), or that
        belong to a job which ended before they started: they would hold CPUs for
        nothing."""
        live = {eid for eid, seen in view.items()
                if seen.outcome not in ENDED}
        if not live:
            return []
        with self.session_factory() as session:
            owners = dict(session.execute(
                select(Job.external_id, Job.state).where(Job.external_id.in_(live))).all())
        finished = {state.value for state in FINISHED}
        return [eid for eid in live if eid not in owners
                or (owners[eid] in finished and view[eid].outcome is Outcome.WAITING)]

    def _apply(self, session, job: Job, seen: SchedulerJob | None) -> bool:
        """Bring `job` in line with the scheduler's view of it; True: kill its
        scheduler job."""
        eid = job.external_id
        if seen is None:
            self._missing[eid] = self._missing.get(eid, 0) + 1
            if self._missing[eid] < MISSING_PASSES:
                return False
            self._missing.pop(eid, None)
            self._attempt_failed(session, job, f"{self.name} job {eid} vanished")
            return False
        self._missing.pop(eid, None)
        if job.cancel_requested and job.job_state is JobState.QUEUED:
            self.leases.end(session, job, JobState.CANCELLED, "cancelled before it started")
            return seen.outcome not in ENDED
        if seen.outcome is Outcome.WAITING:
            if job.job_state is JobState.QUEUED:
                job.message = f"{self.name} job {eid}: {seen.state.lower()}" + (
                    f" ({seen.reason})" if seen.reason else "")
            return False
        if seen.outcome is Outcome.RUNNING:
            return False  # the node's process starts it, heartbeats, uploads
        # The scheduler job has ended and the results did not arrive.
        where = f" on {seen.node}" if seen.node else ""
        if seen.outcome is Outcome.CANCELLED:
            why = "cancelled by its owner" if job.cancel_requested else \
                f"cancelled in {self.name}{where}" + (f" by {seen.by}" if seen.by else "")
            self.leases.end(session, job, JobState.CANCELLED, why)
        elif seen.outcome is Outcome.TIMED_OUT:
            self.leases.end(session, job, JobState.TIMED_OUT,
                            f"killed: {self.name}'s time limit{where}", limit="walltime")
        elif seen.outcome is Outcome.OUT_OF_MEMORY:
            self.leases.end(session, job, JobState.FAILED,
                            f"killed: memory limit exceeded ({self.name}{where})",
                            limit="memory")
        else:  # DONE without results, or FAILED: the attempt failed
            self._attempt_failed(session, job,
                                 f"{self.name} job {eid} ended {seen.state}{where} "
                                 "without results")
        return False

    def _attempt_failed(self, session, job: Job, why: str) -> None:
        """Requeue for a new scheduler job, or give up after the last attempt."""
        if job.job_state is JobState.QUEUED:
            job.attempts += 1  # it never reached our side, but it did use an attempt
        if job.attempts >= self.leases.max_attempts:
            target = JobState.LOST if job.job_state is JobState.RUNNING else JobState.FAILED
            self.leases.end(session, job, target, f"{why}; gave up after {job.attempts} attempts")
            return
        if job.job_state is JobState.RUNNING:
            self.leases.requeue(job, f"{why}; requeued")
        else:  # its scheduler job never started ours
            job.message = f"{why}; requeued"
            job.external_id = None
        log.warning("job %s: %s", job.id, job.message)

