"""The user side of the HTTP API: submit, list, inspect, fetch, cancel and delete jobs
(a submit with `array` makes a job array: see `arrays`)."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from collections.abc import Callable

from flask import Blueprint, Response, g, jsonify, request, send_file
from sqlalchemy import and_, delete, func, or_, select
from sqlalchemy.exc import IntegrityError

from jobqueue import faults
from jobqueue.archive import ArchiveTooLarge, UnsafeArchive
from jobqueue.controller import after, arrays, idempotency, quotas, workers
from jobqueue.controller.auth import current_user, require
from jobqueue.controller.errors import ApiError, bad_request, conflict, not_found
from jobqueue.controller.jobspec import parse_spec
from jobqueue.controller.storage import LOGS
from jobqueue.models import Dependency, Job, new_job_id, utcnow
from jobqueue.controller.views import app_state, job_json, json_body, visible_job
from jobqueue.states import IllegalTransition, JobState

bp = Blueprint("api", __name__)
PAGE_DEFAULT, PAGE_MAX = 50, 500
NAME_FILTER_MAX = 200  # as long as a job's name may be


@bp.post("/jobs")
@require("user", "admin")
def submit_job():
    state = app_state()
    user = current_user()
    key = idempotency.key_from(request.headers)
    spec_text = request.form.get("spec")
    spec = parse_spec(spec_text, state.settings)
    try:
        if state.settings.oversized_jobs == "refuse" and (
                why := workers.too_big(spec.cpus, spec.memory, _workers_seen())):
            raise ApiError(400, "too_big", why + "; no worker can run it")
        quotas.check_submit(g.db, user, spec.array.size if spec.array else 1, state.settings)
    finally:
        # End the reads (on SQLite every transaction holds the write lock). A rollback,
        # not a commit: after a lost connection a commit raises anew and hides the error.
        g.db.rollback()
    uploads = request.files.getlist("files")
    archives = request.files.getlist("archive")
    for upload in uploads:
        if not upload.filename:
            raise bad_request("every 'files' part needs a filename (its path in the job)")
    window = dt.timedelta(seconds=state.settings.idempotency_window_seconds)
    digest = ""
    if key is not None:
        digest = idempotency.fingerprint(spec_text, [(u.filename, u.stream) for u in uploads],
                                         [a.stream for a in archives])
        if (earlier := idempotency.replay(g.db, user, key, digest, window)) is not None:
            return _created(earlier, replayed=True)
        g.db.commit()  # end the read: on SQLite every transaction holds the write lock
    # The job's id, or the array's: one copy of the input serves all its tasks.
    input_id = new_job_id()
    try:
        names = state.files.save_inputs(
            input_id, [(u.filename, u.stream) for u in uploads], [a.stream for a in archives],
            state.settings.max_upload_bytes)
    except ArchiveTooLarge as exc:
        raise ApiError(413, "too_large", str(exc)) from None
    except (UnsafeArchive, ValueError) as exc:
        raise bad_request(str(exc)) from None
    made = [input_id]  # directories to remove if the job is not stored
    try:
        if spec.entry not in names:
            raise bad_request(f"the entry script {spec.entry!r} is not among the uploaded files")
        now = utcnow()
        parents = after.resolve(g.db, user, spec.after, spec.inputs_from)
        if spec.array is None:
            job = Job(id=input_id, owner=user, name=spec.name, entry=spec.entry,
                      args=spec.args, env=spec.env, environment=spec.environment,
                      cpus=spec.cpus, walltime=spec.walltime,
                      memory=spec.memory, output_limit=spec.output_limit,
                      state=JobState.QUEUED.value, attempts=0, cancel_requested=False,
                      message="", created_at=now, queued_at=now,
                      waiting_on=after.unmet(parents))
            g.db.add(job)
        else:
            _array, tasks = arrays.create(g.db, user, spec, input_id, after.unmet(parents), now)
            made += [t.id for t in tasks]
            state.files.add_tasks(t.id for t in tasks)
            job = tasks[0]  # stands for the array with the idempotency key
        after.record(g.db, input_id, parents)
        if key is not None:
            idempotency.remember(g.db, user, key, digest, job, window)
        state.backend.enqueued(g.db, job)
        g.db.commit()
    except IntegrityError:
        # Another request with the same key got in first: answer with its job.
        g.db.rollback()
        for made_id in made:
            state.files.delete(made_id)
        if key is None or (earlier := idempotency.replay(g.db, user, key, digest,
                                                         window)) is None:
            raise
        return _created(earlier, replayed=True)
    except BaseException:
        for made_id in made:
            state.files.delete(made_id)
        raise
    faults.point("submit:after-commit")
    return _created(job, replayed=False)


def _workers_seen():
    seen_within = dt.timedelta(seconds=app_state().settings.worker_seen_window_seconds)
    return workers.seen(g.db, seen_within)


def _with_pending(jobs: list[Job]) -> list[dict]:
    """The jobs' JSON; queued ones also say their place in the queue and why they wait."""
    seen = _workers_seen() if any(j.job_state is JobState.QUEUED for j in jobs) else []
    parents = after.parents_of(g.db, jobs)
    return [job_json(j, parents[j.id]) | (workers.pending(g.db, j, seen)
                                          if j.job_state is JobState.QUEUED else {})
            for j in jobs]


