"""Every error leaves the API as JSON `{"error", "message"}`, never as a traceback.

A database that cannot be reached (restarting, connection dropped, SQLite locked for
too long) is a 503 with Retry-After, never a 500: clients and workers retry those.
"""

from __future__ import annotations

import logging

from flask import Flask, jsonify
from sqlalchemy import exc as db_errors
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 2


class ApiError(Exception):
    def __init__(self, status: int, error: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
        self.headers = headers or {}


def bad_request(message: str) -> ApiError:
    return ApiError(400, "bad_request", message)


def not_found(what: str = "job", why: str = "") -> ApiError:
    return ApiError(404, "not_found", f"no such {what}" + (f": {why}" if why else ""))


def conflict(message: str) -> ApiError:
    return ApiError(409, "conflict", message)


def database_unavailable(exc: Exception) -> bool:
    """Whether `exc` says the database is out of reach rather than that a query is wrong."""
    if isinstance(exc, (db_errors.OperationalError, db_errors.InterfaceError,
                        db_errors.TimeoutError, db_errors.DisconnectionError)):
        return True
    return isinstance(exc, db_errors.DBAPIError) and exc.connection_invalidated


def _response(status: int, error: str, message: str, headers: dict | None = None):
    response = jsonify(error=error, message=message)
    response.status_code = status
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def register(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        return _response(exc.status, exc.error, exc.message, exc.headers)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        error = (exc.name or "error").lower().replace(" ", "_")
        message = exc.description or exc.name
        if exc.code == 413:
            limit = app.config.get("MAX_CONTENT_LENGTH")
            message = f"request body is larger than the limit of {limit} bytes"
        headers = dict(exc.get_headers()) if exc.code == 405 else {}
        headers.pop("Content-Type", None)
        return _response(exc.code or 500, error, message, headers)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        if database_unavailable(exc):
            log.warning("database unavailable: %s", str(exc).splitlines()[0])
            return _response(503, "unavailable",
                             "the database is unavailable; retry in a few seconds",
                             {"Retry-After": str(RETRY_AFTER_SECONDS)})
        log.exception("unhandled error")
        return _response(500, "internal_error", "internal error; see the controller's log")
