"""What the controller knows of its workers from their claims: the CPUs and memory
each offers, and the job slots each has set aside; and which ones an admin drained.

It answers two questions a user asks of a job before it runs: could any worker ever
run it (a job asking for more CPUs or memory than any worker has is refused at submit,
or held with that reason), and why is it still waiting.
"""

from __future__ import annotations

import datetime as dt
import threading
import time

from sqlalchemy import and_, func, or_, select
from sqlalchemy.exc import IntegrityError

from jobqueue.controller.after import first_unmet
from jobqueue.models import Job, Worker, to_the_second, utcnow
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
                        session.add(Worker(name=name, cpus=capacity.cpus, jobs=capacity.jobs,
                                           memory=capacity.memory,
                                           quarantined=capacity.quarantined,
                                           environments=list(capacity.environments),
                                           seen_at=utcnow()))
                    else:
                        worker.cpus, worker.jobs = capacity.cpus, capacity.jobs
                        worker.memory, worker.seen_at = capacity.memory, utcnow()
                        worker.quarantined = capacity.quarantined
                        worker.environments = list(capacity.environments)
                break
            except IntegrityError:
                continue
        with self._lock:
            self._written[name] = (capacity, time.monotonic())


def is_drained(session, name: str) -> bool:
    return bool(session.scalar(select(Worker.drained).where(Worker.name == name)))


def set_drained(session, name: str, drained: bool) -> Worker | None:
    """Drain a worker (it takes no new job; its running ones go on) or resume it; None
    if no worker of that name has claimed yet."""
    worker = session.get(Worker, name, with_for_update=True)
    if worker is not None:
        worker.drained = drained
    return worker


def overview(session, name: str | None = None,
             seen_after: dt.datetime | None = None) -> list[dict]:
    """Every worker (or the one named) as its last claim described it, whether it is
    drained, and how many jobs it runs now: for admins (`jobqueue-admin workers`,
    `GET /workers`). With `seen_after`, also whether it is down (no claim since)."""
    running = dict(session.execute(
        select(Job.worker, func.count()).where(Job.state == JobState.RUNNING.value)
        .group_by(Job.worker)).all())
    chosen = select(Worker).order_by(Worker.name)
    if name is not None:
        chosen = chosen.where(Worker.name == name)
    return [{"worker": w.name, "cpus": w.cpus, "jobs": w.jobs, "memory_mib": w.memory,
             "quarantined_slots": w.quarantined, "drained": w.drained,
             "environments": w.environments or [],
             "running": running.get(w.name, 0),
             "seen_at": to_the_second(w.seen_at)}
            | ({"down": w.seen_at < seen_after} if seen_after else {})
            for w in session.scalars(chosen)]


def seen(session, within: dt.timedelta) -> list[Worker]:
    """The workers seen lately, largest (most CPUs) first."""
    return list(session.scalars(
        select(Worker).where(Worker.seen_at >= utcnow() - within)
        .order_by(Worker.cpus.desc(), Worker.name)))


def too_big(cpus: int, memory: int, workers: list[Worker]) -> str | None:
    """Why no worker seen can run a job of `cpus` CPUs and `memory` MiB, or None if one
    can (or none was seen yet: one may join)."""
    if not workers or any(_fits(cpus, memory, w) for w in workers):
        return None
    enough_cpus = [w for w in workers if w.cpus >= cpus]
    if not enough_cpus:
        return (f"the job asks for {cpus} CPUs; the largest worker ({workers[0].name}) has "
                f"{workers[0].cpus}")
    roomiest = max(enough_cpus, key=lambda w: w.memory)  # each counts its memory here
    return (f"the job asks for {memory} MiB of memory; the most a worker with {cpus} "
            f"CPU(s) gives its jobs is {roomiest.memory} MiB ({roomiest.name})")


def _fits(cpus: int, memory: int, worker: Worker) -> bool:
    return cpus <= worker.cpus and (worker.memory is None or memory <= worker.memory)


def pending(session, job: Job, workers: list[Worker]) -> dict:
    """For a queued job: its place in the queue by submission (1: none before it; fair
    share may still start another user's later job first) and why it waits."""
    ahead = session.scalar(
        select(func.count()).select_from(Job).where(
            Job.state == JobState.QUEUED.value,
            or_(Job.queued_at < job.queued_at,
                and_(Job.queued_at == job.queued_at, Job.id < job.id))))
    offering = [w.name for w in workers if job.environment in (w.environments or [])]
    if job.held:
        reason = "held: it starts once released (jobqueue release)"
    elif (parent := first_unmet(session, job)) is not None:
        reason = f"waiting for job {parent}"
    elif job.array is not None and job.array.max_running is not None and session.scalar(
            select(func.count()).select_from(Job).where(
                Job.array_id == job.array_id, Job.state == JobState.RUNNING.value)) \
            >= job.array.max_running:
        reason = f"array limit %{job.array.max_running} reached"
    elif not workers:
        reason = "no worker has asked for jobs yet"
    elif job.environment and not offering:
        reason = (f"no worker offers the environment {job.environment!r} yet: it waits "
                  "for one that does")
    elif (cut := too_big(job.cpus, job.memory, workers)) is not None:
        reason = cut + ": it waits for a larger worker to join"
    elif ahead:
        reason = f"{ahead} job(s) ahead of it in the queue"
    elif job.environment:
        reason = (f"waiting for a worker with {job.cpus} free CPU(s), {job.memory} MiB and "
                  f"the environment {job.environment!r} ({', '.join(offering)})")
    else:
        reason = f"waiting for a worker with {job.cpus} free CPU(s) and {job.memory} MiB"
    return {"queue_position": ahead + 1, "pending_reason": reason}
