"""The worker daemon: claim jobs from the controller and run each through a Runner
(`jobqueue-worker`, started by `jobqueue.worker.main`).

Threads: one claimer (a single long-poll connection, or one wait in the controller's
waiting room, whatever the number of slots), and those of the running attempts
(`worker/attempt.py`: one per job, and one each for heartbeats, live logs and the lease
fence, shared by all jobs). The main thread only
waits for SIGTERM/SIGINT and then hands back or finishes running jobs, so no job is
ever dropped silently.

A controller restart or a database outage of a few seconds costs no job an attempt:
every call is retried with a bounded backoff (claims with the same claim id, so a
claim whose answer was lost returns its job). No job runs twice at the same time: its
processes die with the worker (see `tether`), a restarted worker hands back what its
predecessor was running, and a worker that cannot renew a job's lease stops the job
before the lease can run out and the job start again elsewhere.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
import threading
import time
import uuid
from pathlib import Path

import requests

from jobqueue.backoff import Backoff
from jobqueue.worker.attempt import HAND_BACK_SECONDS, LEASE_FILE, Attempts
from jobqueue.worker.controller_api import TRANSIENT, ControllerApi, ControllerError
from jobqueue.worker.runner import Runner
from jobqueue.worker.runners import make_runner
from jobqueue.worker.settings import WorkerSettings

log = logging.getLogger("jobqueue.worker")

CLAIM_ID_FILE = "claim-id"  # the id of the claim in flight, for a restarted worker
CLAIM_BACKOFF_CAP = 10.0


class Worker:
    def __init__(self, settings: WorkerSettings, api: ControllerApi | None = None,
                 runner: Runner | None = None):
        self.settings = settings
        self.api = api or ControllerApi(settings.controller_url, settings.token,
                                        settings.ca_bundle)
        self.work_dir = Path(settings.work_dir)
        self.runner = runner or make_runner(settings)
        self.total_cpus = settings.total_cpus
        self.window = settings.window()
        self.stopping = threading.Event()
        self.attempts = Attempts(settings, self.api, self.runner, self.stopping)
        self.claim_id = ""

    # -- lifecycle ------------------------------------------------------------------------

    def serve(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.runner.recover()
        self._hand_back_leftovers()
        # Before any claim: a worker whose confinement is not in force runs nothing.
        self.runner.self_check()
        log.info("worker %s: %d CPUs, controller %s", self.settings.name, self.total_cpus,
                 self.settings.controller_url)
        claimer = threading.Thread(target=self._claim_loop, name="claimer", daemon=True)
        claimer.start()
        self.attempts.start_loops()
        while not self.stopping.wait(1.0):
            pass
        log.info("stopping (%s running job(s), on_shutdown=%s)", len(self.attempts.active),
                 self.settings.on_shutdown)
        with self.attempts.cond:
            self.attempts.cond.notify_all()
        if self.settings.on_shutdown == "requeue":
            self.attempts.hand_back_all("the worker is shutting down", HAND_BACK_SECONDS)
        self.attempts.join()
        claimer.join(self.settings.claim_wait_seconds + 35)
        log.info("stopped")

    def stop(self, *_args) -> None:
        self.stopping.set()

    def _hand_back_leftovers(self) -> None:
        """What a killed predecessor left. Its jobs' processes died with it (the tether);
        hand the jobs back instead of leaving them to wait out their leases (retried
        through an outage, and before any claim, which could otherwise get one of them
        back while it is being handed back), resume its claim in flight (a job claimed
        as it died comes back to this worker), and remove the rest."""
        claim_id = self.work_dir / CLAIM_ID_FILE
        self.claim_id = claim_id.read_text().strip() if claim_id.is_file() else ""
        deadline = time.monotonic() + self.settings.retry_seconds
        for lease in sorted(self.work_dir.glob(f"*.meta/{LEASE_FILE}")):
            job_id = lease.parent.name.split(".")[0]  # <job id>.<attempt>.meta
            log.info("job %s: left running by the previous worker; handing it back", job_id)
            self.attempts.release(job_id, lease.read_text().strip(),
                                  max(0.0, deadline - time.monotonic()))
        for path in self.work_dir.iterdir():
            if path.name != CLAIM_ID_FILE:
                shutil.rmtree(path, ignore_errors=True)
        if not self.claim_id:
            self._next_claim_id()

    def _next_claim_id(self) -> None:
        """A new claim: noted on disk before it is sent, for a restarted worker."""
        self.claim_id = uuid.uuid4().hex
        (self.work_dir / CLAIM_ID_FILE).write_text(self.claim_id)

    # -- claiming -------------------------------------------------------------------------

    @property
    def capacity(self) -> dict:
        """What the worker has in all, for the controller to fit jobs to as they end."""
        memory = self.settings.total_memory
        quarantined = self.runner.set_aside()
        environments = sorted(self.settings.environments)
        # Only what the worker has: a controller older than a field refuses the claim.
        return {"cpus": self.total_cpus, "jobs": self.runner.capacity} | (
            {"memory": memory} if memory is not None else {}) | (
            {"quarantined": quarantined} if quarantined else {}) | (
            {"environments": environments} if environments else {})

    def _free_cpus(self) -> int:
        active = self.attempts.active
        if self.runner.capacity is not None and len(active) >= self.runner.capacity:
            return 0  # every slot is taken
        return self.total_cpus - sum(job.cpus for job in active.values())

    def _claim_loop(self) -> None:
        backoff = Backoff(first=1.0, cap=CLAIM_BACKOFF_CAP)
        while not self.stopping.is_set():
            now = dt.datetime.now().time()
            if self.window.must_end(now) and self.attempts.active:
                self.attempts.hand_back_all("outside the worker's service window",
                                   self.settings.retry_seconds)
            if not self.window.accepting(now):
                self.stopping.wait(30)
                continue
            with self.attempts.cond:
                while self._free_cpus() <= 0 and not self.stopping.is_set():
                    self.attempts.cond.wait()
                free = self._free_cpus()
            if self.stopping.is_set():
                break
            try:
                job = self.api.claim(self.settings.name, free, self.settings.claim_wait_seconds,
                                     self.claim_id, self.capacity)
                if job is None and self.api.wait_ticket:
                    self.api.wait()
            except (requests.RequestException, ControllerError) as exc:
                # Retried with the same claim id: if this claim took a job, it comes back.
                delay = backoff.delay(getattr(exc, "retry_after", None))
                log.warning("claim failed: %s; retrying in %.1f s", exc, delay)
                self._wait_for_controller(delay, isinstance(exc, TRANSIENT))
                continue
            backoff.reset()
            if job is not None:
                # Checked and started under the lock the shutdown's hand-back takes: a job
                # claimed as the worker stops is either handed back there or released here.
                with self.attempts.cond:
                    started = not self.stopping.is_set()
                    if started:
                        self.attempts.start(job)
                if not started:
                    self.attempts.release(job["id"], job["lease"], HAND_BACK_SECONDS)
                    break
            self._next_claim_id()

    def _wait_for_controller(self, delay: float, outage: bool) -> None:
        """Wait `delay`, or less if the worker stops or, after an outage, any other call
        (a heartbeat, an upload) gets an answer: the controller is back, claim now."""
        answered = self.api.last_answer
        deadline = time.monotonic() + delay
        while not self.stopping.is_set() and time.monotonic() < deadline:
            if outage and self.api.last_answer != answered:
                return
            self.stopping.wait(min(0.1, max(0.0, deadline - time.monotonic())))
