"""Python client for the user side of the jobqueue HTTP API (``/api/v1``)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Self
from urllib.parse import quote

import requests
import urllib3

from jobqueue import https
from jobqueue.archive import UnsafeArchive, safe_extract
from jobqueue.backoff import Backoff, retry_after
from jobqueue.client.config import load_config
from jobqueue.client.errors import (
    ApiError,
    ConfigError,
    TransportError,
    UnsafeArchiveError,
    WaitTimeout,
)
from jobqueue.multipart import MultipartBody
from jobqueue.client import polling
from jobqueue.client.packing import check_relpath, pack_path
from jobqueue.states import FINISHED

__all__ = ["TERMINAL_STATES", "Client"]  # the errors: jobqueue.client.errors

TERMINAL_STATES = frozenset(state.value for state in FINISHED)
API_PREFIX = "/api/v1"
DEFAULT_TIMEOUT = 60.0
# follow_log() asks for new log bytes this often while the job runs.
FOLLOW_INTERVAL = 1.0
# How long a request is retried while the controller answers 503 (its database is
# restarting) and, for submits, while it cannot be reached at all.
DEFAULT_RETRY_SECONDS = 30.0
# 503: the controller did nothing. Other 5xx may come after it did something, so only
# requests that are safe to repeat (reads, submits with an idempotency key) retry them.
RETRY_ALWAYS = frozenset({503})
RETRY_IF_IDEMPOTENT = frozenset({500, 502, 503, 504})

JobId = int | str
FileSource = str | os.PathLike[str] | bytes


class Client:
    """A session with one controller, authenticated with a bearer token.

    ``url`` is the controller's base URL, with or without the ``/api/v1`` suffix.
    ``ca_bundle`` is a CA file to verify the server's certificate (default: system CAs).
    ``timeout`` bounds each request's connect and read waits, in seconds.
    ``retry_seconds`` bounds how long a request is retried through an outage (see
    :data:`DEFAULT_RETRY_SECONDS`); 0 turns retries off.
    """

    def __init__(
        self,
        url: str,
        token: str | None,
        ca_bundle: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        retry_seconds: float = DEFAULT_RETRY_SECONDS,
    ) -> None:
        base = url.strip().rstrip("/")
        if not base.startswith(("http://", "https://")):
            raise ConfigError(f"controller URL must start with http:// or https://, got {url!r}")
        base = base.removesuffix(API_PREFIX)
        self.url = base
        self.api = base + API_PREFIX
        self.timeout = timeout
        self.retry_seconds = retry_seconds
        self.session = https.session(ca_bundle, user_agent="jobqueue-client")
        self.session.headers["Accept"] = "application/json"
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    @classmethod
    def from_env(cls, timeout: float = DEFAULT_TIMEOUT) -> Client:
        """Client configured from JOBQUEUE_URL / JOBQUEUE_TOKEN / JOBQUEUE_CA_BUNDLE or the
        client TOML file (see :mod:`jobqueue.client.config`)."""
        config = load_config()
        return cls(config.url, config.token, config.ca_bundle, timeout=timeout)

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- submitting -------------------------------------------------------------------

    def submit(
        self,
        files: Mapping[str, FileSource],
        spec: Mapping[str, Any],
        idempotency_key: str | None = None,
        *,
        array: str | None = None,
        array_args: Sequence[Sequence[str]] | None = None,
        after: Sequence[JobId] | None = None,
        inputs_from: Sequence[JobId] | None = None,
    ) -> dict[str, Any]:
        """Submit a job. ``files`` maps each relative path in the job directory to a local
        file path or to the bytes of the file; ``spec`` is the job spec (``entry`` etc.).
        Returns the controller's answer, the job ``{"id", "state", "links", ...}``.

        ``array`` (Slurm's syntax: ``"0-99"``, ``"0-99%10"``, ``"1,3,7-9"``, ``"0-20:5"``)
        or ``array_args`` (each task's own arguments, after ``args``) make a job array:
        the answer is then ``{"array": {"id", "size", "counts", ...}, "jobs": [ids]}``.
        ``after`` names jobs (or arrays: all their tasks) that must succeed first, or
        end as ``"afterany:ID"`` or ``"afternotok:ID"`` say; ``inputs_from`` names jobs
        (or arrays) whose results come in as inputs, under a folder named for each
        (``ID/``, an array's task ``ARRAY_ID/INDEX/``); they must succeed first unless
        ``after`` gives another condition.

        The request carries an ``Idempotency-Key`` (``idempotency_key``, or a new random
        one), so it is retried safely when the connection fails or the controller answers
        503: a retry whose first try did get through returns the same job, not a second."""
        sources = {
            check_relpath(relpath): source if isinstance(source, bytes) else Path(source)
            for relpath, source in files.items()
        }
        spec = dict(spec)
        if array is not None:
            spec["array"] = array
        if array_args is not None:
            spec["array_args"] = [[str(a) for a in task] for task in array_args]
        if after:
            spec["after"] = [str(job_id) for job_id in after]
        if inputs_from:
            spec["inputs_from"] = [str(job_id) for job_id in inputs_from]
        spec_json = json.dumps(spec)

        def body() -> MultipartBody:  # a fresh body per try: each one is read to the end
            multipart = MultipartBody()
            multipart.add_field("spec", spec_json, content_type="application/json")
            for relpath, source in sources.items():
                multipart.add_file("files", relpath, source)
            return multipart

        key = idempotency_key or uuid.uuid4().hex
        return self._json("POST", "/jobs", body=body, idempotency_key=key, expect=(200, 201))

    def submit_path(
        self,
        path: str | os.PathLike[str],
        entry: str | None = None,
        args: Sequence[str] = (),
        cpus: int | None = None,
        walltime: int | None = None,
        memory: int | None = None,
        output_limit: int | None = None,
        name: str | None = None,
        idempotency_key: str | None = None,
        *,
        array: str | None = None,
        array_args: Sequence[Sequence[str]] | None = None,
        after: Sequence[JobId] | None = None,
        inputs_from: Sequence[JobId] | None = None,
        env: Mapping[str, str] | None = None,
        environment: str | None = None,
    ) -> dict[str, Any]:
        """Submit a script, or a folder whose ``entry`` (default: its only top-level .py file)
        is run (a ``.py`` with the worker's Python, anything else as a program: a script
        with a ``#!`` line, a binary). ``env``: environment variables for the job;
        ``environment``: the software environment it runs in (one the service declares).
        Settings left as None take the controller's defaults; ``array``,
        ``array_args``, ``after`` and ``inputs_from`` as for :meth:`submit`."""
        files, entry_path = pack_path(path, entry)
        spec: dict[str, Any] = {
            "name": name or Path(path).resolve().name,
            "entry": entry_path,
            "args": [str(a) for a in args],
        }
        optional = {
            "cpus": cpus,
            "walltime": walltime,
            "memory": memory,
            "output_limit": output_limit,
            "env": dict(env) if env else None,
            "environment": environment,
        }
        spec.update({key: value for key, value in optional.items() if value is not None})
        return self.submit(files, spec, idempotency_key, array=array, array_args=array_args,
                           after=after, inputs_from=inputs_from)

    # -- reading ----------------------------------------------------------------------

    def list(self, state: str | None = None, limit: int | None = None,
             array: JobId | None = None, name: str | None = None) -> list[dict[str, Any]]:
        """Jobs, newest first, following the server's cursors; at most ``limit`` of them;
        with ``array``, only that array's tasks; with ``name``, only jobs whose name
        holds it (any case)."""
        return list(self.iter_jobs(state=state, limit=limit, array=array, name=name))

    def iter_jobs(self, state: str | None = None, limit: int | None = None,
                  array: JobId | None = None, name: str | None = None) -> Iterator[dict]:
        params: dict[str, Any] = {}
        if state:
            params["state"] = state
        if array is not None:
            params["array"] = str(array)
        if name:
            params["name"] = name
        seen = 0
        cursor: str | None = None
        while limit is None or seen < limit:
            if limit is not None:
                params["limit"] = limit - seen
            if cursor is not None:
                params["cursor"] = cursor
            page = self._json("GET", "/jobs", params=params)
            for job in page.get("jobs", []):
                yield job
                seen += 1
                if limit is not None and seen >= limit:
                    return
            cursor = page.get("next")
            if not cursor or not page.get("jobs"):
                return

    def get(self, job_id: JobId) -> dict[str, Any]:
        """The job (``job_id`` may be a unique start of its id, four characters or more)."""
        return self._json("GET", f"/jobs/{_seg(job_id)}")

    def array(self, array_id: JobId) -> dict[str, Any]:
        """A job array's summary ``{"id", "name", "size", "max_running", "counts"}``
        (``counts``: how many of its tasks are in each state)."""
        return self._json("GET", f"/arrays/{_seg(array_id)}")

    def queue(self) -> dict[str, Any]:
        """Every queued and running job of the cluster, oldest first (``{"jobs",
        "truncated"}``; others' jobs without their names), as Slurm's squeue."""
        return self._json("GET", "/queue")

    def workers(self) -> list[dict[str, Any]]:
        """Every worker: its CPUs and those in use, environments and state (idle, mixed,
        allocated, drained, down), as Slurm's sinfo."""
        return self._json("GET", "/cluster/workers")["workers"]

    def usage(self, days: int = 30) -> dict[str, Any]:
        """Jobs finished in the last ``days`` per user (yours; an admin's: everyone's):
        counts by outcome, CPU hours used and held, highest peak memory."""
        return self._json("GET", "/usage", params={"days": days})

    def array_tasks(self, array_id: JobId) -> list[dict[str, Any]]:
        """Every task of the array, in index order."""
        tasks = self.list(array=array_id)
        return sorted(tasks, key=lambda job: (job.get("array") or {}).get("index", 0))

    def cancel_array(self, array_id: JobId) -> dict[str, Any]:
        """Cancel every unfinished task of the array; returns its summary."""
        return self._json("POST", f"/arrays/{_seg(array_id)}/cancel")

    def rerun_array(self, array_id: JobId,
                    states: Sequence[str] | None = None) -> dict[str, Any]:
        """Run the array's failed, timed-out and lost tasks (or those in ``states``) again
        as a new array, each with its index, arguments and inputs; returns ``{"array":
        summary, "jobs": ids}``. The array keeps its tasks as they ended."""
        body = {} if states is None else {"states": list(states)}
        return self._json("POST", f"/arrays/{_seg(array_id)}/rerun", json=body, expect=(201,))

    def wait_array(self, array_id: JobId, timeout: float | None = None,
                   on_update: Callable[[dict[str, Any]], None] | None = None,
                   interval: float | None = None) -> dict[str, Any]:
        """Poll the array until none of its tasks is queued or running; return its summary
        (``on_update(summary)`` after every poll). Raises :class:`WaitTimeout`."""
        return polling.until(lambda: self.array(array_id),
                             lambda summary: not set(summary.get("counts", {})) - TERMINAL_STATES,
                             {"id": array_id, "counts": {}}, timeout, interval, on_update)

    def me(self) -> dict[str, Any]:
        """Whose token this client holds: ``{"name", "role"}``."""
        return self._json("GET", "/me")

    def files(self, job_id: JobId) -> list[dict[str, Any]]:
        """The job's files as ``[{"path", "size"}]``."""
        return self._json("GET", f"/jobs/{_seg(job_id)}/files").get("files", [])

    def log(self, job_id: JobId) -> dict[str, str]:
        """``{"stdout": ..., "stderr": ...}``: the end of each (the controller's
        `log_tail_bytes`), after a marker line if some of it is left out."""
        return self._json("GET", f"/jobs/{_seg(job_id)}/log")

    def write_log(self, job_id: JobId, name: str, out: IO[bytes]) -> None:
        """Copy the job's whole ``stdout`` or ``stderr`` to ``out``."""
        response = self._request("GET", f"/jobs/{_seg(job_id)}/log/{name}", stream=True)
        with response:
            for chunk in response.iter_content(1 << 16):
                out.write(chunk)

    def follow_log(self, job_id: JobId, name: str = "stdout",
                   interval: float = FOLLOW_INTERVAL) -> Iterator[bytes]:
        """Yield the job's ``stdout`` (or ``stderr``) from its start, as it grows while the
        job runs, until the job has finished; the generator's return value is the
        finished job. A queued job is waited for. If the job starts over (its worker was
        lost), a marker line says so and the new attempt's log follows from its start; a
        log cut at the job's output limit ends with the marker line that says so."""
        if name not in ("stdout", "stderr"):
            raise ValueError(f"no log {name!r} (there are stdout and stderr)")
        offset, attempt, cut, outage = 0, None, False, polling.Outage()
        for _ in polling.every(interval=interval):
            with outage:
                job = self.get(job_id)
            if not outage.ok:
                continue
            job_id, state = job.get("id", job_id), job.get("state")
            if state == "running" and attempt is not None and job.get("attempts") != attempt:
                yield (f"\n[jobqueue: attempt {job.get('attempts')} started; its {name} "
                       "follows from the start]\n").encode()
                offset, cut = 0, False
            if state == "running" or state in TERMINAL_STATES:
                attempt = job.get("attempts")
                # The job's state is read first: once it has finished, this read is of
                # the result's log, and nothing is missed.
                while not cut:
                    path = f"/jobs/{_seg(job_id)}/log/{name}"
                    with self._request("GET", path, params={"offset": offset},
                                       stream=True) as response:
                        cut = response.headers.get("X-Log-Cut") == "true"
                        got = 0
                        for chunk in response.iter_content(1 << 16):
                            got += len(chunk)
                            offset += len(chunk)
                            yield chunk
                    if got < 1 << 20:  # caught up (else there is more to read at once)
                        break
            if state in TERMINAL_STATES:
                return job

    def read_file(self, job_id: JobId, path: str) -> bytes:
        """One file of the job, as bytes."""
        url = f"/jobs/{_seg(job_id)}/files/{quote(check_relpath(path), safe='/')}"
        return self._request("GET", url).content

    def download_file(self, job_id: JobId, path: str, dest: str | os.PathLike[str]) -> Path:
        """Save one file of the job to ``dest`` (a file name, or an existing folder)."""
        relpath = check_relpath(path)
        target = Path(dest)
        if target.is_dir():
            target = target / relpath.rsplit("/", 1)[-1]
        url = f"/jobs/{_seg(job_id)}/files/{quote(relpath, safe='/')}"
        self._download(url, target)
        return target

    def download_results(self, job_id: JobId, dest_dir: str | os.PathLike[str],
                         inputs: bool = True) -> Path:
        """Download the job's results (with its input files, unless ``inputs`` is false)
        and extract them safely into ``dest_dir``. A folder this made is removed again
        if the download fails."""
        dest = Path(dest_dir)
        made = not dest.exists()
        dest.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=".results-", suffix=".tar.gz", dir=dest)
        os.close(fd)
        try:
            query = "" if inputs else "?inputs=0"
            self._download(f"/jobs/{_seg(job_id)}/results{query}", Path(tmp_name))
            try:
                safe_extract(tmp_name, dest)
            except UnsafeArchive as exc:
                raise UnsafeArchiveError(f"results of job {job_id}: {exc}") from None
        except BaseException:
            if made:
                shutil.rmtree(dest, ignore_errors=True)
            raise
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
        return dest

    # -- changing ---------------------------------------------------------------------

    def cancel(self, job_id: JobId) -> dict[str, Any]:
        return self._json("POST", f"/jobs/{_seg(job_id)}/cancel")

    def tokens(self) -> list[dict[str, Any]]:
        """Your tokens: ``id``, ``label``, ``created_at``, ``expires_at``, ``revoked_at``
        and ``current`` (the one this client uses)."""
        return self._json("GET", "/tokens")["tokens"]

    def revoke_token(self, token_id: int) -> dict[str, Any]:
        """Revoke one of your tokens (an admin: anyone's); the others stay live."""
        return self._json("DELETE", f"/tokens/{int(token_id)}")

    def hold(self, job_id: JobId) -> dict[str, Any]:
        """Keep a queued job from starting until :meth:`release`."""
        return self._json("POST", f"/jobs/{_seg(job_id)}/hold")

    def requeue(self, job_id: JobId, hold: bool = False) -> dict[str, Any]:
        """Put a running job back in the queue (its attempt is stopped and counts as no
        failure); with ``hold``, it then waits for :meth:`release`."""
        return self._json("POST", f"/jobs/{_seg(job_id)}/requeue", json={"hold": hold})

    def release(self, job_id: JobId) -> dict[str, Any]:
        return self._json("POST", f"/jobs/{_seg(job_id)}/release")

    def delete(self, job_id: JobId) -> None:
        self._request("DELETE", f"/jobs/{_seg(job_id)}", expect=(200, 204))

    def wait(
        self,
        job_id: JobId,
        timeout: float | None = None,
        on_update: Callable[[dict[str, Any]], None] | None = None,
        interval: float | None = None,
    ) -> dict[str, Any]:
        """Poll the job until it reaches a terminal state and return it.

        ``on_update(job)`` is called after every poll. Raises :class:`WaitTimeout` after
        ``timeout`` seconds. ``interval`` fixes the poll interval (default: 0.5 s growing to 5 s).
        """
        return polling.until(lambda: self.get(job_id),
                             lambda job: job.get("state") in TERMINAL_STATES,
                             {"id": job_id, "state": "unknown"}, timeout, interval, on_update)

    def as_completed(self, job_ids: Sequence[JobId], timeout: float | None = None,
                     interval: float | None = None) -> Iterator[dict[str, Any]]:
        """Yield each job once it has finished, in the order they finish (as
        ``concurrent.futures.as_completed``). Raises :class:`WaitTimeout` after
        ``timeout`` seconds with the first job still running."""
        pending = list(dict.fromkeys(job_ids))
        outage = polling.Outage()
        for _ in polling.every(timeout, interval):
            with outage:  # as wait(): ride out a controller restart
                for job_id in list(pending):
                    job = self.get(job_id)
                    if job.get("state") in TERMINAL_STATES:
                        pending.remove(job_id)
                        yield job
            if not pending:
                return
        raise WaitTimeout(self.get(pending[0]), timeout or 0.0)

    def map(self, f: Callable[[Any], Any], xs: Iterable[Any], *,
            chunk_size: int | None = None, cpus: int = 1, name: str | None = None,
            timeout: float | None = None, **spec: Any) -> list[Any]:
        """``[f(x) for x in xs]``, computed across the cluster: the inputs in chunks of
        ``chunk_size`` (default: at most 64 chunks), submitted as one job array, a task per
        chunk on ``cpus`` CPUs (``spec`` adds walltime, memory...). Results come back in
        order; the first input on which f raised is named by the
        :class:`jobqueue.mapper.MapError` raised here (the other tasks are cancelled).
        ``f`` must be a top-level function of a module or script: that file is sent to the
        jobs (see ``jobqueue.client.cluster_map``)."""
        from jobqueue.client.cluster_map import cluster_map

        return cluster_map(self, f, xs, chunk_size=chunk_size, cpus=cpus, name=name,
                           timeout=timeout, **spec)

    # -- plumbing ---------------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        expect: Sequence[int] = (200,),
        body: Callable[[], MultipartBody] | None = None,
        idempotency_key: str | None = None,
        **kwargs: Any,
    ) -> requests.Response:
        """Send a request, retrying through an outage for up to ``retry_seconds``: on 503
        always; on other 5xx and lost connections only if repeating it is safe."""
        idempotent = method == "GET" or idempotency_key is not None
        retry_statuses = RETRY_IF_IDEMPOTENT if idempotent else RETRY_ALWAYS
        headers = dict(kwargs.pop("headers", None) or {})
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        backoff = Backoff(budget=self.retry_seconds)
        redialled = False
        while True:
            if body is not None:
                kwargs["data"] = multipart = body()
                headers["Content-Type"] = multipart.content_type
            try:
                response = self._send(method, path, headers=headers, **kwargs)
            except TransportError as exc:
                # A kept-alive connection the server closed as it was reused: once more
                # at once, on a new one (the request never reached the application).
                if exc.dropped and idempotent and not redialled:
                    redialled = True
                    continue
                # Reads give up then (wait() has its own patience); a keyed submit
                # retries, since the controller may be restarting.
                if idempotency_key is None or backoff.expired:
                    raise
                time.sleep(backoff.delay())
                continue
            if response.status_code in retry_statuses and not backoff.expired:
                response.close()
                time.sleep(backoff.delay(retry_after(response.headers.get("Retry-After"))))
                continue
            if response.status_code not in expect:
                raise _api_error(response)
            return response

    def _send(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        url = self.api + path
        try:
            return self.session.request(method, url, timeout=self.timeout, **kwargs)
        except requests.exceptions.SSLError as exc:
            raise TransportError(f"TLS error talking to {self.url}: {_reason(exc)}") from exc
        except requests.exceptions.Timeout as exc:
            raise TransportError(f"{self.url} did not answer within {self.timeout:g} s") from exc
        except requests.exceptions.ConnectionError as exc:
            dropped = bool(exc.args) and isinstance(exc.args[0], urllib3.exceptions.ProtocolError)
            raise TransportError(f"cannot reach {self.url}: {_reason(exc)}",
                                 dropped=dropped) from exc
        except requests.exceptions.RequestException as exc:
            raise TransportError(f"request to {url} failed: {exc}") from exc

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._request(method, path, **kwargs)
        try:
            return response.json()
        except ValueError as exc:
            raise ApiError(
                response.status_code, "bad_response", f"{method} {path} did not return JSON"
            ) from exc

    def _download(self, path: str, target: Path) -> None:
        with self._request("GET", path, stream=True) as response:
            # Write beside the target and rename, so a broken download never looks complete.
            tmp = target.with_name(f".{target.name}.part")
            try:
                with open(tmp, "wb") as out:
                    out.writelines(response.iter_content(chunk_size=1024 * 1024))
                os.replace(tmp, target)
            except requests.exceptions.RequestException as exc:
                raise TransportError(f"download of {path} was interrupted: {exc}") from exc
            finally:
                if tmp.exists():
                    tmp.unlink()


def _seg(job_id: JobId) -> str:
    return quote(str(job_id), safe="")


def _api_error(response: requests.Response) -> ApiError:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and "error" in body:
        return ApiError(
            response.status_code, str(body["error"]), str(body.get("message") or body["error"])
        )
    text = " ".join(response.text.split())[:200] if response.text else ""
    message = text or response.reason or "no details"
    return ApiError(response.status_code, f"http_{response.status_code}", message)


def _reason(exc: Exception) -> str:
    # requests nests the useful part (e.g. "Connection refused") several exceptions deep.
    inner: BaseException | None = exc
    while inner is not None and inner.args and isinstance(inner.args[0], BaseException):
        inner = inner.args[0]
    for candidate in (getattr(inner, "reason", None), inner):
        if candidate is not None:
            text = str(candidate)
            if "]" in text and "Errno" in text:
                return text.split("]", 1)[1].strip().rstrip("'\")")
            return text
    return str(exc)
