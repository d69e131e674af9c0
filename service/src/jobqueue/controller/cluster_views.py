"""What any user may see of the whole cluster, as Slurm's squeue, sinfo and sreport
show it: every unfinished job (others' without their names), every worker with its
CPUs in use and environments, and CPU hours used per user over a period."""

from __future__ import annotations

import datetime as dt

from flask import Blueprint, g, jsonify, request
from sqlalchemy import case, func, select

from jobqueue.controller import workers
from jobqueue.controller.auth import current_user, require
from jobqueue.controller.errors import bad_request
from jobqueue.controller.views import app_state
from jobqueue.models import Job, User, to_the_second, utcnow
from jobqueue.states import JobState

bp = Blueprint("cluster_views", __name__)

QUEUE_LIMIT = 5000  # jobs one answer lists (the oldest first); `truncated` says so
MAX_USAGE_DAYS = 3660


@bp.get("/queue")
@require("user", "admin")
def queue():
    """Every queued and running job, oldest first: its id, owner, state, CPUs, worker and
    times; the name only of the caller's own (an admin's: all)."""
    user = current_user()
    rows = g.db.execute(
        select(Job, User.name).join(User, User.id == Job.owner_id)
        .where(Job.state.in_([JobState.QUEUED.value, JobState.RUNNING.value]))
        .order_by(Job.queued_at, Job.id).limit(QUEUE_LIMIT + 1)).all()
    jobs = [{"id": job.id, "owner": owner,
             "name": job.name if user.role == "admin" or job.owner_id == user.id else None,
             "state": job.state, "cpus": job.cpus, "memory": job.memory,
             "environment": job.environment, "worker": job.worker,
             "array": job.array_id, "waiting": job.waiting_on > 0,
             "queued_at": to_the_second(job.queued_at),
             "started_at": to_the_second(job.started_at)}
            for job, owner in rows[:QUEUE_LIMIT]]
    return jsonify(jobs=jobs, truncated=len(rows) > QUEUE_LIMIT)


@bp.get("/cluster/workers")
@require("user", "admin")
def cluster_workers():
    """Each worker as `GET /workers` shows admins, with its CPUs in use and a state:
    drained, down (no claim within the seen window), allocated (no CPU free), mixed
    or idle."""
    settings = app_state().settings
    seen_after = utcnow() - dt.timedelta(seconds=settings.worker_seen_window_seconds)
    in_use = dict(g.db.execute(
        select(Job.worker, func.sum(Job.cpus)).where(Job.state == JobState.RUNNING.value)
        .group_by(Job.worker)).all())
    shown = []
    for worker in workers.overview(g.db, seen_after=seen_after):
        used = int(in_use.get(worker["worker"]) or 0)
        if worker["drained"]:
            state = "drained"
        elif worker.pop("down"):
            state = "down"
        else:
            state = "allocated" if used >= worker["cpus"] else "mixed" if used else "idle"
        shown.append(worker | {"cpus_used": used, "state": state})
    return jsonify(workers=shown)


@bp.get("/usage")
@require("user", "admin")
def usage():
    """Per user, the jobs that finished within the last `days` (default 30): how many,
    how they ended, CPU hours used (their accounting), CPU hours held (CPUs x wall
    time) and the highest peak memory. A user sees their own line; an admin every
    user's."""
    text = request.args.get("days", "30")
    if not (text.isascii() and text.isdigit() and len(text) <= 4) or \
            not 1 <= int(text) <= MAX_USAGE_DAYS:
        raise bad_request(f"'days' must be a whole number from 1 to {MAX_USAGE_DAYS}")
    since = utcnow() - dt.timedelta(days=int(text))
    user = current_user()

    def count(state: JobState):
        return func.sum(case((Job.state == state.value, 1), else_=0))

    query = (select(User.name, func.count(Job.id), count(JobState.SUCCEEDED),
                    count(JobState.FAILED), count(JobState.TIMED_OUT),
                    count(JobState.CANCELLED), func.sum(Job.cpu_seconds),
                    func.sum(Job.cpus * Job.wall_seconds), func.max(Job.peak_memory))
             .join(User, User.id == Job.owner_id)
             .where(Job.finished_at >= since).group_by(User.name).order_by(User.name))
    if user.role != "admin":
        query = query.where(Job.owner_id == user.id)
    users = [{"user": name, "jobs": jobs, "succeeded": ok, "failed": failed,
              "timed_out": timed_out, "cancelled": cancelled,
              "cpu_hours": round((cpu or 0) / 3600, 3),
              "cpu_hours_held": round((held or 0) / 3600, 3), "peak_memory": peak}
             for name, jobs, ok, failed, timed_out, cancelled, cpu, held, peak
             in g.db.execute(query)]
    return jsonify(since=to_the_second(since), users=users)
