"""The worker side of the HTTP API, served when the queue backend is pulled from:
claim (long poll), heartbeat, input download, result upload and hand-back."""

from __future__ import annotations

import time

from flask import Blueprint, g, jsonify, request, send_file

from jobqueue import faults
from jobqueue.archive import ArchiveTooLarge, UnsafeArchive
from jobqueue.controller import accounting, after, jsonin, workers
from jobqueue.controller.auth import current_user, require
from jobqueue.controller.errors import ApiError, bad_request, not_found
from jobqueue.controller.storage import LOGS, LogGap
from jobqueue.models import Job
from jobqueue.controller.wait_tickets import TICKET_HEADER, WAIT_SECONDS_HEADER, Ticket, sign
from jobqueue.controller.views import app_state, find_job, job_json, json_body
from jobqueue.queue import LeaseLost, PullQueue, WorkerCapacity
from jobqueue.queue.batch import BatchQueue
from jobqueue.states import FINISHED, LIMITS, REPORTABLE, JobState

bp = Blueprint("worker_api", __name__)
# Bounds that keep a worker's numbers inside what every database stores.
MAX_WORKER_CPUS = 1 << 20
MAX_WORKER_MEMORY = 1 << 30  # MiB: what a job may ask for, and an INTEGER column holds
MAX_ENVIRONMENTS = 100  # software environments one worker offers
EXIT_CODE_BOUND = 1 << 31
MAX_LOG_APPEND = 4 << 20  # bytes of one append of a running job's log
DRAINED_PAUSE_SECONDS = 5.0  # a drained worker's claim waits this, then gets nothing


def _lease_lost(exc: LeaseLost) -> ApiError:
    return ApiError(409, "lease_lost", str(exc))


def _lease_from(body: dict) -> str:
    lease = body.get("lease")
    if not isinstance(lease, str) or not lease:
        raise bad_request("field 'lease' (from the claim) is required")
    return lease


@bp.post("/worker/claim")
@require("worker")
def claim():
    body = json_body()
    state = app_state()
    if not isinstance(state.backend, PullQueue):
        raise ApiError(409, "no_claims", f"this controller's queue is {state.backend.name}: "
                       "its jobs start through the scheduler, not by claims")
    worker = _worker_name(body)
    cpus = body.get("cpus", 1)
    wait = body.get("wait", state.settings.claim_wait_seconds)
    claim_id = body.get("claim_id")
    _check_cpus(cpus, "'cpus' (free CPUs)")
    if isinstance(wait, bool) or not isinstance(wait, (int, float)) or wait < 0:
        raise bad_request("field 'wait' must be a number of seconds >= 0")
    if claim_id is not None and (not isinstance(claim_id, str) or not 0 < len(claim_id) <= 64):
        raise bad_request("field 'claim_id' must be a string of 1 to 64 characters")
    capacity = _capacity(body)
    drained = workers.is_drained(g.db, worker)
    g.db.close()  # hold no connection while waiting
    if capacity is not None:
        state.workers.record(worker, capacity)
    room_key = state.waiting_room.key() if state.waiting_room is not None else None
    if room_key is not None:  # one look at the queue: the worker waits in the room
        looked_at = time.time()  # before the look: a job committed after it wakes the wait
        claimed = None if drained else state.backend.claim(worker, cpus, 0, claim_id, capacity)
        if claimed is None:
            return _wait_ticket(room_key, worker, cpus, capacity, drained, looked_at)
    elif drained:  # no new job: the worker asks again after a while, as after an empty wait
        time.sleep(min(wait, state.settings.claim_wait_seconds, DRAINED_PAUSE_SECONDS))
        return "", 204
    else:  # no waiting room (or it is down): the claim long-polls in this thread
        claimed = state.backend.claim(worker, cpus,
                                      min(wait, state.settings.claim_wait_seconds),
                                      claim_id, capacity)
        if claimed is None:
            return "", 204
    faults.point("claim:after-commit")
    return _claimed(claimed)


