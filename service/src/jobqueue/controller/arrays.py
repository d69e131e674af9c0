"""Job arrays on the user side of the API: the tasks of an array submit, the array's
summary (`GET /arrays/{id}`) and cancelling all its tasks at once."""

from __future__ import annotations

import datetime as dt

from flask import Blueprint, g, jsonify, url_for
from sqlalchemy import func, select

from jobqueue.controller import lookup
from jobqueue.controller.auth import current_user, require
from jobqueue.controller.errors import bad_request, conflict, not_found
from jobqueue.controller.jobspec import JobSpec
from jobqueue.controller.views import app_state
from jobqueue.models import Job, JobArray, User, new_job_id
from jobqueue.states import IllegalTransition, JobState

bp = Blueprint("arrays", __name__)


def create(session, user: User, spec: JobSpec, array_id: str, waiting_on: int,
           now: dt.datetime) -> tuple[JobArray, list[Job]]:
    """The array and a queued job per task (in index order), added to `session`."""
    array = JobArray(id=array_id, owner_id=user.id, name=spec.name, size=spec.array.size,
                     max_running=spec.array.max_running, created_at=now)
    session.add(array)
    per_task = spec.array_args or [[] for _ in spec.array.indices]
    tasks = [Job(id=new_job_id(), owner=user, name=spec.name, entry=spec.entry,
                 args=spec.args + extra, env=spec.env, environment=spec.environment,
                 cpus=spec.cpus, walltime=spec.walltime,
                 memory=spec.memory, output_limit=spec.output_limit,
                 state=JobState.QUEUED.value, attempts=0, cancel_requested=False, message="",
                 created_at=now, queued_at=now, array=array, array_index=index,
                 waiting_on=waiting_on)
             for index, extra in zip(spec.array.indices, per_task, strict=True)]
    session.add_all(tasks)
    return array, tasks


def summary(session, array: JobArray) -> dict:
    """`{"id", "name", "size", "max_running", "counts": {state: n}}` and more."""
    counts = dict(session.execute(
        select(Job.state, func.count()).where(Job.array_id == array.id)
        .group_by(Job.state)).all())
    return {
        "id": array.id,
        "name": array.name,
        "owner": array.owner.name,
        "size": array.size,
        "max_running": array.max_running,
        "counts": {state: counts[state] for state in sorted(counts)},
        "created_at": array.created_at.isoformat(),
        "links": {
            "self": url_for("v1.arrays.get_array", array_id=array.id),
            "jobs": url_for("v1.api.list_jobs", array=array.id),
            "cancel": url_for("v1.arrays.cancel_array", array_id=array.id),
        },
    }


def task_ids(session, array: JobArray) -> list[str]:
    return list(session.scalars(select(Job.id).where(Job.array_id == array.id)
                                .order_by(Job.array_index)))


def visible_array(array_id: str) -> JobArray:
    """The array, if the caller may see it (404 otherwise); a unique start of its id
    names it too (jobqueue.controller.lookup)."""
    if not lookup.is_id_or_prefix(array_id):
        raise not_found("array", lookup.why_not(array_id))
    ids = lookup.matching(g.db, current_user(), JobArray, array_id)
    if not ids:
        raise not_found("array")
    if len(ids) > 1:
        raise conflict(f"more than one array starts with {array_id!r}: give more of the id")
    return g.db.get(JobArray, ids[0])


@bp.get("/arrays/<array_id>")
@require("user", "admin")
def get_array(array_id: str):
    return jsonify(summary(g.db, visible_array(array_id)))


@bp.post("/arrays/<array_id>/cancel")
@require("user", "admin")
def cancel_array(array_id: str):
    """Cancel every task that has not finished: queued ones at once, running ones
    through their worker (as `POST /jobs/{id}/cancel` does for each)."""
    array = visible_array(array_id)
    backend = app_state().backend
    unfinished = g.db.scalars(
        select(Job).where(Job.array_id == array.id,
                          Job.state.in_((JobState.QUEUED.value, JobState.RUNNING.value)))
        .order_by(Job.array_index).with_for_update()).all()
    for job in unfinished:
        try:
            backend.cancel(g.db, job)
        except IllegalTransition:  # finished since it was read: nothing left to cancel
            continue
    g.db.commit()
    return jsonify(summary(g.db, array))


def array_filter(value: str):
    """The `array` filter of `GET /jobs`: the tasks of that (visible) array."""
    if not value:
        raise bad_request("'array' must be an array id")
    return Job.array_id == visible_array(value).id
