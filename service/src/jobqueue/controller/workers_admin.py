"""Admin routes about the workers: what each offers and runs, and drain/resume (a
drained worker keeps its running jobs and is handed no new one)."""

from __future__ import annotations

from flask import Blueprint, g, jsonify

from jobqueue.controller import workers
from jobqueue.controller.auth import require
from jobqueue.controller.errors import not_found
from jobqueue.controller.views import app_state

bp = Blueprint("workers_admin", __name__)


@bp.get("/workers")
@require("admin")
def list_workers():
    return jsonify(workers.overview(g.db))


@bp.post("/workers/<name>/drain")
@require("admin")
def drain(name: str):
    return _set_drained(name, True)


@bp.post("/workers/<name>/resume")
@require("admin")
def resume(name: str):
    return _set_drained(name, False)


def _set_drained(name: str, drained: bool):
    if workers.set_drained(g.db, name, drained) is None:
        raise not_found(f"worker {name!r} (none of that name has claimed a job yet)")
    g.db.commit()
    if not drained and (room := app_state().waiting_room) is not None:
        room.wake_worker(name)  # it waits with a ticket that has no room for a job
    return jsonify(workers.overview(g.db, name)[0])
