"""`jobqueue-worker --one-job ID`: run one job that a batch scheduler (Slurm) started on
this node, then exit. The batch script of the slurm backend runs it.

It takes the job's lease by the scheduler's id for this attempt (`SLURM_JOB_ID`), then
runs the attempt as the daemon runs the jobs it claims (`worker/attempt.py`: fetch,
run, heartbeats, upload), through the node's runner (the confined slots of
the systemd runner, shared by every job on the node: each takes a free slot under a
lock). The confinement self-check runs once per boot of the node, not per job (it takes
a slot and a Python start: seconds under emulation); a deploy removes its mark so
that the next job checks again. A SIGTERM from the scheduler (its time limit, a
preemption, a shutdown) stops the job: cancelled if its owner asked for that, else
handed back to be requeued.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import signal
import threading
from pathlib import Path

import requests

from jobqueue.worker.attempt import HAND_BACK_SECONDS, ActiveJob, Attempts, retrying
from jobqueue.worker.controller_api import ControllerApi, ControllerError, LeaseLost
from jobqueue.worker.runners import make_runner
from jobqueue.worker.settings import WorkerSettings

log = logging.getLogger("jobqueue.worker")

# Where a scheduler says which of its jobs this is.
SCHEDULER_JOB_ID = ("SLURM_JOB_ID",)
# In the node's work directory: the boot id of the last passed confinement check.
CONFINEMENT_CHECKED = "confinement-checked"
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
STOP_CHECK_SECONDS = 0.5


def scheduler_job_id() -> str:
    for name in SCHEDULER_JOB_ID:
        if os.environ.get(name):
            return os.environ[name]
    raise RuntimeError("--one-job runs inside a batch scheduler's job: "
                       f"none of {', '.join(SCHEDULER_JOB_ID)} is set")


class OneJob:
    def __init__(self, settings: WorkerSettings, job_id: str, external_id: str,
                 api=None, runner=None) -> None:
        # A work directory of its own: other jobs on the node run beside this one.
        self.node_dir = Path(settings.work_dir)
        self.settings = dataclasses.replace(
            settings, work_dir=str(self.node_dir / f"scheduled-{external_id}"))
        self.work_dir = Path(self.settings.work_dir)
        self.api = api or ControllerApi(settings.controller_url, settings.token,
                                        settings.ca_bundle)
        self.runner = runner or make_runner(self.settings, slot_locks=self.node_dir)
        self.stopping = threading.Event()
        self.attempts = Attempts(self.settings, self.api, self.runner, self.stopping)
        self.job_id = job_id
        self.external_id = external_id

    def stop(self, *_args) -> None:
        self.stopping.set()

    def serve(self) -> int:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._check_confinement()
            job = retrying(
                self.api, f"job {self.job_id}: start",
                lambda: self.api.start(self.job_id, self.settings.name, self.external_id),
                self.settings.retry_seconds)
        except LeaseLost as exc:  # cancelled meanwhile, or not this attempt's any more
            log.info("job %s: not started: %s", self.job_id, exc)
            return 0
        except (ControllerError, requests.RequestException) as exc:
            log.error("job %s: could not start: %s", self.job_id, exc)
            return 1
        active, thread = self.attempts.start(job)
        self.attempts.start_loops()
        # Back as soon as the attempt ends (the node's CPUs are the scheduler's until this
        # process exits); a signal from the scheduler is seen within STOP_CHECK_SECONDS.
        while thread.is_alive():
            thread.join(STOP_CHECK_SECONDS)
            if self.stopping.is_set() and thread.is_alive():
                self._stop_for_scheduler(active)
                break
        thread.join()
        shutil.rmtree(self.work_dir, ignore_errors=True)
        return 0 if active.reported else 1

    def _check_confinement(self) -> None:
        mark = self.node_dir / CONFINEMENT_CHECKED
        boot = BOOT_ID.read_text().strip()
        with contextlib.suppress(OSError):
            if mark.read_text() == boot:
                return
        self.runner.self_check()
        partial = mark.with_name(f"{mark.name}.{os.getpid()}")
        partial.write_text(boot)
        partial.replace(mark)  # whole or not at all: jobs start side by side

    def _stop_for_scheduler(self, job: ActiveJob) -> None:
        """The scheduler is ending this job: cancelled if its owner asked, else back."""
        try:
            cancel = self.api.heartbeat(job.id, job.lease)
        except (LeaseLost, ControllerError, requests.RequestException):
            cancel = False
        if cancel:
            self.attempts.stop(job, "cancelled")
        else:
            self.attempts.hand_back_all("its scheduler job is ending", HAND_BACK_SECONDS)


def run(settings: WorkerSettings, job_id: str) -> int:
    worker = OneJob(settings, job_id, scheduler_job_id())
    signal.signal(signal.SIGTERM, worker.stop)
    signal.signal(signal.SIGINT, worker.stop)
    return worker.serve()