def _created(job: Job, replayed: bool):
    """201 with the job, or for a task of an array, with the array and its tasks' ids."""
    if job.array_id is not None:
        body = {"array": arrays.summary(g.db, job.array),
                "jobs": arrays.task_ids(g.db, job.array)}
        headers = {"Location": body["array"]["links"]["self"]}
    else:
        body = job_json(job)
        headers = {"Location": body["links"]["self"]}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return jsonify(body), 201, headers


def _decode_cursor(cursor: str) -> tuple[dt.datetime, str]:
    try:
        text, _, job_id = base64.urlsafe_b64decode(cursor.encode()).decode().partition("|")
        stamp = dt.datetime.fromisoformat(text)
        if stamp.tzinfo is None:
            raise ValueError("no time zone")
        # In UTC, as the database holds it (a stamp near year 1 or 9999 may not fit).
        return stamp.astimezone(dt.UTC), job_id
    except (ValueError, OverflowError, binascii.Error, UnicodeDecodeError):
        raise bad_request("invalid cursor (pass on the 'next' of an earlier page)") from None


def _encode_cursor(job: Job) -> str:
    return base64.urlsafe_b64encode(f"{job.created_at.isoformat()}|{job.id}".encode()).decode()


@bp.get("/jobs")
@require("user", "admin")
def list_jobs():
    user = current_user()
    query = select(Job)
    if user.role != "admin" or request.args.get("all") not in ("1", "true"):
        query = query.where(Job.owner_id == user.id)
    if states := request.args.getlist("state"):
        known = {s.value for s in JobState}
        if unknown := [s for s in states if s not in known]:
            raise bad_request(f"unknown state {unknown[0]!r} (states: {', '.join(sorted(known))})")
        query = query.where(Job.state.in_(states))
    if name := request.args.get("name"):
        if len(name) > NAME_FILTER_MAX:
            raise bad_request(f"'name' may be at most {NAME_FILTER_MAX} characters")
        query = query.where(Job.name.icontains(name, autoescape=True))
    if (array_id := request.args.get("array")) is not None:
        query = query.where(arrays.array_filter(array_id))
    try:
        limit = int(request.args.get("limit", PAGE_DEFAULT))
    except ValueError:
        raise bad_request("'limit' must be an integer") from None
    if not 1 <= limit <= PAGE_MAX:
        raise bad_request(f"'limit' must be between 1 and {PAGE_MAX}")
    if cursor := request.args.get("cursor"):
        stamp, last_id = _decode_cursor(cursor)
        query = query.where(or_(Job.created_at < stamp,
                                and_(Job.created_at == stamp, Job.id < last_id)))
    jobs = g.db.scalars(query.order_by(Job.created_at.desc(), Job.id.desc())
                        .limit(limit + 1)).all()
    more = len(jobs) > limit
    jobs = jobs[:limit]
    return jsonify(jobs=_with_pending(jobs), next=_encode_cursor(jobs[-1]) if more else None)


@bp.get("/jobs/<job_id>")
@require("user", "admin")
def get_job(job_id: str):
    return jsonify(_with_pending([visible_job(job_id)])[0])


def _with_result(job_id: str) -> Job:
    """The visible job, with its result in place if it has one: a crash between the
    commit and the last rename of an upload may have left it waiting (see storage)."""
    job = visible_job(job_id)
    files = app_state().files
    if job.job_state.finished and job.lease and not files.has_result(job.id):
        files.place_result(job.id, job.lease)
    return job


@bp.get("/jobs/<job_id>/files")
@require("user", "admin")
def list_files(job_id: str):
    job = _with_result(job_id)
    return jsonify(files=app_state().files.list_files(job.id, job.array_id))


@bp.get("/jobs/<job_id>/files/<path:name>")
@require("user", "admin")
def get_file(job_id: str, name: str):
    job = _with_result(job_id)
    try:
        path = app_state().files.find_file(job.id, name, job.array_id)
    except UnsafeArchive as exc:
        raise bad_request(str(exc)) from None
    if path is None:
        raise not_found("file")
    # A job may name its files as it likes; a header may not hold control characters.
    download_name = "".join("_" if ord(c) < 32 or ord(c) == 127 else c for c in path.name)
    return send_file(path, mimetype="application/octet-stream", as_attachment=True,
                     download_name=download_name)


@bp.get("/jobs/<job_id>/log")
@require("user", "admin")
def get_log(job_id: str):
    job = _with_result(job_id)
    return jsonify(app_state().files.read_log(job.id, _running_lease(job)))


def _running_lease(job: Job) -> str | None:
    """The lease of the attempt running now, whose streamed logs are shown until the
    result's replace them."""
    return job.lease if job.job_state is JobState.RUNNING else None


