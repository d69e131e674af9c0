"""One job's attempt on this worker, from its lease to its reported outcome (the inputs
fetched, the run through a Runner, the outcome and results uploaded), and the loops all
running attempts share: heartbeats that renew their leases, their logs streamed to the
controller as they grow, and the fence that stops a job whose lease could run out.

The daemon (`worker/daemon.py`) starts attempts for the jobs it claims; `--one-job`
(`worker/one_job.py`) for the one job a batch scheduler started. Neither reaches
inside: they start attempts, stop or hand them back, and wait for them.
"""

from __future__ import annotations

import logging
import shutil
import signal
import stat
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import requests

from jobqueue.archive import UnsafeArchive, safe_extract
from jobqueue.backoff import Backoff
from jobqueue.worker.controller_api import (
    TRANSIENT,
    ControllerApi,
    ControllerError,
    LeaseLost,
)
from jobqueue.worker.runner import Limits, Runner, RunningProcess, RunRequest, Usage, Workspace
from jobqueue.worker.settings import WorkerSettings

log = logging.getLogger("jobqueue.worker")

MAX_INPUT_FILES = 100_000
MAX_INPUT_BYTES = 1 << 40  # the controller already capped the upload
LEASE_FILE = "lease"  # in a job's meta directory: what a restarted worker hands back
HAND_BACK_SECONDS = 20.0  # how long a hand-back is retried when the worker stops
LOGS = ("stdout", "stderr")
LOG_CHUNK = 1 << 20  # bytes of a log in one append (the controller takes up to 4 MiB)
LOG_ROUND = 8 << 20  # bytes of one log sent in one round, so that no job holds up others
T = TypeVar("T")


# Stop reasons after which the worker no longer holds the job's lease.
LEASE_GIVEN_UP = frozenset({"lease_lost", "handed_back"})


@dataclass
class ActiveJob:
    id: str
    lease: str
    cpus: int
    spec: dict
    process: RunningProcess | None = None
    reported: bool = False  # its result is uploaded: the lease ends with it
    lease_seconds: float = 60.0
    # When the controller last renewed the lease, at the latest (monotonic clock).
    renewed: float = field(default_factory=time.monotonic)
    # Why the job is being stopped from outside: cancelled, timed_out, lease_lost, handed_back.
    stop_reason: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Where the running job's logs are, and how much of each the controller has.
    workspace: Workspace | None = None
    request: RunRequest | None = None
    log_sent: dict[str, int] = field(default_factory=lambda: dict.fromkeys(LOGS, 0))
    logs_done: set[str] = field(default_factory=set)  # full, refused, or the lease is over
    # Names this attempt's workspace and meta dir: a job handed back can come straight
    # back to this worker while the earlier attempt's thread still cleans up its own.
    attempt: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    # This attempt's logs, archives and lease file, outside the job's reach.
    meta_dir: Path | None = None


# A job killed by the kernel for an rlimit.
SIGNAL_LIMITS = {signal.SIGXCPU: "cpu", signal.SIGXFSZ: "output"}
LIMIT_NAMES = {"memory": "memory limit", "output": "output limit", "cpu": "CPU time limit",
               "walltime": "wall time"}


def _describe(state: str, code: int | None, limit: str | None = None) -> str:
    if state == "timed_out":
        return "killed: wall time exceeded"
    if state == "cancelled":
        return "cancelled by its owner"
    if limit is not None:
        return f"killed: {LIMIT_NAMES.get(limit, limit)} exceeded"
    if code is not None and code < 0:
        return f"killed by signal {signal.Signals(-code).name}"
    return f"exited with status {code}"


def retrying(api: ControllerApi, what: str, call: Callable[[], T], budget: float) -> T:
    """`call()`, retried through transient failures (controller restarting, database
    down) with a bounded backoff for at most `budget` seconds."""
    backoff = Backoff(budget=budget)
    while True:
        try:
            return call()
        except TRANSIENT as exc:
            if backoff.expired:
                raise
            delay = backoff.delay(getattr(exc, "retry_after", None))
            log.warning("%s failed: %s; retrying in %.1f s", what, exc, delay)
            _pause(api, delay)