def _wait_ticket(room_key: bytes, worker: str, cpus: int, capacity, drained: bool,
                 looked_at: float):
    """A 204 with the ticket the worker waits in the waiting room with: what it had free
    when its claim looked."""
    state = app_state()
    free_cpus, free_memory = (0, None) if drained else state.backend.free_on(worker, cpus,
                                                                             capacity)
    ticket = Ticket(worker, looked_at, free_cpus, free_memory,
                    tuple(capacity.environments) if capacity else ())
    return "", 204, {TICKET_HEADER: sign(room_key, ticket),
                     WAIT_SECONDS_HEADER: str(state.settings.waiting_room_wait_seconds)}


def _claimed(claimed):
    job = g.db.get(Job, claimed.job_id)
    return jsonify(job_json(job) | {"lease": claimed.lease,
                                    "lease_seconds": app_state().settings.lease_seconds})


def _worker_name(body: dict) -> str:
    worker = body.get("worker", current_user().name)
    if not isinstance(worker, str) or not 0 < len(worker) <= 128:
        raise bad_request("field 'worker' must be a name of 1 to 128 characters")
    # A worker is who its token says: a token cannot claim in another worker's name.
    if worker != current_user().name:
        raise ApiError(403, "forbidden", f"this token belongs to worker "
                       f"{current_user().name!r}, not {worker!r}")
    return worker


@bp.post("/worker/jobs/<job_id>/start")
@require("worker")
def start(job_id: str):
    """A batch scheduler started this job's attempt on the caller: its lease."""
    body = json_body()
    backend = app_state().backend
    if not isinstance(backend, BatchQueue):
        raise ApiError(409, "not_scheduled", f"this controller's queue is {backend.name}: "
                       "jobs are claimed, not started by a scheduler")
    worker = _worker_name(body)
    external_id = body.get("external_id")
    if not isinstance(external_id, str) or not 0 < len(external_id) <= 64:
        raise bad_request("field 'external_id' (the scheduler's job id) must be a string of "
                          "1 to 64 characters")
    g.db.close()
    try:
        claimed = backend.start(job_id, worker, external_id)
    except LeaseLost as exc:
        raise ApiError(409, "not_startable", str(exc)) from None
    return _claimed(claimed)


def _capacity(body: dict) -> WorkerCapacity | None:
    """The optional `capacity` {"cpus", "jobs", "memory", "quarantined", "environments"}:
    all the worker has, running jobs included, the slots it set aside, the software
    environments it offers."""
    capacity = body.get("capacity")
    if capacity is None:
        return None
    if not isinstance(capacity, dict) or \
            set(capacity) - {"cpus", "jobs", "memory", "quarantined", "environments"}:
        raise bad_request("field 'capacity' must be an object with 'cpus' and, optionally, "
                          "'jobs', 'memory', 'quarantined' and 'environments'")
    environments = capacity.get("environments", [])
    if not isinstance(environments, list) or len(environments) > MAX_ENVIRONMENTS or \
            not all(isinstance(e, str) and 0 < len(e) <= 64 for e in environments):
        raise bad_request(f"field 'capacity.environments' must be a list of at most "
                          f"{MAX_ENVIRONMENTS} names of 1 to 64 characters")
    cpus, jobs, memory = capacity.get("cpus"), capacity.get("jobs"), capacity.get("memory")
    quarantined = capacity.get("quarantined", 0)
    _check_cpus(cpus, "'capacity.cpus'")
    if jobs is not None:
        _check_cpus(jobs, "'capacity.jobs'")
    if quarantined != 0:
        _check_cpus(quarantined, "'capacity.quarantined'")
    if memory is not None and (isinstance(memory, bool) or not isinstance(memory, int)
                               or not 1 <= memory <= MAX_WORKER_MEMORY):
        raise bad_request("field 'capacity.memory' must be an integer (MiB) from 1 to "
                          f"{MAX_WORKER_MEMORY}")
    return WorkerCapacity(cpus, jobs, memory, quarantined, tuple(sorted(set(environments))))


