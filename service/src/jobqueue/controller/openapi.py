"""The OpenAPI 3.1 document of the whole API, served at /api/v1/openapi.json."""

from __future__ import annotations

from jobqueue import __version__
from jobqueue.states import FINISHED, LIMITS, JobState

JOB_ID = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}
ARRAY_ID = {"name": "array_id", "in": "path", "required": True, "schema": {"type": "string"}}
WORKER_NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
IDEMPOTENCY_KEY = {"name": "Idempotency-Key", "in": "header", "required": False,
                   "schema": {"type": "string", "minLength": 1, "maxLength": 255}}
LEASE_BODY = {"required": True, "content": {"application/json": {"schema": {
    "type": "object", "required": ["lease"], "properties": {"lease": {"type": "string"}}}}}}


def _error_ref(description: str) -> dict:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _op(summary: str, ok: dict, *errors: int, params=(), body=None, public=False) -> dict:
    texts = {400: "Bad input", 401: "No or bad token", 403: "Wrong role", 404: "No such job",
             409: "Not allowed in the job's state, or lease lost", 413: "Too large",
             429: "Past the user's queued-jobs or submission-rate limit; retry after the "
                  "Retry-After seconds",
             503: "The database is unavailable; retry after the Retry-After seconds"}
    op = {"summary": summary, "responses": dict(ok)}
    # Every route reads the database, if only to check the token.
    for code in (() if public else (401, 403)) + errors + (503,):
        op["responses"][str(code)] = _error_ref(texts[code])
    if params:
        op["parameters"] = list(params)
    if body:
        op["requestBody"] = body
    if public:
        op["security"] = []
    return op


def _json(description: str, ref: str | None = None, schema: dict | None = None) -> dict:
    schema = schema or {"$ref": f"#/components/schemas/{ref}"}
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _binary(description: str, mime: str = "application/octet-stream") -> dict:
    return {"description": description,
            "content": {mime: {"schema": {"type": "string", "format": "binary"}}}}


ROOT_PATHS = {
    "/healthz": {"get": {"summary": "Liveness", "security": [], "responses": {
        "200": {"description": "OK"}, "503": _error_ref("The database is unavailable")}}},
    "/metrics": {"get": {"summary": "Prometheus metrics (admin)", "responses": {
        "200": {"description": "Prometheus text format"}}}},
}


JOB_OK = {"200": _json("The job", "Job")}
LOG_HEADERS = {
    "X-Log-Size": {"schema": {"type": "integer"}, "description": "the log's length"},
    "X-Log-Live": {"schema": {"type": "string", "enum": ["true", "false"]},
                   "description": "true: the running attempt's log so far"},
    "X-Log-Cut": {"schema": {"type": "string", "enum": ["true"]},
                  "description": "the live log reached the output limit"},
}
ARRAY_OK = {"200": _json("The array", "Array")}


