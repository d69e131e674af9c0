"""Errors raised by the client. All derive from ClientError so callers can catch one type."""

from __future__ import annotations

from typing import Any

from jobqueue.archive import UnsafeArchive


class ClientError(Exception):
    """Base class of every error the client raises on purpose."""


class ConfigError(ClientError):
    """The client configuration is missing or invalid."""


class TransportError(ClientError):
    """The controller could not be reached, or the connection failed mid-request.
    `dropped`: the connection closed before any answer (often a kept-alive connection
    the server closed just as it was reused)."""

    def __init__(self, message: str, dropped: bool = False):
        super().__init__(message)
        self.dropped = dropped


class UnsafeArchiveError(ClientError, UnsafeArchive):
    """A results archive holds a member that would land outside the destination."""


class ApiError(ClientError):
    """The controller answered with an error status.

    ``error`` is the machine-readable code and ``message`` the explanation, both taken from
    the JSON error body ``{"error": ..., "message": ...}``.
    """

    def __init__(self, status: int, error: str, message: str) -> None:
        self.status = status
        self.error = error
        self.message = message
        super().__init__(f"{message} (HTTP {status}, {error})")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.status, self.error, self.message))


class WaitTimeout(ClientError, TimeoutError):
    """The job (or every task of an array) did not reach a terminal state in time; ``job``
    is its last known state (an array's summary, for an array)."""

    def __init__(self, job: dict[str, Any], timeout: float) -> None:
        self.job = job
        self.timeout = timeout
        if "counts" in job:  # a job array's summary
            counts = ", ".join(f"{n} {state}" for state, n in sorted(job["counts"].items()))
            what = f"array {job.get('id')} is still at {counts}"
        else:
            what = f"job {job.get('id')} is still {job.get('state')}"
        super().__init__(f"{what} after {timeout:g} seconds")
