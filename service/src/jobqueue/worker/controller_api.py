"""The worker's side of the HTTP API: claim, heartbeat, input, result, release."""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO

import requests

from jobqueue import https

API = "/api/v1"


class LeaseLost(Exception):
    """The controller says this worker no longer holds the job."""


class ControllerError(Exception):
    """The controller refused a request for a reason other than the lease."""


class ControllerApi:
    def __init__(self, base_url: str, token: str, ca_bundle: str = "", timeout: float = 30.0):
        self.base = base_url.rstrip("/") + API
        self.timeout = timeout
        self.http = https.session(ca_bundle, user_agent="jobqueue-worker")
        self.http.headers["Authorization"] = f"Bearer {token}"

    def _check(self, response: requests.Response) -> requests.Response:
        if response.status_code == 409:
            raise LeaseLost(response.json().get("message", "lease lost"))
        if response.status_code >= 400:
            try:
                message = response.json().get("message", response.text)
            except ValueError:
                message = response.text[:200]
            raise ControllerError(f"{response.status_code}: {message}")
        return response

    def claim(self, worker: str, free_cpus: int, wait: float) -> dict | None:
        response = self._check(self.http.post(
            f"{self.base}/worker/claim", json={"worker": worker, "cpus": free_cpus, "wait": wait},
            timeout=wait + self.timeout))
        return None if response.status_code == 204 else response.json()

    def heartbeat(self, job_id: str, lease: str) -> bool:
        """Renew the lease; return whether the job's owner asked to cancel it."""
        response = self._check(self.http.post(
            f"{self.base}/worker/jobs/{job_id}/heartbeat", json={"lease": lease},
            timeout=self.timeout))
        return bool(response.json()["cancel"])

    def download_input(self, job_id: str, lease: str, dest: IO[bytes]) -> None:
        with self._check(self.http.get(f"{self.base}/worker/jobs/{job_id}/input",
                                       params={"lease": lease}, stream=True,
                                       timeout=self.timeout)) as response:
            for chunk in response.iter_content(1 << 16):
                dest.write(chunk)

    def upload_result(self, job_id: str, lease: str, state: str, exit_code: int | None,
                      message: str, results: Path | None, stdout: Path, stderr: Path) -> dict:
        status = json.dumps({"lease": lease, "state": state, "exit_code": exit_code,
                             "message": message})
        handles = {"stdout": open(stdout, "rb"), "stderr": open(stderr, "rb")}
        if results is not None:
            handles["results"] = open(results, "rb")
        try:
            files = {name: (name, fh, "application/octet-stream") for name, fh in handles.items()}
            return self._check(self.http.post(
                f"{self.base}/worker/jobs/{job_id}/result", data={"status": status}, files=files,
                timeout=self.timeout * 4)).json()
        finally:
            for fh in handles.values():
                fh.close()

    def release(self, job_id: str, lease: str) -> None:
        self._check(self.http.post(f"{self.base}/worker/jobs/{job_id}/release",
                                   json={"lease": lease}, timeout=self.timeout))
