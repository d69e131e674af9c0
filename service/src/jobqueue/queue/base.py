"""The seam between the controller and whatever runs queued jobs."""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from jobqueue.models import Job

if TYPE_CHECKING:
    from jobqueue.queue.leases import Leases


class LeaseLost(Exception):
    """The caller no longer holds the job's lease (expired, or another attempt has it)."""


@dataclass(frozen=True)
class QueueEvents:
    """What a backend tells the controller as it goes (for its metrics)."""

    claimed: Callable[[float], None] = lambda waited_seconds: None


class QueueBackend(abc.ABC):
    """What the controller asks of a queue. The controller owns job records and files;
    the backend decides when and where a queued job runs.

    A backend is a subclass with a `name`, in a module of this package (or behind an
    entry point of the group `jobqueue.queue_backends`), built as
    `cls(session_factory, settings, events, own)`: `own` is its `Settings` dataclass
    filled from the table `[queue.NAME]` of controller.toml, or None without one."""

    name: str
    Settings: type | None = None

    @abc.abstractmethod
    def enqueued(self, session, job: Job) -> None:
        """A new job was stored in `session` (not yet committed) in state queued."""

    @abc.abstractmethod
    def cancel(self, session, job: Job) -> None:
        """Cancel a queued or running job: at once if queued, through its runner if running."""

    @abc.abstractmethod
    def sync(self) -> None:
        """Bring job states up to date (expired leases, a scheduler's view); cheap if recent."""

    def close(self) -> None:  # noqa: B027 - most backends hold nothing to release
        """Release background resources."""


@dataclass(frozen=True)
class Claim:
    job_id: str
    lease: str


@dataclass(frozen=True)
class WorkerCapacity:
    """All a worker offers: its CPUs, how many jobs it runs at once (None: one per CPU
    at most, as every job takes at least one), and the memory in MiB its jobs may ask
    for in sum (None: not counted). `quarantined`: job slots it has set aside because
    they could not be cleaned (not counted in `jobs`; for its admins to see).
    `environments`: the software environments it offers (beside its own Python)."""

    cpus: int
    jobs: int | None = None
    memory: int | None = None
    quarantined: int = 0
    environments: tuple[str, ...] = ()


class LeasedQueue(QueueBackend):
    """A backend whose jobs run on the service's workers, each attempt under a lease the
    worker renews (the worker API is served for it). Its `leases`
    (`jobqueue.queue.leases.Leases`) keep them; the worker API's calls go to them."""

    leases: Leases

    def heartbeat(self, job_id: str, lease: str, worker: str | None = None
                  ) -> tuple[object, bool]:
        """Extend the lease; return (new expiry, cancel requested). Raise LeaseLost."""
        return self.leases.heartbeat(job_id, lease, worker)

    def finish(self, session, job: Job, lease: str, state: str, exit_code: int | None,
               message: str, limit: str | None = None) -> None:
        """Record the attempt's outcome in `session` if `lease` still holds. Raise LeaseLost."""
        self.leases.finish(session, job, lease, state, exit_code, message, limit)

    def release(self, job_id: str, lease: str, error: str | None = None,
                worker: str | None = None) -> None:
        """Put a running job back in the queue. Without `error` (the worker is stopping)
        that uses up no attempt; with it (the attempt failed on the worker) it does, and
        the job fails after its last attempt. Raise LeaseLost."""
        self.leases.release(job_id, lease, error, worker)

    def requeue(self, session, job: Job, message: str) -> None:
        """Put a running job back in the queue in `session`, as Slurm's scontrol requeue:
        its attempt loses its lease, and a scheduler's job of it is killed as a stray."""
        self.leases.take_back(session, job, message)


class PullQueue(LeasedQueue):
    """A backend from which worker daemons pull jobs by claims."""

    @abc.abstractmethod
    def claim(self, worker: str, free_cpus: int, wait: float,
              claim_id: str | None = None, capacity: WorkerCapacity | None = None
              ) -> Claim | None:
        """Hand the oldest queued job that fits to `worker`, waiting up to `wait` seconds.
        A claim retried with the same `claim_id` gets the job it already claimed. With
        `capacity`, what fits is what the worker has left beside its running jobs at the
        moment a job is handed out, not `free_cpus` as it was when the claim was sent."""