@bp.get("/jobs/<job_id>/log/<name>")
@require("user", "admin")
def get_log_stream(job_id: str, name: str):
    """The whole stdout or stderr as text, from byte `offset` on (default 0); while the
    job runs, what its worker has streamed of it so far."""
    job = _with_result(job_id)
    try:
        offset = int(request.args.get("offset", "0"))
    except ValueError:
        raise bad_request("'offset' must be a whole number of bytes") from None
    if offset < 0:
        raise bad_request("'offset' must be 0 or more")
    if name not in LOGS:
        raise not_found("log (there are stdout and stderr)")
    files = app_state().files
    lease = _running_lease(job)
    path, live = files.readable_log(job.id, lease, name)
    cut = live and files.live_log(job.id, lease, name).cut
    size = path.stat().st_size if path is not None else 0

    def chunks():
        if path is None or offset >= size:
            return  # nothing there; and a seek past the file system's limit is EINVAL
        with open(path, "rb") as fh:
            fh.seek(offset)
            left = size - offset  # no more than X-Log-Size says, while a live log grows
            while left > 0 and (chunk := fh.read(min(left, 1 << 16))):
                left -= len(chunk)
                yield chunk

    # X-Log-Size: the whole log's length, where a follower asks from next time.
    # X-Log-Live: the running attempt's log so far; X-Log-Cut: it reached the output
    # limit and grows no more (the result's log, once in, is cut there too).
    headers = {"Content-Type": "text/plain; charset=utf-8", "X-Log-Size": str(size),
               "X-Log-Live": "true" if live else "false"}
    if cut:
        headers["X-Log-Cut"] = "true"
    return Response(chunks(), 200, headers)


@bp.get("/jobs/<job_id>/results")
@require("user", "admin")
def get_results(job_id: str):
    inputs = request.args.get("inputs", "1")
    if inputs not in ("0", "1", "false", "true"):
        raise bad_request("'inputs' must be 1 (with the job's input files, the default) or 0")
    job = _with_result(job_id)
    archive = app_state().files.results_archive(job.id, with_inputs=inputs in ("1", "true"),
                                                input_id=job.array_id)
    return send_file(archive, mimetype="application/gzip", as_attachment=True,
                     download_name=f"{job.id}-results.tar.gz")


@bp.post("/jobs/<job_id>/cancel")
@require("user", "admin")
def cancel_job(job_id: str):
    def cancel(job: Job) -> None:
        try:
            app_state().backend.cancel(g.db, job)
        except IllegalTransition:
            raise conflict(f"the job is already {job.state}") from None

    return _change(job_id, cancel)


@bp.post("/jobs/<job_id>/hold")
@require("user", "admin")
def hold_job(job_id: str):
    """Keep a queued job from starting (as Slurm's scontrol hold) until it is released."""
    def hold(job: Job) -> None:
        if job.job_state is not JobState.QUEUED:
            raise conflict(f"the job is {job.state}: only a queued job can be held")
        if job.external_id is not None:
            raise conflict("the job is already in the scheduler's queue: only a job not yet "
                           "handed over can be held")
        job.held = True

    return _change(job_id, hold)


@bp.post("/jobs/<job_id>/release")
@require("user", "admin")
def release_job(job_id: str):
    def release(job: Job) -> None:
        if job.held:
            job.held = False
            app_state().backend.enqueued(g.db, job)  # a waiting claim may take it now

    return _change(job_id, release)


@bp.post("/jobs/<job_id>/requeue")
@require("user", "admin")
def requeue_job(job_id: str):
    """Put a running job back in the queue (as Slurm's scontrol requeue; with `{"hold":
    true}`, requeuehold): its worker stops the attempt, which counts as no failure."""
    hold = (json_body() if request.content_length else {}).get("hold", False)
    if not isinstance(hold, bool):
        raise bad_request("'hold' must be true or false")

    def requeue(job: Job) -> None:
        if job.job_state is not JobState.RUNNING:
            raise conflict(f"the job is {job.state}: only a running job can be requeued")
        if job.cancel_requested:
            raise conflict("the job is being cancelled")
        app_state().backend.requeue(g.db, job, f"requeued by {current_user().name}"
                                    + (" and held" if hold else ""))
        job.held = hold

    return _change(job_id, requeue)


def _change(job_id: str, change: Callable[[Job], None]):
    """`change` the caller's job (locked), commit, answer with the job."""
    job = visible_job(job_id, for_update=True)
    change(job)
    g.db.commit()
    return jsonify(job_json(job))


@bp.delete("/jobs/<job_id>")
@require("user", "admin")
def delete_job(job_id: str):
    job = visible_job(job_id, for_update=True)
    if not job.job_state.finished:
        raise conflict(f"the job is {job.state}; cancel it and wait until it has finished")
    array = job.array
    g.db.delete(job)
    g.db.execute(delete(Dependency).where(Dependency.waiter == job.id))
    g.db.flush()
    # The last task of an array takes the array, and the input its tasks shared, with it.
    last = array is not None and not g.db.scalar(
        select(func.count()).select_from(Job).where(Job.array_id == array.id))
    if last:
        g.db.execute(delete(Dependency).where(Dependency.waiter == array.id))
        g.db.delete(array)
    g.db.commit()
    app_state().files.delete(job.id)
    if last:
        app_state().files.delete(array.id)
    return "", 204
