"""The worker's side of the HTTP API: claim, heartbeat, input, live logs, result,
release."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import IO

import requests

from jobqueue import https
from jobqueue.backoff import retry_after
from jobqueue.controller.wait_tickets import TICKET_HEADER, WAIT_SECONDS_HEADER
from jobqueue.multipart import MultipartBody

API = "/api/v1"


class LeaseLost(Exception):
    """The controller says this worker no longer holds the job."""


class ControllerError(Exception):
    """The controller refused a request for a reason other than the lease."""


class Unavailable(ControllerError):
    """The controller answered 5xx (its database is down, it is restarting): try again."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


# What a retry may cure: the controller unreachable, or answering that it cannot serve now.
TRANSIENT = (requests.RequestException, Unavailable)


MAX_WAIT_SECONDS = 3600


def _wait_seconds(header: str | None, default: float) -> float:
    """How long the waiting room holds a wait, as the claim said (bounded)."""
    try:
        seconds = float(header)
    except (TypeError, ValueError):
        return default
    return min(seconds, MAX_WAIT_SECONDS) if seconds >= 0 else default  # NaN: default


class ControllerApi:
    def __init__(self, base_url: str, token: str, ca_bundle: str = "", timeout: float = 30.0):
        self.base = base_url.rstrip("/") + API
        self.timeout = timeout
        self.http = https.session(ca_bundle, user_agent="jobqueue-worker")
        self.http.headers["Authorization"] = f"Bearer {token}"
        # When the controller last answered (not 5xx): a claim loop waiting out a backoff
        # takes it as the sign that an outage is over.
        self.last_answer = 0.0
        # The ticket of the last claim that took nothing, when the controller has a
        # waiting room, and how long the room holds a wait: `wait` with them.
        self.wait_ticket: str | None = None
        self.wait_seconds = 0.0

    def _check(self, response: requests.Response) -> requests.Response:
        if response.status_code < 500:
            self.last_answer = time.monotonic()
        if response.status_code == 409:
            raise LeaseLost(response.json().get("message", "lease lost"))
        if response.status_code >= 400:
            try:
                message = response.json().get("message", response.text)
            except ValueError:
                message = response.text[:200]
            if response.status_code >= 500:
                raise Unavailable(f"{response.status_code}: {message}",
                                  retry_after(response.headers.get("Retry-After")))
            raise ControllerError(f"{response.status_code}: {message}")
        return response

    def claim(self, worker: str, free_cpus: int, wait: float,
              claim_id: str | None = None, capacity: dict | None = None) -> dict | None:
        """The next job, or None. Repeating a claim with the same `claim_id` after its
        answer was lost returns the job it took, if it took one. With `capacity` (all
        the worker's CPUs and jobs at once) the controller fits the job to what is free
        when it hands it out, so jobs that end during the wait count."""
        body = {"worker": worker, "cpus": free_cpus, "wait": wait, "claim_id": claim_id,
                "capacity": capacity}
        response = self._check(self.http.post(
            f"{self.base}/worker/claim", json=body, timeout=wait + self.timeout))
        self.wait_ticket = None
        if response.status_code == 204 and (ticket := response.headers.get(TICKET_HEADER)):
            self.wait_ticket = ticket
            self.wait_seconds = _wait_seconds(response.headers.get(WAIT_SECONDS_HEADER), wait)
        return None if response.status_code == 204 else response.json()

    def wait(self) -> None:
        """Wait in the controller's waiting room, with the last claim's ticket, until a
        job may be there for this worker, or the wait ends, or is refused (an old ticket,
        a newer wait of this worker): claim again either way."""
        response = self.http.get(f"{self.base}/worker/wait",
                                 headers={TICKET_HEADER: self.wait_ticket},
                                 timeout=self.wait_seconds + self.timeout)
        if response.status_code not in (200, 204, 401, 409):
            self._check(response)  # raises: the room is full, down or not proxied

    def start(self, job_id: str, worker: str, external_id: str) -> dict:
        """Take the lease of a job that a batch scheduler started here as `external_id`.
        Raises LeaseLost if the job will not start (cancelled, or another attempt's)."""
        return self._check(self.http.post(
            f"{self.base}/worker/jobs/{job_id}/start",
            json={"worker": worker, "external_id": external_id}, timeout=self.timeout)).json()

    def heartbeat(self, job_id: str, lease: str, timeout: float | None = None) -> bool:
        """Renew the lease; return whether the job's owner asked to cancel it."""
        response = self._check(self.http.post(
            f"{self.base}/worker/jobs/{job_id}/heartbeat", json={"lease": lease},
            timeout=timeout or self.timeout))
        return bool(response.json()["cancel"])

    def download_input(self, job_id: str, lease: str, dest: IO[bytes]) -> None:
        with self._check(self.http.get(f"{self.base}/worker/jobs/{job_id}/input",
                                       params={"lease": lease}, stream=True,
                                       timeout=self.timeout)) as response:
            for chunk in response.iter_content(1 << 16):
                dest.write(chunk)

    def append_log(self, job_id: str, lease: str, name: str, offset: int, data: bytes,
                   timeout: float | None = None) -> dict:
        """Send a running job's log bytes from `offset` on; the controller answers with
        `size` (where the next append starts) and `cut` (the log is full: send no more).
        A retry of the same bytes changes nothing."""
        return self._check(self.http.post(
            f"{self.base}/worker/jobs/{job_id}/log/{name}",
            params={"lease": lease, "offset": offset}, data=data,
            headers={"Content-Type": "application/octet-stream"},
            timeout=timeout or self.timeout)).json()

    def upload_result(self, job_id: str, lease: str, state: str, exit_code: int | None,
                      message: str, results: Path | None, stdout: Path, stderr: Path,
                      limit: str | None = None, accounting: dict | None = None) -> dict:
        status = json.dumps({"lease": lease, "state": state, "exit_code": exit_code,
                             "message": message, "limit": limit}
                            | ({"accounting": accounting} if accounting is not None else {}))
        # Streamed from disk: the results may be as large as the job's output limit.
        body = MultipartBody()
        body.add_field("status", status, content_type="application/json")
        for name, path in (("stdout", stdout), ("stderr", stderr), ("results", results)):
            if path is not None:
                body.add_file(name, name, Path(path))
        return self._check(self.http.post(
            f"{self.base}/worker/jobs/{job_id}/result", data=body,
            headers={"Content-Type": body.content_type}, timeout=self.timeout * 4)).json()

    def release(self, job_id: str, lease: str, error: str | None = None) -> None:
        body = {"lease": lease} | ({"error": error[:1000]} if error else {})
        self._check(self.http.post(f"{self.base}/worker/jobs/{job_id}/release",
                                   json=body, timeout=self.timeout))
