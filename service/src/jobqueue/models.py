"""Database tables: users, their hashed tokens, jobs, job arrays and dependencies, workers
and the idempotency keys of submits; shared by the controller and the queue backends."""

from __future__ import annotations

import datetime as dt
import secrets
import uuid

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Text,
    TypeDecorator,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from jobqueue.states import JobState

UTC = dt.UTC
ROLES = ("user", "admin", "worker")


def utcnow() -> dt.datetime:
    return dt.datetime.now(UTC)


def to_the_second(value: dt.datetime | None) -> str | None:
    """A time as the admin's and the cluster's views show it: ISO 8601, to the second."""
    return value.isoformat(timespec="seconds") if value else None


class UTCDateTime(TypeDecorator):
    """Aware UTC datetimes on every database (SQLite keeps no time zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        value = value.astimezone(UTC)
        # SQLite compares timestamps as text: store them all naive in UTC.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    tokens: Mapped[list[Token]] = relationship(back_populates="user")


class Token(Base):
    __tablename__ = "tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    # sha256 of the token: tokens are long random strings, so a fast hash is enough.
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    label: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # None: until revoked.
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)

    user: Mapped[User] = relationship(back_populates="tokens")


def new_job_id() -> str:
    return uuid.uuid4().hex


def new_lease() -> str:
    return secrets.token_urlsafe(18)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_state_queued_at", "state", "queued_at"),
        Index("ix_jobs_owner_created", "owner_id", "created_at"),
        Index("ix_jobs_claim_id", "claim_id"),
        Index("ix_jobs_external_id", "external_id"),
        Index("ix_jobs_array_state", "array_id", "state"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_job_id)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    name: Mapped[str] = mapped_column(String(200))
    state: Mapped[str] = mapped_column(String(16), default=JobState.QUEUED.value)
    entry: Mapped[str] = mapped_column(String(1024))
    args: Mapped[list] = mapped_column(JSON, default=list)
    # Environment variables the submitter asked for (`--export`), beside the worker's.
    env: Mapped[dict] = mapped_column(JSON, default=dict)
    # The software environment it runs in (one the lab declared); None: the worker's own.
    environment: Mapped[str | None] = mapped_column(String(64), nullable=True)
    cpus: Mapped[int] = mapped_column(Integer, default=1)
    walltime: Mapped[int] = mapped_column(Integer)
    memory: Mapped[int] = mapped_column(Integer)
    output_limit: Mapped[int] = mapped_column(Integer)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    worker: Mapped[str | None] = mapped_column(String(128), nullable=True)
    # The lease of the attempt that holds (or last held) the job; kept after the result
    # is stored so that a retried upload of that attempt is recognised, not duplicated.
    lease: Mapped[str | None] = mapped_column(String(32), nullable=True)
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # The worker's id for the claim that started the attempt: a claim retried after its
    # answer was lost gets this job again instead of leaving it to wait out its lease.
    claim_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # The job's id in an external batch scheduler (Slurm) for its current attempt.
    external_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    # Held by its owner (or an admin): queued, but handed to no worker or scheduler.
    held: Mapped[bool] = mapped_column(Boolean, default=False)
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # The limit that ended the last attempt, if one did (jobqueue.states.LIMITS).
    limit_hit: Mapped[str | None] = mapped_column(String(16), nullable=True)
    message: Mapped[str] = mapped_column(Text, default="")
    # What the attempt that finished the job used, as its worker measured it (None:
    # not measured): CPU seconds (user + system), peak memory in bytes, wall seconds,
    # and the signal that ended it.
    cpu_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    peak_memory: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    wall_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    signal: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    queued_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # A task of a job array: the array and the task's index in it (None for other jobs).
    array_id: Mapped[str | None] = mapped_column(ForeignKey("arrays.id"), nullable=True)
    array_index: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # How many of the jobs it waits for (Dependency) have not yet succeeded: the
    # dispatcher hands out only jobs at 0, and counts down as their parents succeed.
    waiting_on: Mapped[int] = mapped_column(Integer, default=0)

    owner: Mapped[User] = relationship()
    array: Mapped[JobArray | None] = relationship()

    @property
    def job_state(self) -> JobState:
        return JobState(self.state)


class JobArray(Base):
    """Tasks submitted as one (`array` in the spec): one job row each, one input copy
    (under `<data_dir>/jobs/<array id>/input`) for all of them."""

    __tablename__ = "arrays"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_job_id)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    name: Mapped[str] = mapped_column(String(200))
    size: Mapped[int] = mapped_column(Integer)
    # At most this many tasks run at once (`%N`); None: no limit.
    max_running: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The array whose tasks this one runs again (`POST /arrays/{id}/rerun`), if any, and
    # the size of the array first submitted, which its tasks are told as before (None:
    # not a rerun; its own size).
    rerun_of: Mapped[str | None] = mapped_column(String(32), nullable=True)
    first_size: Mapped[int | None] = mapped_column(Integer, nullable=True)

    owner: Mapped[User] = relationship()


class Dependency(Base):
    """`waiter` (a job, or every task of an array: its id) may start only once the job
    `parent_id` has ended as `condition` asks (Slurm's afterok, afterany, afternotok);
    it is cancelled if that job ends any other way. With `inputs`, the parent's results
    are among the waiter's inputs."""

    __tablename__ = "dependencies"
    __table_args__ = (
        PrimaryKeyConstraint("waiter", "parent_id"),
        Index("ix_dependencies_parent_id", "parent_id"),
    )

    waiter: Mapped[str] = mapped_column(String(32))
    parent_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    condition: Mapped[str] = mapped_column(String(8), default="ok")
    inputs: Mapped[bool] = mapped_column(Boolean, default=False)


class Worker(Base):
    """A worker as its last claim described it: all the CPUs (and jobs, and memory in MiB
    for its jobs) it offers, and how many job slots it has set aside; and whether an
    admin drained it (it keeps its running jobs and takes no new one)."""

    __tablename__ = "workers"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    cpus: Mapped[int] = mapped_column(Integer)
    jobs: Mapped[int | None] = mapped_column(Integer, nullable=True)
    memory: Mapped[int | None] = mapped_column(Integer, nullable=True)
    quarantined: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    drained: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # The software environments it offers jobs.
    environments: Mapped[list] = mapped_column(JSON, default=list)
    seen_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class IdempotencyKey(Base):
    """The job a user's `Idempotency-Key` created, and a digest of the request that did."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (
        PrimaryKeyConstraint("owner_id", "key"),
        Index("ix_idempotency_keys_created_at", "created_at"),
    )

    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(255))
    fingerprint: Mapped[str] = mapped_column(String(64))
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
