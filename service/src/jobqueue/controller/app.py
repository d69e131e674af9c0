"""The controller's Flask application factory."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from flask import Blueprint, Flask, Response, g, jsonify, render_template
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.routing import PathConverter

from jobqueue.controller import errors
from jobqueue.controller import settings as settings_module
from jobqueue.controller.api import bp as api_bp
from jobqueue.controller.arrays import bp as arrays_bp
from jobqueue.controller.cluster_views import bp as cluster_views_bp
from jobqueue.controller.auth import current_user, require
from jobqueue.controller.db import make_engine, make_session_factory
from jobqueue.controller.metrics import Metrics
from jobqueue.models import Job
from jobqueue.controller.openapi import document
from jobqueue.controller.settings import ControllerSettings
from jobqueue.controller.storage import JobFiles
from jobqueue.controller.token_api import bp as token_api_bp, token_json
from jobqueue.controller.wait_tickets import RoomClient
from jobqueue.controller.single_sign_on import bp as single_sign_on_bp
from jobqueue.controller.web_session import bp as web_session_bp
from jobqueue.controller.worker_api import bp as worker_bp
from jobqueue.controller.workers_admin import bp as workers_admin_bp
from jobqueue.controller.workers import Registry
from jobqueue.queue import LeasedQueue, QueueBackend, QueueEvents, make_backend
from jobqueue.queue.dispatcher import Dispatcher
from jobqueue.states import JobState

API_PREFIX = "/api/v1"
# Nothing the API returns may run as active content on this origin.
API_CSP = "default-src 'none'; frame-ancestors 'none'; sandbox"
# The web page: its script and style only from this origin's static files (no inline
# code, no eval), its data only from the API, downloads made from blobs it fetched.
PAGE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
            "frame-ancestors 'none'; base-uri 'none'; form-action 'none'")


@dataclass
class AppState:
    settings: ControllerSettings
    session_factory: object
    backend: QueueBackend
    files: JobFiles
    metrics: Metrics
    workers: Registry
    waiting_room: RoomClient | None = None  # where idle workers wait, when one is set up


def _recover_uploads(files: JobFiles, session_factory) -> None:
    """Finish or drop result uploads that a crash of an earlier process cut short."""

    def attempt_of(job_id: str) -> tuple[JobState, str | None] | None:
        with session_factory() as session:
            job = session.get(Job, job_id)
            return None if job is None else (job.job_state, job.lease)

    try:
        files.recover(attempt_of)
    except SQLAlchemyError as exc:  # the database is down: the next start-up tries again
        logging.getLogger(__name__).warning("recovering uploads: %s", exc)


def _renew_leases(backend: QueueBackend) -> None:
    """Running jobs' leases, which no worker could renew while no process served."""
    if not isinstance(backend, LeasedQueue):
        return
    try:
        if renewed := backend.leases.renew_all():
            logging.getLogger(__name__).info("renewed the leases of %d running jobs", renewed)
    except SQLAlchemyError as exc:  # the database is down: no lease expires without it
        logging.getLogger(__name__).warning("renewing leases: %s", exc)


class FilePathConverter(PathConverter):
    """`<path:...>` that also matches a line break: a job may put one in a file name."""

    regex = "[^/](?s:.)*?"


def create_app(settings: ControllerSettings | None = None) -> Flask:
    settings = settings or settings_module.load()
    app = Flask(__name__)
    app.url_map.converters["path"] = FilePathConverter
    app.config["MAX_CONTENT_LENGTH"] = settings.max_upload_bytes
    app.config["MAX_FORM_PARTS"] = settings.max_files + 16
    app.config["JOBQUEUE"] = settings

    engine = make_engine(settings.database_url, settings.database_pool_size)
    session_factory = make_session_factory(engine)
    metrics = Metrics(session_factory)
    backend = make_backend(settings.queue_backend, session_factory, settings,
                           QueueEvents(claimed=metrics.claim_latency.observe))
    files = JobFiles(settings.data_dir, settings.max_files, settings.log_tail_bytes,
                     settings.max_archive_seconds)
    _recover_uploads(files, session_factory)
    _renew_leases(backend)
    room = None
    if settings.waiting_room_dir and isinstance(backend, Dispatcher):
        room = RoomClient(settings.waiting_room_dir)
        backend.room = room
    app.extensions["jobqueue"] = AppState(settings, session_factory, backend, files, metrics,
                                          Registry(session_factory), room)

    @app.before_request
    def _open_session():
        g.db = session_factory()

    @app.teardown_request
    def _close_session(_exc):
        db = g.pop("db", None)
        if db is not None:
            db.close()

    @app.after_request
    def _security_headers(response: Response):
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers.setdefault("Content-Security-Policy", API_CSP)
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    api = Blueprint("v1", __name__, url_prefix=API_PREFIX)
    api.register_blueprint(api_bp)
    api.register_blueprint(arrays_bp)
    api.register_blueprint(workers_admin_bp)
    api.register_blueprint(cluster_views_bp)
    api.register_blueprint(token_api_bp)
    api.register_blueprint(web_session_bp)
    if isinstance(backend, LeasedQueue):
        api.register_blueprint(worker_bp)

    @api.get("/openapi.json")
    @require("user", "admin", "worker")
    def openapi():
        return jsonify(document())

    # Whose token this is: lets the deploy check a token over HTTPS, the way
    # its holder will use it.
    @api.get("/me")
    @require("user", "admin", "worker")
    def me():
        user = current_user()
        token = g.get("token")
        return jsonify({"name": user.name, "role": user.role,
                        "token": token_json(token) if token is not None else None})

    app.register_blueprint(api)
    if settings.single_sign_on:
        app.register_blueprint(single_sign_on_bp)
    errors.register(app)

    @app.get("/healthz")
    def healthz():
        g.db.execute(text("SELECT 1"))
        g.db.commit()
        return jsonify(status="ok", queue_backend=backend.name)

    @app.get("/metrics")
    @require("admin")
    def metrics_view():
        return Response(metrics.render(), mimetype="text/plain; version=0.0.4")

    @app.get("/")
    def index():
        response = Response(render_template(
            "index.html", states=[state.value for state in JobState],
            finished=[state.value for state in JobState if state.finished],
            single_sign_on=bool(settings.single_sign_on)))
        response.headers["Content-Security-Policy"] = PAGE_CSP
        return response

    logging.getLogger("jobqueue").setLevel(logging.INFO)
    return app
