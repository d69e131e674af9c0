"""Dependencies between jobs as the API sees them: the ids a submit's `after` and
`inputs_from` name, resolved to the jobs they stand for, and each job's dependencies and
reason to wait.

What a finished job does to the jobs waiting on it is the queue's part
(`jobqueue.queue.dependencies`, which also defines the conditions)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import or_, select

from jobqueue.controller import lookup
from jobqueue.controller.errors import ApiError, bad_request, conflict
from jobqueue.models import Dependency, Job, JobArray, User
from jobqueue.queue.dependencies import CONDITIONS, met
from jobqueue.states import FINISHED


@dataclass(frozen=True)
class Link:
    """One job a new job depends on: the condition it waits for, and whether the
    parent's results are among its inputs."""
    parent: Job
    condition: str = "ok"
    inputs: bool = False


@dataclass
class Parents:
    """A job's dependencies as the API shows them: `after` as a submit gives it (a bare id
    for afterok, CONDITION:ID otherwise), and the ids whose results are its inputs."""
    after: list[str] = field(default_factory=list)
    inputs_from: list[str] = field(default_factory=list)

    def as_json(self) -> dict:
        return {"after": self.after, "inputs_from": self.inputs_from}


def _named(session, user: User, field_name: str, name: str) -> tuple[str, str]:
    """("job" or "array", its id) for an id or a unique start of one, of the caller's jobs
    or arrays (an admin's: anyone's)."""
    if not lookup.is_id_or_prefix(name):
        raise bad_request(f"spec field {field_name!r}: {lookup.why_not(name)}")
    found = ([("job", i) for i in lookup.matching(session, user, Job, name)]
             + [("array", i) for i in lookup.matching(session, user, JobArray, name)])
    if not found:
        raise ApiError(404, "not_found", f"spec field {field_name!r}: no job or array {name!r}")
    if len(found) > 1:
        raise conflict(f"spec field {field_name!r}: more than one job or array starts with "
                       f"{name!r}: give more of the id")
    return found[0]


def resolve(session, user: User, after: Sequence[tuple[str, str]],
            inputs_from: Sequence[str] = ()) -> list[Link]:
    """The jobs `after` and `inputs_from` name (an array's id: all its tasks), locked
    until the submit commits, so none can finish unseen in between. A job that already
    ended in a way its condition excludes is refused: the new job could never start."""
    wanted: dict[tuple[str, str], list] = {}  # (kind, id) -> [condition, inputs]
    for condition, name in after:
        key = _named(session, user, "after", name)
        if wanted.setdefault(key, [condition, False])[0] != condition:
            raise bad_request(f"spec field 'after' names {key[0]} {key[1]} twice, with two "
                              "conditions")
    for name in inputs_from:
        wanted.setdefault(_named(session, user, "inputs_from", name), ["ok", False])[1] = True
    if not wanted:
        return []
    job_ids = {i for (kind, i) in wanted if kind == "job"}
    array_ids = {i for (kind, i) in wanted if kind == "array"}
    parents = session.scalars(
        select(Job).where(or_(Job.id.in_(job_ids), Job.array_id.in_(array_ids)))
        .order_by(Job.id).with_for_update()).all()
    links: dict[str, Link] = {}
    for parent in parents:
        for key in (("job", parent.id), ("array", parent.array_id)):
            if key not in wanted:
                continue
            condition, inputs = wanted[key]
            if (earlier := links.get(parent.id)) and earlier.condition != condition:
                raise bad_request(f"spec field 'after': job {parent.id} is named twice, with "
                                  "two conditions")
            if parent.job_state.finished and not met(condition, parent.job_state):
                raise ApiError(409, "dependency_failed",
                               f"spec field 'after': job {parent.id} already ended "
                               f"{parent.state}, not {CONDITIONS[condition]}; a job after it "
                               "could never start")
            links[parent.id] = Link(parent, condition, inputs or bool(earlier and earlier.inputs))
    return list(links.values())


def unmet(links: Iterable[Link]) -> int:
    """How many of the parents have yet to end (none has ended against its condition:
    `resolve`)."""
    return sum(1 for link in links if not link.parent.job_state.finished)


def record(session, waiter: str, links: Iterable[Link]) -> None:
    """`waiter` (a job's id, or an array's for all its tasks) runs after `links`."""
    session.add_all(Dependency(waiter=waiter, parent_id=link.parent.id,
                               condition=link.condition, inputs=link.inputs)
                    for link in links)


def _waiter_ids(jobs: Sequence[Job]) -> set[str]:
    return {j.id for j in jobs} | {j.array_id for j in jobs if j.array_id}


def parents_of(session, jobs: Sequence[Job]) -> dict[str, Parents]:
    """Each job's dependencies, in one query."""
    found: dict[str, Parents] = {}
    if waiters := _waiter_ids(jobs):
        for row in session.execute(
                select(Dependency.waiter, Dependency.parent_id, Dependency.condition,
                       Dependency.inputs)
                .where(Dependency.waiter.in_(waiters)).order_by(Dependency.parent_id)):
            parents = found.setdefault(row.waiter, Parents())
            parents.after.append(row.parent_id if row.condition == "ok"
                                 else f"after{row.condition}:{row.parent_id}")
            if row.inputs:
                parents.inputs_from.append(row.parent_id)
    empty = Parents()
    result = {}
    for job in jobs:
        own, array = found.get(job.id, empty), found.get(job.array_id or "", empty)
        result[job.id] = Parents(own.after + array.after, own.inputs_from + array.inputs_from)
    return result


def input_sources(session, job: Job) -> list[tuple[str, str]]:
    """(folder, job id) for each parent whose results are `job`'s inputs; the folder is
    the parent's id, or for a task of an array, ARRAY_ID/INDEX."""
    parents = session.scalars(
        select(Job).join(Dependency, Dependency.parent_id == Job.id)
        .where(Dependency.waiter.in_(_waiter_ids([job])), Dependency.inputs)
        .order_by(Job.id)).all()
    return [(f"{p.array_id}/{p.array_index}" if p.array_id else p.id, p.id) for p in parents]


def first_unmet(session, job: Job) -> str | None:
    """The id of a job `job` still waits for (None: it waits for none)."""
    if not job.waiting_on:
        return None
    return session.scalar(
        select(Dependency.parent_id).join(Job, Job.id == Dependency.parent_id)
        .where(Dependency.waiter.in_(_waiter_ids([job])),
               Job.state.notin_([s.value for s in FINISHED]))
        .order_by(Dependency.parent_id).limit(1))
