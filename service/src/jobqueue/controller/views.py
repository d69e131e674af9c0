"""Helpers shared by the API blueprints: the request's session, the caller's jobs, JSON."""

from __future__ import annotations

import datetime as dt

from flask import current_app, g, request, url_for
from sqlalchemy import select

from jobqueue.controller import accounting, jsonin, lookup
from jobqueue.controller.after import Parents, parents_of
from jobqueue.controller.auth import current_user
from jobqueue.controller.errors import bad_request, conflict, not_found
from jobqueue.models import Job, JobArray


def app_state():
    """The app's long-lived parts: settings, sessions, queue backend, files, metrics."""
    return current_app.extensions["jobqueue"]


def visible_job(job_id: str, for_update: bool = False) -> Job:
    """The job, if the caller may see it; 404 otherwise (never reveal others' jobs). A
    unique start of an id names the job too, and ARRAY:INDEX an array's task
    (jobqueue.controller.lookup)."""
    user = current_user()
    array, colon, index = job_id.partition(":")
    if colon:
        return find_job(_task_of(user, array, index), for_update)
    if not lookup.is_id_or_prefix(job_id):
        raise not_found("job", lookup.why_not(job_id))
    if len(job_id) == lookup.ID_LENGTH:  # a whole id, as clients send: one query
        job = g.db.get(Job, job_id, with_for_update=for_update)
        if job is not None and lookup.may_see(user, job):
            return job
        ids = []
    else:
        ids = lookup.matching(g.db, user, Job, job_id)
    if len(ids) > 1:
        raise conflict(f"more than one job starts with {job_id!r}: give more of the id")
    if not ids:
        if lookup.matching(g.db, user, JobArray, job_id):
            raise not_found("job", f"{job_id} is a job array: {job_id}:INDEX names one of "
                                   "its tasks")
        raise not_found()
    return find_job(ids[0], for_update)


def _task_of(user, array: str, index: str) -> str:
    """The id of task `index` of the caller's array `array` (an id or its prefix)."""
    if not lookup.is_id_or_prefix(array):
        raise not_found("array", lookup.why_not(array))
    if not (index.isascii() and index.isdigit()) or len(index) > 9:
        raise not_found("job", f"{index!r} is not a task index (0, 1, 2...)")
    arrays = lookup.matching(g.db, user, JobArray, array)
    if len(arrays) > 1:
        raise conflict(f"more than one array starts with {array!r}: give more of the id")
    task = g.db.scalars(select(Job.id).where(Job.array_id == arrays[0],
                                             Job.array_index == int(index))).first() \
        if arrays else None
    if task is None:
        raise not_found("job", f"no task {index} in array {array}" if arrays else "")
    return task


def find_job(job_id: str, for_update: bool = False) -> Job:
    """The job with this id, or 404 (ids longer than any real one are not looked up)."""
    job = g.db.get(Job, job_id, with_for_update=for_update) if len(job_id) <= 32 else None
    if job is None:
        raise not_found()
    return job


def _time(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value else None


def job_json(job: Job, parents: Parents | None = None) -> dict:
    """The job as the API shows it; its dependencies are looked up unless given (a list
    of jobs gives them all at once: `controller.after.parents_of`)."""
    if parents is None:
        parents = parents_of(g.db, [job])[job.id]
    return {
        "id": job.id,
        "name": job.name,
        "owner": job.owner.name,
        "state": job.state,
        "entry": job.entry,
        "args": job.args,
        "env": job.env or {},
        "environment": job.environment,
        "cpus": job.cpus,
        "walltime": job.walltime,
        "memory": job.memory,
        "output_limit": job.output_limit,
        "attempts": job.attempts,
        "worker": job.worker,
        "exit_code": job.exit_code,
        "limit": job.limit_hit,
        "message": job.message,
        "accounting": accounting.as_json(job),
        "cancel_requested": job.cancel_requested,
        "held": job.held,
        "created_at": _time(job.created_at),
        "started_at": _time(job.started_at),
        "finished_at": _time(job.finished_at),
        "array": None if job.array_id is None else {
            "id": job.array_id, "index": job.array_index, "size": job.array.size,
            # What JOBQUEUE_ARRAY_TASK_COUNT says: a rerun's tasks see the first array's.
            "task_count": job.array.first_size or job.array.size},
        **parents.as_json(),
        "links": {
            "self": url_for("v1.api.get_job", job_id=job.id),
            "files": url_for("v1.api.list_files", job_id=job.id),
            "log": url_for("v1.api.get_log", job_id=job.id),
            "results": url_for("v1.api.get_results", job_id=job.id),
            "cancel": url_for("v1.api.cancel_job", job_id=job.id),
        },
    }


def json_body() -> dict:
    body = jsonin.loads(request.get_data(), "the request body")
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object")
    return body