def _check_cpus(value, field: str) -> None:
    """A count of CPUs (or jobs) a worker sends: a whole number a database can store."""
    if isinstance(value, bool) or not isinstance(value, int) or \
            not 1 <= value <= MAX_WORKER_CPUS:
        raise bad_request(f"field {field} must be an integer from 1 to {MAX_WORKER_CPUS}")


@bp.post("/worker/jobs/<job_id>/heartbeat")
@require("worker")
def heartbeat(job_id: str):
    lease = _lease_from(json_body())
    try:
        expires, cancel = app_state().backend.heartbeat(job_id, lease, current_user().name)
    except LeaseLost as exc:
        raise _lease_lost(exc) from None
    return jsonify(lease_expires_at=expires.isoformat(), cancel=cancel)


@bp.get("/worker/jobs/<job_id>/input")
@require("worker")
def get_input(job_id: str):
    job = _held(job_id, request.args.get("lease"))
    results_of = after.input_sources(g.db, job)
    if results_of:
        _fail_if_inputs_too_large(job, results_of)
    g.db.commit()
    return send_file(app_state().files.input_archive(job_id, job.array_id, results_of),
                     mimetype="application/gzip", as_attachment=True,
                     download_name="input.tar.gz")


def _fail_if_inputs_too_large(job: Job, results_of: list[tuple[str, str]]) -> None:
    """The results `inputs_from` adds are known only once its jobs have ended: a job
    whose inputs then hold more than an upload may fails, saying so (no attempt could
    do better), and its worker is told the job is no longer its own."""
    state = app_state()
    size, count = state.files.input_size(job.id, job.array_id, results_of)
    limits = state.settings
    if size <= limits.max_upload_bytes and count <= limits.max_files:
        return
    state.backend.finish(g.db, job, job.lease, JobState.FAILED.value, None,
                         f"its inputs with the results of inputs_from are {size} bytes in "
                         f"{count} files, more than the {limits.max_upload_bytes} bytes and "
                         f"{limits.max_files} files a job's inputs may hold")
    g.db.commit()
    raise _lease_lost(LeaseLost("the job failed: its inputs are too large"))


def _held(job_id: str, lease: str | None) -> Job:
    """The job, if this worker holds its running attempt with `lease`; 409 otherwise."""
    job = find_job(job_id)
    if job.job_state is not JobState.RUNNING or not lease or job.lease != lease \
            or job.worker != current_user().name:
        raise _lease_lost(LeaseLost("this worker no longer holds the job"))
    return job


@bp.post("/worker/jobs/<job_id>/log/<name>")
@require("worker")
def append_log(job_id: str, name: str):
    """Bytes of a running job's stdout or stderr from `offset` on, as the job wrote them."""
    if name not in LOGS:
        raise not_found("log (there are stdout and stderr)")
    try:
        offset = int(request.args.get("offset", ""))
    except ValueError:
        raise bad_request("'offset' (where the bytes start in the log) must be a whole "
                          "number") from None
    if not 0 <= offset < 1 << 62:
        raise bad_request("'offset' must be 0 or more")
    if (request.content_length or 0) > MAX_LOG_APPEND:
        raise ApiError(413, "too_large", f"an append may hold at most {MAX_LOG_APPEND} bytes")
    job = _held(job_id, request.args.get("lease"))
    lease, budget = job.lease, job.output_limit << 20
    g.db.commit()  # hold no database connection while writing
    data = _read_capped(request.stream, MAX_LOG_APPEND)
    try:
        stored = app_state().files.append_live_log(job_id, lease, name, offset, data, budget)
    except LogGap as exc:
        raise bad_request(str(exc)) from None
    return jsonify(size=stored.size, cut=stored.cut)


def _read_capped(stream, cap: int) -> bytes:
    """The request body, or 413 once it is over `cap` bytes (with or without a length)."""
    data = bytearray()
    while chunk := stream.read(min(1 << 16, cap + 1 - len(data))):
        data += chunk
        if len(data) > cap:
            raise ApiError(413, "too_large", f"an append may hold at most {cap} bytes")
    return bytes(data)


