"""The dispatcher: a database-backed queue that worker daemons pull jobs from.

Claims are long polls: a worker's request waits on an in-process condition that every
submission, requeue and finished job signals, so an idle worker gets a new job within
milliseconds, and a worker that says what it has in all (its capacity) gets one as
soon as its running jobs leave room. Across processes the signal travels by
PostgreSQL LISTEN/NOTIFY; on SQLite, where there is no such channel, waiters also
re-check once a second.

Behind Apache, idle workers wait in the waiting room instead (controller.waiting_room):
claims then answer at once, and each such commit tells the room to look at what the
claimable jobs need (and which workers have more room now).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Protocol

from sqlalchemy import event, func, select, text
from sqlalchemy.orm import aliased

from jobqueue.models import Job, JobArray, Worker, new_lease, utcnow
from jobqueue.queue import dependencies
from jobqueue.queue.base import Claim, PullQueue, QueueEvents, WorkerCapacity
from jobqueue.queue.leases import Leases
from jobqueue.states import JobState, check_transition

log = logging.getLogger(__name__)

CHANNEL = "jobqueue_queue"
RECHECK_SECONDS = 1.0  # bounds how late a waiter sees other processes' jobs and expired leases


class QueueRoom(Protocol):
    """Where idle workers wait (controller.wait_tickets.RoomClient)."""

    def look(self) -> None: ...

    def wake_worker(self, name: str) -> None: ...


class Wakeup:
    """A generation counter under a condition: waiters sleep until it moves."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.generation = 0

    def notify(self) -> None:
        with self._cond:
            self.generation += 1
            self._cond.notify_all()

    def wait(self, seen: int, timeout: float) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self.generation != seen, timeout)


MAX_NEEDS = 1000  # kinds of claimable job the waiting room reads at one look


def claimable_needs(session) -> list[tuple[int, int, str | None, int]]:
    """What the jobs ready to be claimed (not held, not waiting for others) need, as
    (cpus, memory MiB, environment, how many such jobs): the waiting room wakes a
    waiting worker for each that fits one. An array at its %N limit still counts: the
    worker woken for it claims another job or waits again."""
    return [tuple(row) for row in session.execute(
        select(Job.cpus, Job.memory, Job.environment, func.count())
        .where(Job.state == JobState.QUEUED.value, Job.waiting_on == 0, Job.held.is_(False))
        .group_by(Job.cpus, Job.memory, Job.environment)
        .order_by(func.min(Job.queued_at)).limit(MAX_NEEDS))]