def heartbeat_every(heartbeat_seconds: float, lease_seconds: float) -> float:
    """How often running jobs' leases are renewed: the setting, and at least three times
    a lease."""
    return min(heartbeat_seconds, lease_seconds / 3)


def fence(lease_seconds: float, kill_grace_seconds: float) -> tuple[float, float]:
    """How long after its last renewal a job whose lease is not renewed is stopped, and
    the grace it then gets: it is gone before its lease can run out."""
    grace = min(kill_grace_seconds, lease_seconds / 4)
    margin = min(grace + lease_seconds / 10, lease_seconds / 2)
    return lease_seconds - margin, grace


def _pause(api: ControllerApi, delay: float) -> None:
    """Wait `delay`, or less once another call gets an answer: the outage is over."""
    answered = api.last_answer
    deadline = time.monotonic() + delay
    while time.monotonic() < deadline and api.last_answer == answered:
        time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))


class Attempts:
    """The attempts running on this worker (`active`, by job id and attempt, guarded by
    `cond`)."""

    def __init__(self, settings: WorkerSettings, api: ControllerApi, runner: Runner,
                 stopping: threading.Event):
        self.settings = settings
        self.api = api
        self.runner = runner
        self.work_dir = Path(settings.work_dir)
        self.stopping = stopping  # set: the loops end once no attempt is left
        self.active: dict[tuple[str, str], ActiveJob] = {}
        self.cond = threading.Condition()
        self.threads: list[threading.Thread] = []
        self.heartbeat_interval = settings.heartbeat_seconds

    def start_loops(self) -> None:
        for loop in (self._heartbeat_loop, self._log_loop, self._fence_loop):
            threading.Thread(target=loop, name=loop.__name__.strip("_"), daemon=True).start()

    def join(self) -> None:
        for thread in list(self.threads):
            thread.join()

    def start(self, job: dict) -> tuple[ActiveJob, threading.Thread]:
        active = ActiveJob(job["id"], job["lease"], job["cpus"], job,
                           lease_seconds=job.get("lease_seconds", 60))
        self.heartbeat_interval = heartbeat_every(self.settings.heartbeat_seconds,
                                                  active.lease_seconds)
        # On disk before this returns (and the daemon's next claim id replaces the one
        # that got the job): a restarted worker then hands this job back, never loses it.
        active.meta_dir = self.work_dir / f"{active.id}.{active.attempt}.meta"
        active.meta_dir.mkdir(mode=0o700)
        (active.meta_dir / LEASE_FILE).write_text(active.lease)
        with self.cond:
            # An earlier attempt of the job still here lost its lease when the controller
            # gave the job out again (its owner requeued it): it stops now.
            earlier = [j for j in self.active.values() if j.id == active.id]
            self.active[active.id, active.attempt] = active
        for job in earlier:
            threading.Thread(target=self.stop, args=(job, "lease_lost"), daemon=True).start()
        thread = threading.Thread(target=self._run, args=(active,), name=f"job-{active.id}")
        self.threads = [t for t in self.threads if t.is_alive()] + [thread]
        thread.start()
        return active, thread

    # -- stopping jobs from outside -------------------------------------------------------

    def stop(self, job: ActiveJob, reason: str, grace: float | None = None) -> None:
        with job.lock:
            if job.stop_reason is not None:
                return
            job.stop_reason = reason
            process = job.process
        if process is not None:
            process.kill(self.settings.kill_grace_seconds if grace is None else grace)

    def hand_back_all(self, why: str, budget: float) -> None:
        with self.cond:
            jobs = list(self.active.values())
        deadline = time.monotonic() + budget
        for job in jobs:
            log.info("job %s: handing back (%s)", job.id, why)
            self.stop(job, "handed_back")
            self.release(job.id, job.lease, max(0.0, deadline - time.monotonic()))

    def release(self, job_id: str, lease: str, budget: float | None = None,
                 error: str | None = None) -> None:
        """Hand the job back; with `error`, as a failed attempt (it counts)."""
        budget = self.settings.retry_seconds if budget is None else budget
        try:
            retrying(self.api, f"job {job_id}: hand-back",
                     lambda: self.api.release(job_id, lease, error), budget)
        except LeaseLost:
            pass  # already finished, requeued or handed back by an earlier try
        except (ControllerError, requests.RequestException) as exc:
            # The lease will expire and the controller requeues the job.
            log.warning("job %s: could not hand back (%s); its lease will expire", job_id, exc)

    def _heartbeat_loop(self) -> None:
        backoff = Backoff()
        while not (self.stopping.is_set() and not self.active):
            # Until its outcome is reported: a job stopped at its wall time or by its
            # owner keeps its lease while its slot packs its results, however long
            # that takes, or the controller would start it again.
            with self.cond:
                jobs = [j for j in self.active.values()
                        if j.stop_reason not in LEASE_GIVEN_UP and not j.reported]
            failed = None
            for job in jobs:
                sent = time.monotonic()
                try:
                    # A heartbeat slower than its interval is as good as lost.
                    if self.api.heartbeat(job.id, job.lease,
                                          timeout=max(2.0, self.heartbeat_interval)) \
                            and job.stop_reason is None:
                        log.info("job %s: cancelled by its owner", job.id)
                        threading.Thread(target=self.stop, args=(job, "cancelled"),
                                         daemon=True).start()
                except LeaseLost:
                    if job.reported:
                        continue  # the upload finished the job meanwhile
                    log.warning("job %s: lease lost; stopping it", job.id)
                    threading.Thread(target=self.stop, args=(job, "lease_lost"),
                                     daemon=True).start()
                except (requests.RequestException, ControllerError) as exc:
                    log.warning("job %s: heartbeat failed: %s", job.id, exc)
                    failed = exc
                else:
                    job.renewed = sent
            if failed is None:
                backoff.reset()
                time.sleep(self.heartbeat_interval)
            else:  # try again soon: the lease runs out while the controller is away
                time.sleep(min(backoff.delay(getattr(failed, "retry_after", None)),
                               self.heartbeat_interval))

    def _log_loop(self) -> None:
        """Send running jobs' new log bytes to the controller, so that their owners can
        read them as they grow (the result upload brings the whole logs in the end)."""
        while not (self.stopping.is_set() and not self.active):
            with self.cond:
                jobs = [j for j in self.active.values() if j.process is not None
                        and not j.reported and len(j.logs_done) < len(LOGS)]
            for job in jobs:
                self._send_logs(job)
            time.sleep(self.settings.log_seconds)

    def _send_logs(self, job: ActiveJob) -> None:
        for name in LOGS:
            sent = 0
            while name not in job.logs_done and sent < LOG_ROUND and not job.reported:
                offset = job.log_sent[name]
                try:
                    data = job.workspace.read_log(job.request, name, offset, LOG_CHUNK)
                except OSError as exc:  # not a file the runner trusts, or cleaned up
                    log.debug("job %s: cannot read its %s: %s", job.id, name, exc)
                    break
                if not data:
                    break
                try:
                    stored = self.api.append_log(job.id, job.lease, name, offset, data,
                                                 timeout=max(5.0, self.heartbeat_interval))
                except LeaseLost:
                    job.logs_done.update(LOGS)  # finished, or no longer this worker's
                    return
                except TRANSIENT as exc:
                    log.debug("job %s: sending its %s failed: %s", job.id, name, exc)
                    return  # the next round tries again
                except ControllerError as exc:
                    log.warning("job %s: its %s is not streamed further: %s", job.id, name, exc)
                    job.logs_done.add(name)
                    break
                size = stored.get("size")
                if stored.get("cut") or not isinstance(size, int) or size <= offset:
                    job.logs_done.add(name)  # at the output limit: the controller keeps no more
                    break
                job.log_sent[name] = size
                sent += size - offset

    def _fence_loop(self) -> None:
        """Stop jobs whose lease could not be renewed for so long that it may run out
        before they are stopped: the controller would then start them elsewhere while
        they still run here (the worker is cut off from the controller, not dead)."""
        while not (self.stopping.is_set() and not self.active):
            with self.cond:
                jobs = [j for j in self.active.values()
                        if j.stop_reason is None and not j.reported]
            for job in jobs:
                stop_after, grace = fence(job.lease_seconds, self.settings.kill_grace_seconds)
                unrenewed = time.monotonic() - job.renewed
                if unrenewed < stop_after:
                    continue
                if job.process is not None and job.process.wait(0) is not None:
                    continue  # it has ended: its upload goes on and may still make it
                log.warning("job %s: lease not renewed for %.1f s; stopping the job before "
                            "it runs out", job.id, unrenewed)
                threading.Thread(target=self.stop, args=(job, "lease_lost", grace),
                                 daemon=True).start()
            time.sleep(0.25)

    # -- running one job ------------------------------------------------------------------

    def _run(self, job: ActiveJob) -> None:
        meta_dir = job.meta_dir
        workspace: Workspace | None = None
        hand_back, hand_back_error = False, None
        try:
            workspace = self.runner.workspace(f"{job.id}-{job.attempt}")
            self._fetch_input(job, workspace.job_dir, meta_dir)
            request = self._request(job, workspace.job_dir, meta_dir)
            job.workspace, job.request = workspace, request
            code = self._execute(job, workspace, request)
            if job.stop_reason in LEASE_GIVEN_UP:
                return
            self._report(job, code, workspace, request, meta_dir)
        except LeaseLost:
            log.warning("job %s: lease lost", job.id)
        except Exception as exc:  # whatever broke, the job goes back, never silently lost
            if isinstance(exc, (UnsafeArchive, OSError, ControllerError,
                                requests.RequestException)):
                log.error("job %s: %s; handing it back", job.id, exc)
            else:
                log.exception("job %s: unexpected error; handing it back", job.id)
            if job.stop_reason is None:
                self.stop(job, "handed_back")
                hand_back = True
                # The worker's own stop (its slots refuse to start then) is no fault of
                # the job's: that attempt does not count.
                if not self.stopping.is_set():
                    hand_back_error = f"{type(exc).__name__}: {exc}"
        finally:
            if workspace is not None:
                workspace.close()
            shutil.rmtree(meta_dir, ignore_errors=True)
            with self.cond:
                del self.active[job.id, job.attempt]
                self.cond.notify_all()
        if hand_back:
            # Released once this attempt is cleaned up, as the job may come back here;
            # with its error, a failed attempt: the same error every time must not
            # loop for ever.
            self.release(job.id, job.lease, error=hand_back_error)

    def _fetch_input(self, job: ActiveJob, job_dir: Path, meta_dir: Path) -> None:
        with tempfile.TemporaryFile(dir=meta_dir) as archive:
            def download() -> None:
                archive.seek(0)
                archive.truncate()
                self.api.download_input(job.id, job.lease, archive)

            retrying(self.api, f"job {job.id}: input download", download,
                     self.settings.retry_seconds)
            archive.seek(0)
            # One pass: a refused archive fails the attempt, whose directory goes.
            safe_extract(archive, job_dir, MAX_INPUT_BYTES, MAX_INPUT_FILES,
                         all_or_nothing=False)

    def _request(self, job: ActiveJob, job_dir: Path, meta_dir: Path) -> RunRequest:
        spec = job.spec
        venv = self._environment(spec.get("environment"))
        # Defaults the job may change (--export), then what says where and who it is.
        env = {
            "PATH": (f"{venv}/bin:" if venv else "") + "/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "PYTHONUNBUFFERED": "1",
            "OMP_NUM_THREADS": str(job.cpus),
        } | ({"VIRTUAL_ENV": venv} if venv else {}) | spec.get("env", {}) | {
            "HOME": str(job_dir),
            "TMPDIR": str(job_dir),
            "JOBQUEUE_JOB_ID": job.id,
            "JOBQUEUE_CPUS": str(job.cpus),
        }
        if array := spec.get("array"):  # a task of an array: which one, as SLURM_ARRAY_*
            env["JOBQUEUE_ARRAY_ID"] = str(array["id"])
            env["JOBQUEUE_ARRAY_TASK_ID"] = str(array["index"])
            # A controller before reruns sends no task_count: its arrays' size.
            env["JOBQUEUE_ARRAY_TASK_COUNT"] = str(array.get("task_count", array["size"]))
        limits = Limits(walltime=spec["walltime"],
                        cpu_seconds=spec["walltime"] * job.cpus + 5,
                        memory_bytes=spec["memory"] << 20,
                        max_file_size=min(self.settings.max_file_size, spec["output_limit"] << 20))
        python = f"{venv}/bin/python" if venv else self.settings.python
        argv = [*self._command(job_dir, spec["entry"], python), *spec["args"]]
        return RunRequest(job.id, job_dir, argv,
                          limits, meta_dir / "stdout", meta_dir / "stderr", env,
                          output_limit=spec["output_limit"] << 20, cpus=job.cpus,
                          environment=spec.get("environment"))

    def _environment(self, name: str | None) -> str | None:
        """The directory of the software environment `name` (None: the worker's own)."""
        if name is None:
            return None
        if name not in self.settings.environments:
            raise RuntimeError(f"this worker does not offer the environment {name!r}")
        return self.settings.environments[name]

    @staticmethod
    def _command(job_dir: Path, entry: str, python: str) -> list[str]:
        """A .py entry runs with `python`; any other is run itself (a script with a #!
        line, a program), made executable as uploads carry no modes."""
        if entry.endswith(".py"):
            return [python, entry]
        path = job_dir / entry
        mode = path.lstat().st_mode
        if stat.S_ISREG(mode):
            path.chmod(stat.S_IMODE(mode) | stat.S_IXUSR)
        return [f"./{entry}"]

    def _execute(self, job: ActiveJob, workspace: Workspace, request: RunRequest) -> int | None:
        spec = job.spec
        with job.lock:
            if job.stop_reason is not None:
                return None
            job.process = workspace.start(request)
        log.info("job %s: started (%d CPUs)", job.id, job.cpus)
        code = job.process.wait(spec["walltime"])
        if code is None:
            self.stop(job, "timed_out")
            code = job.process.wait(None)
        return code

    def _report(self, job: ActiveJob, code: int | None, workspace: Workspace,
                request: RunRequest, meta_dir: Path) -> None:
        results: Path | None = meta_dir / "results.tar.gz"
        outcome = workspace.collect(request, results)
        limit = outcome.limit or SIGNAL_LIMITS.get(-code if code else 0)
        if job.stop_reason == "timed_out":
            limit = "walltime"
        state = job.stop_reason or ("succeeded" if code == 0 and not limit else "failed")
        message = _describe(state, code, limit)
        size = outcome.results_bytes
        if limit == "output":
            results = None
        elif size >= request.output_limit:  # a file cut at the limit (RLIMIT_FSIZE) reached it
            state, results, limit = "failed", None, "output"
            message = (f"output of {size} bytes exceeds the job's limit of "
                       f"{job.spec['output_limit']} MiB")
        self._upload(job, state, code, message, results, meta_dir, limit,
                     _accounting(job.process, code))
        log.info("job %s: %s (%s)", job.id, state, message)

    def _upload(self, job: ActiveJob, state: str, code: int | None, message: str,
                results: Path | None, meta_dir: Path, limit: str | None = None,
                accounting: dict | None = None) -> None:
        """Upload until the controller takes it; a retry of a stored upload is harmless.
        Heartbeats go on meanwhile, so the lease holds through an outage. Results the
        controller refuses (4xx: a file name it does not accept, over its upload cap)
        end the job failed with its reason, logs and files left out."""
        def upload(state=state, message=message, results=results, logs=meta_dir) -> dict:
            return self.api.upload_result(job.id, job.lease, state, code, message, results,
                                          logs / "stdout", logs / "stderr", limit, accounting)
        try:
            retrying(self.api, f"job {job.id}: upload", upload, self.settings.retry_seconds)
        except LeaseLost:
            raise
        except ControllerError as exc:
            if isinstance(exc, TRANSIENT):
                raise
            log.warning("job %s: results refused: %s", job.id, exc)
            reason = f"results refused by the controller: {exc}"
            empty = meta_dir / "refused"
            empty.mkdir(exist_ok=True)
            for name in ("stdout", "stderr"):
                (empty / name).write_bytes(b"")
            retrying(self.api, f"job {job.id}: upload",
                     lambda: upload("failed", reason, None, empty), self.settings.retry_seconds)
        job.reported = True


def _accounting(process: RunningProcess | None, code: int | None) -> dict:
    """The attempt's accounting as the result upload carries it."""
    usage = process.usage() if process is not None else Usage()
    return usage.as_json() | {"signal": -code if code is not None and code < 0 else None}
