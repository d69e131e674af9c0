"""Helpers shared by the API blueprints: the request's session, the caller's jobs, JSON."""

from __future__ import annotations

import datetime as dt

from flask import current_app, g, request, url_for

from jobqueue.controller import jsonin
from jobqueue.controller.auth import current_user
from jobqueue.controller.errors import bad_request, not_found
from jobqueue.controller.models import Job


def app_state():
    """The app's long-lived parts: settings, sessions, queue backend, files, metrics."""
    return current_app.extensions["jobqueue"]


def visible_job(job_id: str, for_update: bool = False) -> Job:
    """The job, if the caller may see it; 404 otherwise (never reveal others' jobs)."""
    user = current_user()
    job = find_job(job_id, for_update)
    if user.role != "admin" and job.owner_id != user.id:
        raise not_found()
    return job


def find_job(job_id: str, for_update: bool = False) -> Job:
    """The job with this id, or 404 (ids longer than any real one are not looked up)."""
    job = g.db.get(Job, job_id, with_for_update=for_update) if len(job_id) <= 32 else None
    if job is None:
        raise not_found()
    return job


def _time(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value else None


def job_json(job: Job) -> dict:
    return {
        "id": job.id,
        "name": job.name,
        "owner": job.owner.name,
        "state": job.state,
        "entry": job.entry,
        "args": job.args,
        "cpus": job.cpus,
        "walltime": job.walltime,
        "memory": job.memory,
        "output_limit": job.output_limit,
        "attempts": job.attempts,
        "worker": job.worker,
        "exit_code": job.exit_code,
        "limit": job.limit_hit,
        "message": job.message,
        "cancel_requested": job.cancel_requested,
        "created_at": _time(job.created_at),
        "started_at": _time(job.started_at),
        "finished_at": _time(job.finished_at),
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
