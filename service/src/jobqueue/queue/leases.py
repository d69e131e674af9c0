"""Running jobs' leases: a job runs on a worker only while that worker holds its lease.

Every backend whose jobs run on the service's workers keeps them this way, whoever
started the attempt (a worker's claim from the dispatcher, or a batch scheduler that
started the worker on a node): the worker renews the lease by heartbeats, ends it with
the attempt's outcome or hands the job back, and a lease that runs out requeues the
job (or ends it after its last attempt). `Leases` is that bookkeeping, which the
backends hold rather than inherit.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable

from sqlalchemy import select, update

from jobqueue.models import Job, utcnow
from jobqueue.queue import dependencies
from jobqueue.queue.base import LeaseLost
from jobqueue.states import JobState, check_transition

log = logging.getLogger(__name__)


class Leases:
    """`wake(session, worker)`: a running job left `worker`'s CPUs in `session` (called
    before its commit): the backend's waiting claims may look again."""

    def __init__(self, session_factory, settings,
                 wake: Callable[[object, str | None], None] = lambda session, worker: None
                 ) -> None:
        self.session_factory = session_factory
        self.lease = dt.timedelta(seconds=settings.lease_seconds)
        self.max_attempts = settings.max_attempts
        self.wake = wake

    def renew_all(self) -> int:
        """Give every running job at least a whole lease from now; how many it extended.

        For a controller process that starts: while no process served (an upgrade, a
        restart), no worker could renew its leases, and a job that finished meanwhile
        could not report. A lease runs out only for a worker silent for a whole lease
        while the controller was there to hear it."""
        until = utcnow() + self.lease
        with self.session_factory.begin() as session:
            return session.execute(
                update(Job).where(Job.state == JobState.RUNNING.value, Job.lease.is_not(None),
                                  Job.lease_expires_at < until)
                .values(lease_expires_at=until)).rowcount

    def heartbeat(self, job_id: str, lease: str, worker: str | None = None
                  ) -> tuple[dt.datetime, bool]:
        with self.session_factory.begin() as session:
            job = session.get(Job, job_id, with_for_update=True)
            now = utcnow()
            self.check(job, lease, now, worker)
            job.lease_expires_at = now + self.lease
            return job.lease_expires_at, job.cancel_requested

    def finish(self, session, job: Job, lease: str, state: str, exit_code: int | None,
               message: str, limit: str | None = None) -> None:
        now = utcnow()
        self.check(job, lease, now)
        job.state = check_transition(job.state, state).value
        job.exit_code = exit_code
        job.limit_hit = limit
        job.message = message
        job.finished_at = now
        job.lease_expires_at = None
        dependencies.settle(session, job)
        self.wake(session, job.worker)

    def release(self, job_id: str, lease: str, error: str | None = None,
                worker: str | None = None) -> None:
        with self.session_factory.begin() as session:
            job = session.get(Job, job_id, with_for_update=True)
            self.check(job, lease, utcnow(), worker)
            if error is not None and job.attempts >= self.max_attempts:
                self.end(session, job, JobState.FAILED,
                         f"failed on its worker on {job.attempts} attempts: {error}")
                return
            if error is None:  # handed back on purpose: not a failed attempt
                self.take_back(session, job, "handed back by its worker; requeued")
                return
            worker = job.worker
            self.requeue(job, f"attempt {job.attempts} failed on its worker: {error}; requeued")
            self.wake(session, worker)

    def take_back(self, session, job: Job, message: str) -> None:
        """A running job back in the queue, handed back by its worker or at its owner's
        or an admin's word (then its worker stops the attempt at its next heartbeat):
        the attempt uses up none of the job's."""
        job.attempts -= 1
        worker = job.worker
        self.requeue(job, message)
        self.wake(session, worker)

    def expire(self) -> None:
        """Requeue (or end) the running jobs whose lease ran out."""
        now = utcnow()
        with self.session_factory.begin() as session:
            expired = session.scalars(
                select(Job).where(Job.state == JobState.RUNNING.value,
                                  Job.lease_expires_at < now)
                .with_for_update(skip_locked=True)).all()
            for job in expired:
                if job.cancel_requested:
                    self.end(session, job, JobState.CANCELLED,
                             "cancelled; its worker stopped answering")
                elif job.attempts < self.max_attempts:
                    log.warning("job %s: lease expired on %s; requeued", job.id, job.worker)
                    worker = job.worker
                    self.requeue(job, f"lease expired on {worker}; requeued")
                    self.wake(session, worker)
                else:
                    self.end(session, job, JobState.LOST,
                             f"lease expired on {job.attempts} attempts")

    @staticmethod
    def requeue(job: Job, message: str) -> None:
        """Back in the queue for a new attempt: nothing of the last one stays (a batch
        scheduler's job of it included: a new one is submitted)."""
        job.state = check_transition(job.state, JobState.QUEUED).value
        job.message = message
        job.worker = job.started_at = None
        job.lease = job.lease_expires_at = job.claim_id = None
        job.external_id = None

    def end(self, session, job: Job, state: JobState, message: str,
            limit: str | None = None) -> None:
        """The job ends in `state` without an outcome from its worker."""
        log.info("job %s: %s", job.id, message)
        job.state = check_transition(job.state, state).value
        job.message = message
        job.limit_hit = limit
        job.finished_at = utcnow()
        job.lease = job.lease_expires_at = job.claim_id = None
        dependencies.settle(session, job)
        self.wake(session, job.worker)

    @staticmethod
    def check(job: Job | None, lease: str, now: dt.datetime, worker: str | None = None) -> None:
        if job is None or job.job_state is not JobState.RUNNING or job.lease != lease \
                or (worker is not None and job.worker != worker):
            raise LeaseLost("this worker no longer holds the job")
        if job.lease_expires_at is None or job.lease_expires_at < now:
            raise LeaseLost("the job's lease has expired")