def document() -> dict:
    jid = (JOB_ID,)
    return {
        "openapi": "3.1.0",
        "info": {"title": "jobqueue", "version": __version__},
        "security": [{"bearer": []}],
        "paths": ROOT_PATHS | {"/api/v1" + path: item for path, item in {
            "/jobs": {
                "post": _op("Submit a job, or a job array with 'array' or 'array_args' (the "
                            "same Idempotency-Key and request: the same job or array)",
                            {"201": _json("Created, or created before with this key: the job, "
                                          "or for an array its summary and its tasks' ids",
                                          schema={"oneOf": [
                                              {"$ref": "#/components/schemas/Job"},
                                              {"$ref": "#/components/schemas/Submitted"}]})},
                            400, 404, 409, 413, 429, params=[IDEMPOTENCY_KEY], body={
                    "required": True, "content": {"multipart/form-data": {"schema": {
                        "type": "object", "required": ["spec"], "properties": {
                            "spec": {"$ref": "#/components/schemas/JobSpec"},
                            "files": {"type": "array",
                                      "items": {"type": "string", "format": "binary"}},
                            "archive": {"type": "string", "format": "binary"}}}}}}),
                "get": _op("List the caller's jobs, newest first", {"200": _json(
                    "A page of jobs", schema={"type": "object", "properties": {
                        "jobs": {"type": "array", "items": {"$ref": "#/components/schemas/Job"}},
                        "next": {"type": ["string", "null"]}}})}, 400, params=[
                    {"name": "state", "in": "query", "schema": {"type": "string"}},
                    {"name": "limit", "in": "query", "schema": {"type": "integer"}},
                    {"name": "cursor", "in": "query", "schema": {"type": "string"}},
                    {"name": "name", "in": "query", "description": "part of the job's name "
                     "(any case)", "schema": {"type": "string", "maxLength": 200}},
                    {"name": "array", "in": "query", "schema": {"type": "string"},
                     "description": "only the tasks of this job array"},
                    {"name": "all", "in": "query", "schema": {"type": "boolean"}}]),
            },
            "/jobs/{job_id}": {
                "get": _op("A job", JOB_OK, 404, params=jid),
                "delete": _op("Delete a finished job and its files",
                              {"204": {"description": "Deleted"}}, 404, 409, params=jid),
            },
            "/jobs/{job_id}/files": {"get": _op("The job's files", {"200": _json(
                "Files", schema={"type": "object", "properties": {"files": {"type": "array"}}})},
                404, params=jid)},
            "/jobs/{job_id}/files/{path}": {"get": _op(
                "One file, as an attachment", {"200": _binary("The file")}, 400, 404, params=(
                    JOB_ID, {"name": "path", "in": "path", "required": True,
                             "schema": {"type": "string"}}))},
            "/jobs/{job_id}/log": {"get": _op("The end of stdout and stderr", {"200": _json(
                "Log", schema={"type": "object", "properties": {
                    "stdout": {"type": "string"}, "stderr": {"type": "string"}}})},
                404, params=jid)},
            "/jobs/{job_id}/log/{name}": {"get": _op(
                "The whole stdout or stderr, from byte 'offset' on (X-Log-Size: its length); "
                "while the job runs, what its worker has streamed so far (X-Log-Live: true; "
                "X-Log-Cut: true once it reached the output limit and grows no more)",
                {"200": _binary("The log", "text/plain") | {"headers": LOG_HEADERS}},
                400, 404, params=(
                    JOB_ID, {"name": "name", "in": "path", "required": True,
                             "schema": {"enum": ["stdout", "stderr"]}},
                    {"name": "offset", "in": "query",
                     "schema": {"type": "integer", "minimum": 0}}))},
            "/jobs/{job_id}/results": {"get": _op(
                "The job directory after the run", {"200": _binary("tar.gz", "application/gzip")},
                404, params=jid)},
            "/jobs/{job_id}/cancel": {"post": _op("Cancel a job", JOB_OK, 404, 409, params=jid)},
            "/jobs/{job_id}/hold": {"post": _op(
                "Hold a queued job: it starts only once released", JOB_OK, 404, 409,
                params=jid)},
            "/jobs/{job_id}/requeue": {"post": _op(
                "Put a running job back in the queue, as scontrol requeue: its worker stops "
                "the attempt, which counts as no failure ('hold': true keeps it held)",
                JOB_OK, 400, 404, 409, params=jid, body={
                    "required": False, "content": {"application/json": {"schema": {
                        "type": "object", "properties": {"hold": {"type": "boolean"}}}}}})},
            "/jobs/{job_id}/release": {"post": _op(
                "Release a held job (a job not held is left as it is)", JOB_OK, 404,
                params=jid)},
            "/arrays/{array_id}": {"get": _op("A job array: its size and tasks per state",
                                              ARRAY_OK, 404, 409, params=[ARRAY_ID])},
            "/arrays/{array_id}/cancel": {"post": _op(
                "Cancel every unfinished task of the array", ARRAY_OK, 404, 409,
                params=[ARRAY_ID])},
            "/arrays/{array_id}/rerun": {"post": _op(
                "Run the array's failed, timed-out and lost tasks (or those in 'states') "
                "again, as a new array (rerun_of: this one) with the same indices, "
                "arguments, inputs and dependencies",
                {"201": _json("The new array and its tasks' ids", "Submitted")},
                400, 404, 409, 429, params=[ARRAY_ID], body={
                    "required": False, "content": {"application/json": {"schema": {
                        "type": "object", "properties": {"states": {
                            "type": "array", "minItems": 1, "items": {"enum": sorted(
                                s.value for s in FINISHED)}}}}}}})},
            "/workers": {"get": _op(
                "Every worker: what it offers, slots set aside, drained, jobs running (admin)",
                {"200": _json("The workers", schema={
                    "type": "array", "items": {"$ref": "#/components/schemas/Worker"}})})},
            "/cluster/workers": {"get": _op(
                "Every worker, its CPUs in use and state (idle, mixed, allocated, drained, "
                "down), as sinfo", {"200": _json("The workers", schema={
                    "type": "object", "properties": {"workers": {"type": "array", "items": {
                        "allOf": [{"$ref": "#/components/schemas/Worker"}, {
                            "type": "object", "properties": {
                                "cpus_used": {"type": "integer"},
                                "state": {"type": "string", "enum": [
                                    "idle", "mixed", "allocated", "drained", "down"]}}}]}}}})})},
            "/queue": {"get": _op(
                "Every queued and running job, oldest first, as squeue (others' without "
                "their names)", {"200": _json("The jobs", schema={
                    "type": "object", "properties": {
                        "jobs": {"type": "array", "items": {"type": "object"}},
                        "truncated": {"type": "boolean"}}})})},
            "/usage": {"get": _op(
                "Jobs finished in the last 'days' (default 30) per user: counts by how they "
                "ended, CPU hours used and held, highest peak memory, as sreport (a user: "
                "their own line)", {"200": _json("Usage", schema={
                    "type": "object", "properties": {
                        "since": {"type": "string"},
                        "users": {"type": "array", "items": {"type": "object"}}}})}, 400,
                params=[{"name": "days", "in": "query", "required": False,
                         "schema": {"type": "integer", "minimum": 1, "maximum": 3660}}])},
            "/workers/{name}/drain": {"post": _op(
                "Drain a worker: it takes no new job, its running ones go on (admin)",
                {"200": _json("The worker", "Worker")}, 404, params=[WORKER_NAME])},
            "/workers/{name}/resume": {"post": _op(
                "Resume a drained worker (admin)", {"200": _json("The worker", "Worker")},
                404, params=[WORKER_NAME])},
            "/worker/claim": {"post": _op(
                "Claim the next job (a long poll, or one look when the controller has a "
                "waiting room)", {
                    "200": _json("A job and its lease", "Job"),
                    "204": {"description": "Nothing to do within 'wait'. With a waiting room, "
                            "at once, with the headers Jobqueue-Wait-Ticket and "
                            "Jobqueue-Wait-Seconds: wait with the ticket at GET /worker/wait "
                            "(served by the waiting room, not this app), then claim again"}},
                400, body={
                    "required": True, "content": {"application/json": {"schema": {
                        "type": "object", "properties": {
                            "worker": {"type": "string"},
                            "cpus": {"type": "integer", "minimum": 1, "maximum": 1 << 20},
                            "wait": {"type": "number", "minimum": 0},
                            "claim_id": {"type": "string"},
                            "capacity": {"type": "object", "properties": {
                                "cpus": {"type": "integer", "minimum": 1, "maximum": 1 << 20},
                                "jobs": {"type": "integer", "minimum": 1,
                                         "maximum": 1 << 20},
                                "memory": {"type": "integer", "minimum": 1,
                                           "maximum": 1 << 30},
                                "quarantined": {"type": "integer", "minimum": 0,
                                                "maximum": 1 << 20}},
                                "required": ["cpus"]}}}}}})},
            "/worker/jobs/{job_id}/start": {"post": _op(
                "A batch scheduler started the job here: take its lease (slurm backend)",
                {"200": _json("The job with its lease")}, 400, 403, 409, params=jid, body={
                    "required": True, "content": {"application/json": {"schema": {
                        "type": "object", "required": ["external_id"], "properties": {
                            "worker": {"type": "string"},
                            "external_id": {"type": "string", "minLength": 1,
                                            "maxLength": 64}}}}}})},
            "/worker/jobs/{job_id}/heartbeat": {"post": _op(
                "Extend the lease; learn of cancellation", {"200": _json(
                    "Lease", schema={"type": "object", "properties": {
                        "lease_expires_at": {"type": "string"}, "cancel": {"type": "boolean"}}})},
                400, 409, params=jid, body=LEASE_BODY)},
            "/worker/jobs/{job_id}/input": {"get": _op(
                "The job's input files", {"200": _binary("tar.gz", "application/gzip")}, 404, 409,
                params=(JOB_ID, {"name": "lease", "in": "query", "required": True,
                                 "schema": {"type": "string"}}))},
            "/worker/jobs/{job_id}/log/{name}": {"post": _op(
                "Append a running job's log bytes from 'offset' on (a retry changes nothing; "
                "the logs together keep to the job's output limit)", {"200": _json(
                    "What is stored", schema={"type": "object", "properties": {
                        "size": {"type": "integer", "description": "where the next append "
                                 "starts"},
                        "cut": {"type": "boolean", "description": "the log is full: send no "
                                "more"}}})}, 400, 404, 409, 413, params=(
                    JOB_ID, {"name": "name", "in": "path", "required": True,
                             "schema": {"enum": ["stdout", "stderr"]}},
                    {"name": "lease", "in": "query", "required": True,
                     "schema": {"type": "string"}},
                    {"name": "offset", "in": "query", "required": True,
                     "schema": {"type": "integer", "minimum": 0}}),
                body={"required": True, "content": {"application/octet-stream": {
                    "schema": {"type": "string", "format": "binary", "maxLength": 4 << 20}}}})},
            "/worker/jobs/{job_id}/result": {"post": _op(
                "Upload the attempt's outcome (idempotent)", JOB_OK, 400, 404, 409, 413,
                params=jid, body={"required": True, "content": {"multipart/form-data": {
                    "schema": {"type": "object", "required": ["status"], "properties": {
                        "status": {"type": "string", "description": "JSON: lease, state, "
                                   "exit_code, message, limit and (optional) accounting, an "
                                   "Accounting object; all its fields may be left out"},
                        "results": {"type": "string", "format": "binary"},
                        "stdout": {"type": "string", "format": "binary"},
                        "stderr": {"type": "string", "format": "binary"}}}}}})},
            "/worker/jobs/{job_id}/release": {"post": _op(
                "Hand a running job back to the queue", {"200": _json(
                    "Released", schema={"type": "object"})}, 400, 409, params=jid,
                body=LEASE_BODY)},
            "/me": {"get": _op("Whose token this is", {"200": _json(
                "The token's user, and the token", schema={"type": "object", "properties": {
                    "name": {"type": "string"}, "role": {"type": "string"},
                    "token": {"oneOf": [{"$ref": "#/components/schemas/Token"},
                                        {"type": "null"}]}}})})},
            "/session": {
                "post": _op("The web page's sign-in: with the token in the Authorization "
                            "header, sets the HttpOnly session cookie (for /api/v1) and the "
                            "CSRF cookie, whose value every change made with the session "
                            "cookie sends as X-CSRF-Token", {"200": _json(
                                "The token's user", schema={"type": "object"})}),
                "delete": _op("Sign out: clears both cookies",
                              {"200": _json("Signed out", schema={"type": "object"})},
                              public=True)},
            "/tokens": {"get": _op("Your tokens (the one in use: current)", {"200": _json(
                "The tokens", schema={"type": "object", "properties": {"tokens": {
                    "type": "array", "items": {"$ref": "#/components/schemas/Token"}}}})})},
            "/tokens/{token_id}": {"delete": _op(
                "Revoke one of your tokens (an admin: anyone's)",
                {"200": _json("The token", "Token")}, 404,
                params=[{"name": "token_id", "in": "path", "required": True,
                         "schema": {"type": "integer"}}])},
            "/openapi.json": {"get": _op("This document", {"200": _json(
                "OpenAPI", schema={"type": "object"})})},
        }.items()},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {"type": "object", "required": ["error", "message"], "properties": {
                    "error": {"type": "string"}, "message": {"type": "string"}}},
                "Token": {"type": "object", "properties": {
                    "id": {"type": "integer"}, "label": {"type": "string"},
                    "created_at": {"type": "string"},
                    "expires_at": {"type": ["string", "null"]},
                    "revoked_at": {"type": ["string", "null"]},
                    "current": {"type": "boolean"}}},
                "Worker": {"type": "object", "properties": {
                    "worker": {"type": "string"}, "cpus": {"type": "integer"},
                    "jobs": {"type": ["integer", "null"]},
                    "memory_mib": {"type": ["integer", "null"]},
                    "quarantined_slots": {"type": "integer"}, "drained": {"type": "boolean"},
                    "environments": {"type": "array", "items": {"type": "string"}},
                    "running": {"type": "integer"}, "seen_at": {"type": "string"}}},
                "JobSpec": {"type": "object", "required": ["entry"], "properties": {
                    "name": {"type": "string"},
                    "entry": {"type": "string", "description": "what to run: a .py script "
                              "with the worker's Python, anything else as a program"},
                    "args": {"type": "array", "items": {"type": "string"}},
                    "env": {"type": "object", "maxProperties": 100,
                            "additionalProperties": {"type": "string", "maxLength": 4096},
                            "description": "environment variables; JOBQUEUE_*, HOME and "
                                           "TMPDIR are the worker's"},
                    "cpus": {"type": "integer", "minimum": 1},
                    "walltime": {"type": "integer", "minimum": 1},
                    "memory": {"type": "integer", "minimum": 16},
                    "output_limit": {"type": "integer", "minimum": 1},
                    "array": {"type": "string", "examples": ["0-99", "0-99%10", "1,3,7-9",
                                                            "0-20:5"],
                              "description": "a job array in Slurm's syntax; %N: at most N "
                                             "tasks run at once"},
                    "array_args": {"type": "array", "items": {
                        "type": "array", "items": {"type": "string"}},
                        "description": "each task's arguments (after 'args'); alone, the "
                                       "array is 0..n-1"},
                    "after": {"type": "array", "items": {"type": "string"},
                              "examples": [["3fa9c2", "afterany:81bd07"]],
                              "description": "job or array ids that must succeed first, or "
                                             "CONDITION:ID with afterok, afterany or "
                                             "afternotok (as Slurm's); if one ends otherwise "
                                             "this job is cancelled"},
                    "inputs_from": {"type": "array", "items": {"type": "string"},
                                    "description": "job or array ids whose results are "
                                                   "among the inputs, under a folder named "
                                                   "for each (an array's task: ARRAY/INDEX); "
                                                   "each is also an afterok unless 'after' "
                                                   "names it"}}},
                "Array": {"type": "object", "properties": {
                    "id": {"type": "string"}, "name": {"type": "string"},
                    "owner": {"type": "string"}, "size": {"type": "integer"},
                    "max_running": {"type": ["integer", "null"]},
                    "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
                    "created_at": {"type": "string"},
                    "rerun_of": {"type": ["string", "null"],
                                 "description": "the array whose tasks this one runs again"},
                    "links": {"type": "object"}}},
                "Submitted": {"type": "object", "properties": {
                    "array": {"$ref": "#/components/schemas/Array"},
                    "jobs": {"type": "array", "items": {"type": "string"},
                             "description": "the tasks' job ids, in index order"}}},
                "Job": {"type": "object", "properties": {
                    "id": {"type": "string"}, "name": {"type": "string"},
                    "owner": {"type": "string"},
                    "state": {"type": "string", "enum": [state.value for state in JobState]},
                    "entry": {"type": "string"}, "args": {"type": "array"},
                    "env": {"type": "object"},
                    "cpus": {"type": "integer"}, "attempts": {"type": "integer"},
                    "exit_code": {"type": ["integer", "null"]}, "message": {"type": "string"},
                    "limit": {"type": ["string", "null"], "enum": [*LIMITS, None],
                              "description": "the limit that ended the job, if one did"},
                    "accounting": {"$ref": "#/components/schemas/Accounting"},
                    "array": {"type": ["object", "null"], "properties": {
                        "id": {"type": "string"}, "index": {"type": "integer"},
                        "size": {"type": "integer"},
                        "task_count": {"type": "integer", "description": (
                            "what JOBQUEUE_ARRAY_TASK_COUNT tells it: the size, or a rerun's "
                            "first array's")}}},
                    "after": {"type": "array", "items": {"type": "string"},
                              "description": "the jobs it runs after: ids (afterok) or "
                                             "CONDITION:ID"},
                    "inputs_from": {"type": "array", "items": {"type": "string"},
                                    "description": "ids of the jobs whose results are among "
                                                   "its inputs"},
                    "pending_reason": {"type": "string"},
                    "queue_position": {"type": "integer"},
                    "held": {"type": "boolean"},
                    "lease": {"type": "string"}, "links": {"type": "object"}}},
                "Accounting": {
                    "type": "object", "description": "what the attempt that finished the job "
                    "used, as its worker measured it (null: not measured)",
                    "required": ["cpu_seconds", "peak_memory", "wall_seconds", "signal"],
                    "additionalProperties": False, "properties": {
                        "cpu_seconds": {"type": ["number", "null"], "minimum": 0,
                                        "maximum": 1e13, "description": "user + system"},
                        "peak_memory": {"type": ["integer", "null"], "minimum": 0,
                                        "maximum": (1 << 63) - 1, "description": "bytes"},
                        "wall_seconds": {"type": ["number", "null"], "minimum": 0,
                                         "maximum": 1e13},
                        "signal": {"type": ["integer", "null"], "minimum": 1, "maximum": 255,
                                   "description": "the signal that ended the job"}}},
            },
        },
    }