class Dispatcher(PullQueue):
    name = "dispatcher"

    def __init__(self, session_factory, settings, events: QueueEvents | None = None,
                 own_settings: None = None) -> None:
        self.session_factory = session_factory
        self.leases = Leases(session_factory, settings, wake=self._wake_on_commit)
        self.events = events or QueueEvents()
        self.wakeup = Wakeup()
        self._last_sync = 0.0
        self._sync_lock = threading.Lock()
        self._listener: threading.Thread | None = None
        self._closed = threading.Event()
        self._is_postgres = session_factory.kw["bind"].dialect.name == "postgresql"
        # The waiting room's, when there is one: what a commit changed for idle workers.
        self.room: QueueRoom | None = None

        @event.listens_for(session_factory, "after_commit")
        def _wake_after_commit(session):
            freed = session.info.pop("freed_workers", set())
            if session.info.pop("wake_queue", False):
                self.wakeup.notify()
                if self.room is not None:
                    self.room.look()
                    for worker in freed:
                        self.room.wake_worker(worker)

    # -- QueueBackend ---------------------------------------------------------------

    def enqueued(self, session, job: Job) -> None:
        self._wake_on_commit(session)

    def cancel(self, session, job: Job) -> None:
        if job.job_state is JobState.QUEUED:
            job.state = check_transition(job.state, JobState.CANCELLED).value
            job.finished_at = utcnow()
            job.message = "cancelled before it started"
            dependencies.settle(session, job)
        elif job.job_state is JobState.RUNNING:
            job.cancel_requested = True
        else:
            check_transition(job.state, JobState.CANCELLED)  # raises: already finished

    def sync(self, force: bool = False) -> None:
        """Requeue (or mark lost) running jobs whose lease expired; at most once a second."""
        with self._sync_lock:
            if not force and time.monotonic() - self._last_sync < RECHECK_SECONDS:
                return
            self._last_sync = time.monotonic()
        self.leases.expire()

    def close(self) -> None:
        """Stop the listener and answer every waiting claim now (the server is stopping)."""
        self._closed.set()
        self.wakeup.notify()

    # -- PullQueue --------------------------------------------------------------------

    def claim(self, worker: str, free_cpus: int, wait: float,
              claim_id: str | None = None, capacity: WorkerCapacity | None = None
              ) -> Claim | None:
        if claim_id is not None and (claim := self._claimed_before(worker, claim_id)):
            return claim
        if wait > 0:
            self._start_listener()
        deadline = time.monotonic() + wait
        while not self._closed.is_set():
            seen = self.wakeup.generation
            self.sync()
            claim = self._try_claim(worker, free_cpus, claim_id, capacity)
            remaining = deadline - time.monotonic()
            if claim is not None or remaining <= 0:
                return claim
            self.wakeup.wait(seen, min(remaining, RECHECK_SECONDS))
        return None

    def free_on(self, worker: str, free_cpus: int, capacity: WorkerCapacity | None
                ) -> tuple[int, int | None]:
        """What `worker` has free for a job now: CPUs and MiB of memory (None: not
        counted), from its capacity beside its running jobs, else as it said."""
        if capacity is None:
            return free_cpus, None
        with self.session_factory() as session:
            return self._left_on(session, worker, capacity)

    def _claimed_before(self, worker: str, claim_id: str) -> Claim | None:
        """The job a claim with this id already took, if its answer never reached the worker."""
        with self.session_factory.begin() as session:
            job = session.scalars(
                select(Job).where(Job.claim_id == claim_id, Job.worker == worker,
                                  Job.state == JobState.RUNNING.value)
                .with_for_update()).first()
            if job is None:
                return None
            job.lease_expires_at = utcnow() + self.leases.lease
            log.info("job %s: claim %s repeated; handed out again", job.id, claim_id)
            return Claim(job.id, job.lease)

    def _try_claim(self, worker: str, free_cpus: int, claim_id: str | None = None,
                   capacity: WorkerCapacity | None = None) -> Claim | None:
        free_memory = None
        environments = capacity.environments if capacity is not None else ()
        with self.session_factory.begin() as session:
            # Looked at under a lock a drain waits for: once a drain has committed, no
            # claim in flight takes a job, so the drained worker's running jobs only
            # fall from the count an admin reads.
            if session.scalar(select(Worker.drained).where(Worker.name == worker)
                              .with_for_update(read=True)):
                return None
            if capacity is not None:
                free_cpus, free_memory = self._left_on(session, worker, capacity)
                if free_cpus <= 0 or (free_memory is not None and free_memory <= 0):
                    return None
            job = self._next_within_limits(session, free_cpus, free_memory, environments)
            if job is None:
                return None
            now = utcnow()
            job.state = check_transition(job.state, JobState.RUNNING).value
            job.attempts += 1
            job.worker = worker
            job.claim_id = claim_id
            job.lease = new_lease()
            job.lease_expires_at = now + self.leases.lease
            job.started_at = now
            waited = (now - job.queued_at).total_seconds()
            claim = Claim(job.id, job.lease)
        self.events.claimed(waited)
        return claim

    MAX_LIMIT_RETRIES = 8  # arrays found at their %N limit by one claim before it gives up

    def _next_within_limits(self, session, free_cpus: int, free_memory: int | None = None,
                            environments: Sequence[str] = ()) -> Job | None:
        """The next job (`_next`), making sure a task does not take its array past its %N.

        The query already leaves out arrays at their limit, but on PostgreSQL two claims
        may both see a task's array one short of it: so an array with a limit is locked
        (its row) and its running tasks counted again once the lock is held. Jobs of
        arrays without a limit, and other jobs, take the one query."""
        full: list[str] = []
        for _ in range(self.MAX_LIMIT_RETRIES):
            row = session.execute(
                self._next(free_cpus, full, free_memory, environments)).first()
            if row is None or row.max_running is None:
                return None if row is None else row.Job
            # Wait for the claims of this array's tasks in flight, then count again.
            session.get(JobArray, row.Job.array_id, with_for_update=True)
            if self._running_in(session, row.Job.array_id) < row.max_running:
                return row.Job
            full.append(row.Job.array_id)
        return None

    @staticmethod
    def _running_in(session, array_id: str) -> int:
        return session.scalar(select(func.count()).select_from(Job).where(
            Job.array_id == array_id, Job.state == JobState.RUNNING.value))

    @staticmethod
    def _next(free_cpus: int, full_arrays: Sequence[str] = (), free_memory: int | None = None,
              environments: Sequence[str] = ()):
        """The job to hand out next, among those that fit (CPUs, memory where the worker
        counts it, a software environment it offers): fair share between users (the
        user with the fewest CPUs in use goes first), then submission order. A later,
        smaller job of a user may start while an earlier one waits for more free CPUs.
        Jobs still waiting for others (`after`) and tasks of an array that runs as many as
        its %N allows are passed over."""
        in_use = (select(Job.owner_id, func.sum(Job.cpus).label("cpus"))
                  .where(Job.state == JobState.RUNNING.value)
                  .group_by(Job.owner_id).subquery())
        sibling = aliased(Job)
        running_siblings = (select(func.count()).select_from(sibling)
                            .where(sibling.array_id == Job.array_id,
                                   sibling.state == JobState.RUNNING.value)
                            .correlate(Job).scalar_subquery())
        query = (select(Job, JobArray.max_running)
                 .outerjoin(in_use, in_use.c.owner_id == Job.owner_id)
                 .outerjoin(JobArray, JobArray.id == Job.array_id)
                 .where(Job.state == JobState.QUEUED.value, Job.cpus <= free_cpus,
                        Job.waiting_on == 0, Job.held.is_(False),
                        Job.environment.is_(None) | Job.environment.in_(environments),
                        JobArray.max_running.is_(None) | (running_siblings
                                                          < JobArray.max_running)))
        if free_memory is not None:
            query = query.where(Job.memory <= free_memory)
        if full_arrays:
            query = query.where(Job.array_id.is_(None) | Job.array_id.not_in(full_arrays))
        # SKIP LOCKED lets many workers claim at once on PostgreSQL, each taking a
        # different row; SQLite serialises writers (BEGIN IMMEDIATE) instead.
        return (query.order_by(func.coalesce(in_use.c.cpus, 0), Job.queued_at,
                               Job.array_index, Job.id)
                .limit(1).with_for_update(skip_locked=True, of=Job))

    @staticmethod
    def _left_on(session, worker: str, capacity: WorkerCapacity) -> tuple[int, int | None]:
        """CPUs and memory (None: not counted) the worker has left beside the jobs it
        runs (no CPUs if it runs all it may)."""
        cpus, memory, running = session.execute(
            select(func.coalesce(func.sum(Job.cpus), 0), func.coalesce(func.sum(Job.memory), 0),
                   func.count())
            .where(Job.state == JobState.RUNNING.value, Job.worker == worker)).one()
        if capacity.jobs is not None and running >= capacity.jobs:
            return 0, None
        return (capacity.cpus - cpus,
                None if capacity.memory is None else capacity.memory - memory)

    # -- helpers ----------------------------------------------------------------------

    def _wake_on_commit(self, session, freed_worker: str | None = None) -> None:
        session.info["wake_queue"] = True
        if freed_worker is not None:
            session.info.setdefault("freed_workers", set()).add(freed_worker)
        if self._is_postgres:
            session.execute(text(f"NOTIFY {CHANNEL}"))  # delivered at commit

    def _start_listener(self) -> None:
        """On PostgreSQL, relay other processes' NOTIFYs to this process's waiters."""
        if not self._is_postgres or self._listener is not None:
            return
        with self._sync_lock:
            if self._listener is None:
                self._listener = threading.Thread(target=self._listen, name="queue-listener",
                                                  daemon=True)
                self._listener.start()

    def _listen(self) -> None:
        import psycopg

        url = self.session_factory.kw["bind"].url.set(drivername="postgresql")
        conninfo = url.render_as_string(hide_password=False)
        while not self._closed.is_set():
            try:
                with psycopg.connect(conninfo, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    while not self._closed.is_set():
                        for _ in conn.notifies(timeout=5.0):
                            self.wakeup.notify()
            except psycopg.Error as exc:
                log.warning("queue listener: %s; reconnecting", exc)
                self._closed.wait(2.0)
