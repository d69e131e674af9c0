"""What the controller knows of its workers from their claims: the CPUs each offers.

It answers two questions a user asks of a job before it runs: could any worker ever
run it (a job asking for more CPUs than the largest worker is refused at submit, or
held with that reason), and why is it still waiting.
"""

from __future__ import annotations

import datetime as dt
import threading
import time

from sqlalchemy import and_, func, or_, select
from sqlalchemy.exc import IntegrityError

from jobqueue.controller.after import first_unmet
from jobqueue.models import Job, Worker, utcnow
from jobqueue.queue import WorkerCapacity
from jobqueue.states import JobState


# How often a worker that keeps offering the same is written down again: each claim
# writing would cost a transaction per claim.
REFRESH_SECONDS = 60.0


class Registry:
    """Writes down what each worker's claims say it offers, at most once a minute per
    worker while that stays the same."""

    def __init__(self, session_factory) -> None:
        self.session_factory = session_factory
        self._written: dict[str, tuple[WorkerCapacity, float]] = {}
        self._lock = threading.Lock()

    def record(self, name: str, capacity: WorkerCapacity) -> None:
        with self._lock:
            last = self._written.get(name)
            if last is not None and last[0] == capacity \
                    and time.monotonic() - last[1] < REFRESH_SECONDS:
                return
        for _ in range(2):  # two first claims of a worker may race to insert it
            try:
                with self.session_factory.begin() as session:
                    worker = session.get(Worker, name)
                    if worker is None:
                        session.add(Worker(name=name, cpus=capacity.cpus,
                                           jobs=capacity.jobs, seen_at=utcnow()))
                    else:
                        worker.cpus, worker.jobs = capacity.cpus, capacity.jobs
                        worker.seen_at = utcnow()
                break
            except IntegrityError:
                continue
        with self._lock:
            self._written[name] = (capacity, time.monotonic())


def largest(session, seen_within: dt.timedelta) -> Worker | None:
    """The worker with the most CPUs among those seen lately (None: none seen)."""
    return session.scalars(
        select(Worker).where(Worker.seen_at >= utcnow() - seen_within)
        .order_by(Worker.cpus.desc(), Worker.name).limit(1)).first()


def too_big(cpus: int, biggest: Worker | None) -> str | None:
    """Why no worker can run a job of `cpus` CPUs, or None if one can (or may join)."""
    if biggest is None or cpus <= biggest.cpus:
        return None
    return (f"the job asks for {cpus} CPUs; the largest worker ({biggest.name}) has "
            f"{biggest.cpus}")


def pending(session, job: Job, biggest: Worker | None) -> dict:
    """For a queued job: its place in the queue by submission (1: none before it; fair
    share may still start another user's later job first) and why it waits."""
    ahead = session.scalar(
        select(func.count()).select_from(Job).where(
            Job.state == JobState.QUEUED.value,
            or_(Job.queued_at < job.queued_at,
                and_(Job.queued_at == job.queued_at, Job.id < job.id))))
    if (parent := first_unmet(session, job)) is not None:
        reason = f"waiting for job {parent}"
    elif job.array is not None and job.array.max_running is not None and session.scalar(
            select(func.count()).select_from(Job).where(
                Job.array_id == job.array_id, Job.state == JobState.RUNNING.value)) \
            >= job.array.max_running:
        reason = f"array limit %{job.array.max_running} reached"
    elif biggest is None:
        reason = "no worker has asked for jobs yet"
    elif (cut := too_big(job.cpus, biggest)) is not None:
        reason = cut + ": it waits for a larger worker to join"
    elif ahead:
        reason = f"{ahead} job(s) ahead of it in the queue"
    else:
        reason = f"waiting for a worker with {job.cpus} free CPU(s)"
    return {"queue_position": ahead + 1, "pending_reason": reason}
