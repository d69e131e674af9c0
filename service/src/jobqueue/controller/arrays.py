"""Job arrays on the user side of the API: the tasks of an array submit, the array's
summary (`GET /arrays/{id}`), cancelling all its tasks at once, and running the ones
that failed again as a new array."""

from __future__ import annotations

import datetime as dt

from flask import Blueprint, g, jsonify, request, url_for
from sqlalchemy import func, select

from jobqueue.controller import after, lookup, quotas
from jobqueue.controller.auth import current_user, require
from jobqueue.controller.errors import bad_request, conflict, not_found
from jobqueue.controller.jobspec import JobSpec
from jobqueue.controller.views import app_state, json_body
from jobqueue.models import Dependency, Job, JobArray, User, new_job_id, utcnow
from jobqueue.states import FINISHED, IllegalTransition, JobState

bp = Blueprint("arrays", __name__)
# The tasks a rerun takes unless told otherwise: those that failed, not those cancelled.
RERUN_STATES = (JobState.FAILED.value, JobState.TIMED_OUT.value, JobState.LOST.value)


# What a task takes from its spec, or a rerun from the task it runs again.
TASK_FIELDS = ("name", "entry", "env", "environment", "cpus", "walltime", "memory",
               "output_limit")


def _task(like, owner: User, array: JobArray, index: int, args: list, waiting_on: int,
          now: dt.datetime) -> Job:
    return Job(id=new_job_id(), owner=owner, args=args,
               **{name: getattr(like, name) for name in TASK_FIELDS},
               state=JobState.QUEUED.value, attempts=0, cancel_requested=False, message="",
               created_at=now, queued_at=now, array=array, array_index=index,
               waiting_on=waiting_on)


def create(session, user: User, spec: JobSpec, array_id: str, waiting_on: int,
           now: dt.datetime) -> tuple[JobArray, list[Job]]:
    """The array and a queued job per task (in index order), added to `session`."""
    array = JobArray(id=array_id, owner_id=user.id, name=spec.name, size=spec.array.size,
                     max_running=spec.array.max_running, created_at=now)
    session.add(array)
    per_task = spec.array_args or [[] for _ in spec.array.indices]
    tasks = [_task(spec, user, array, index, spec.args + extra, waiting_on, now)
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
        "rerun_of": array.rerun_of,
        "links": {
            "self": url_for("v1.arrays.get_array", array_id=array.id),
            "jobs": url_for("v1.api.list_jobs", array=array.id),
            "cancel": url_for("v1.arrays.cancel_array", array_id=array.id),
            "rerun": url_for("v1.arrays.rerun_array", array_id=array.id),
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


@bp.post("/arrays/<array_id>/rerun")
@require("user", "admin")
def rerun_array(array_id: str):
    """A new array of this one's tasks that ended in one of `states` (by default failed,
    timed out or lost): each with its index, arguments, limits and environment, the
    same inputs, after the same jobs. The array and its tasks' records stay as they are."""
    state = app_state()
    states = _rerun_states(json_body() if request.content_length else {})
    array = visible_array(array_id)
    again = g.db.scalars(select(Job).where(Job.array_id == array.id, Job.state.in_(states))
                         .order_by(Job.array_index)).all()
    if not again:
        raise conflict(f"no task of array {array.id} is {' or '.join(states)}")
    owner = array.owner
    links = _same_parents(owner, array)
    quotas.check_submit(g.db, owner, len(again), state.settings)
    rerun_id = new_job_id()
    try:
        state.files.share_inputs(array.id, rerun_id)
    except FileNotFoundError:
        raise conflict(f"the inputs of array {array.id} are gone") from None
    made = [rerun_id]
    try:
        now = utcnow()
        rerun = JobArray(id=rerun_id, owner_id=owner.id, name=array.name, size=len(again),
                         max_running=array.max_running, created_at=now, rerun_of=array.id,
                         first_size=array.first_size or array.size)
        g.db.add(rerun)
        tasks = [_task(task, owner, rerun, task.array_index, list(task.args),
                       after.unmet(links), now) for task in again]
        g.db.add_all(tasks)
        made += [t.id for t in tasks]
        state.files.add_tasks(t.id for t in tasks)
        after.record(g.db, rerun_id, links)
        state.backend.enqueued(g.db, tasks[0])
        g.db.commit()
    except BaseException:
        g.db.rollback()
        for made_id in made:
            state.files.delete(made_id)
        raise
    body = {"array": summary(g.db, rerun), "jobs": [t.id for t in tasks]}
    return jsonify(body), 201, {"Location": body["array"]["links"]["self"]}


def _rerun_states(body: dict) -> list[str]:
    states = body.get("states", list(RERUN_STATES))
    finished = sorted(s.value for s in FINISHED)
    if (not isinstance(states, list) or not states
            or not all(isinstance(s, str) and s in finished for s in states)):
        raise bad_request(f"'states' must be a list of finished states ({', '.join(finished)})")
    return sorted(set(states))


def _same_parents(owner: User, array: JobArray) -> list[after.Link]:
    """The jobs the array runs after, locked as a submit locks them: a rerun waits for
    them as the array did, and is refused if one can no longer let it start."""
    deps = g.db.scalars(select(Dependency).where(Dependency.waiter == array.id)).all()
    return after.resolve(g.db, owner, [(d.condition, d.parent_id) for d in deps],
                         [d.parent_id for d in deps if d.inputs])


def array_filter(value: str):
    """The `array` filter of `GET /jobs`: the tasks of that (visible) array."""
    if not value:
        raise bad_request("'array' must be an array id")
    return Job.array_id == visible_array(value).id