def _parse_status() -> dict:
    status = jsonin.loads(request.form.get("status", ""), "part 'status' (the attempt's status)")
    if not isinstance(status, dict):
        raise bad_request("part 'status' must be a JSON object")
    _lease_from(status)
    if status.get("state") not in {s.value for s in REPORTABLE}:
        raise bad_request("status 'state' must be one of: "
                          + ", ".join(sorted(s.value for s in REPORTABLE)))
    code = status.get("exit_code")
    if code is not None and (isinstance(code, bool) or not isinstance(code, int)
                             or not -EXIT_CODE_BOUND <= code < EXIT_CODE_BOUND):
        raise bad_request("status 'exit_code' must be a 32-bit integer or null")
    message = status.get("message", "")
    if not isinstance(message, str):
        raise bad_request("status 'message' must be a string")
    if status.get("limit") not in (None, *LIMITS):
        raise bad_request("status 'limit' must be null or one of: " + ", ".join(LIMITS))
    status["message"] = message[:10000]
    status["accounting"] = accounting.parse(status.get("accounting"))
    return status


@bp.post("/worker/jobs/<job_id>/result")
@require("worker")
def upload_result(job_id: str):
    status = _parse_status()
    lease = status["lease"]
    state = app_state()
    job = find_job(job_id)
    if job.worker != current_user().name:
        raise _lease_lost(LeaseLost("this worker does not hold the job"))
    if job.lease == lease and job.job_state.finished and state.files.has_result(job_id):
        return _duplicate(job)
    if job.lease != lease or job.job_state not in (JobState.RUNNING, *FINISHED):
        raise _lease_lost(LeaseLost("this worker no longer holds the job"))
    g.db.commit()  # release the database while the upload is unpacked

    files = request.files
    try:
        ready = state.files.stage_result(
            job_id, lease, files.get("results") and files["results"].stream,
            files.get("stdout") and files["stdout"].stream,
            files.get("stderr") and files["stderr"].stream, job.output_limit << 20)
    except ArchiveTooLarge as exc:
        raise ApiError(413, "too_large", f"results over the job's output limit: {exc}") from None
    except UnsafeArchive as exc:
        raise bad_request(f"results archive refused: {exc}") from None
    job = g.db.get(Job, job_id, with_for_update=True, populate_existing=True)
    if job is not None and job.lease == lease and job.job_state.finished:
        # A retry: this attempt's outcome is stored. Its files may not be, if a crash
        # cut the first upload after the commit: then this upload's files are used.
        g.db.commit()
        state.files.place_result(job_id, lease, ready)
        return _duplicate(job)
    try:
        state.backend.finish(g.db, job, lease, status["state"], status.get("exit_code"),
                             status["message"], status.get("limit"))
    except LeaseLost as exc:
        state.files.discard(ready)
        raise _lease_lost(exc) from None
    accounting.record(job, status["accounting"])
    faults.point("upload:before-commit")
    # If the commit fails, whether it happened is unknown: the ready upload stays for
    # the worker's retry or for start-up to place or drop.
    g.db.commit()
    faults.point("upload:after-commit")
    state.files.place_result(job_id, lease, ready)
    faults.point("upload:placed")
    return jsonify(job_json(job) | {"duplicate": False})


def _duplicate(job: Job):
    return jsonify(job_json(job) | {"duplicate": True})


@bp.post("/worker/jobs/<job_id>/release")
@require("worker")
def release(job_id: str):
    body = json_body()
    lease = _lease_from(body)
    error = body.get("error")
    if error is not None and (not isinstance(error, str) or not 0 < len(error) <= 1000):
        raise bad_request("field 'error' must be a message of 1 to 1000 characters")
    try:
        app_state().backend.release(job_id, lease, error, current_user().name)
    except LeaseLost as exc:
        raise _lease_lost(exc) from None
    return jsonify(released=True)
