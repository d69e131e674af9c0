"""A remote cluster's own Slurm as the runner: `runner = "slurm"`.

A worker daemon on a cluster's submit host claims at most `slurm_max_jobs` jobs from a
dispatcher (so that other clusters share the load) and runs each as a Slurm job of
that cluster: the job's CPUs, memory and wall time become the Slurm job's, its
environment is written into the batch script (`--export=NIL`: nothing of the worker's
own environment, its token included, reaches the job). The daemon keeps the leases
alive and uploads the results as with any runner. The job directory must be on a
filesystem the cluster's nodes share with the submit host (`work_dir`), as usual on
HPC clusters. Confinement is the cluster's own (Slurm's cgroups, the worker's uid);
the `systemd` runner is the one that confines jobs on hosts of ours.

The worker watches each Slurm job with `scontrol show job` (its state and exit code
while slurmctld remembers it); a restarted worker cancels the Slurm jobs its
predecessor left (their attempts were handed back), named `jqw-<job id>`.
"""

from __future__ import annotations

import contextlib
import getpass
import math
import shlex
import time
from pathlib import Path

from jobqueue import slurm_command
from jobqueue.scheduler_states import ENDED, LIMITS, slurm_outcome
from jobqueue.slurm_command import SlurmCommandError
from jobqueue.worker.runner import (
    LocalWorkspace,
    Outcome,
    Runner,
    RunningProcess,
    RunRequest,
    fingerprint,
)
from jobqueue.worker.settings import WorkerSettings

JOB_NAME_PREFIX = "jqw-"
POLL_SECONDS = 1.0


class SlurmRunner(Runner):
    def __init__(self, settings: WorkerSettings):
        self.settings = settings
        self.work_dir = Path(settings.work_dir)
        self.capacity = settings.slurm_max_jobs

    def command(self, name: str, *args: str, stdin: str | None = None) -> str:
        return slurm_command.run(name, *args, bin_dir=self.settings.slurm_bin_dir,
                                 stdin=stdin)

    def recover(self) -> None:
        out = self.command("squeue", "--noheader", f"--user={getpass.getuser()}",
                           "--states=pending,running,suspended", "--format=%i|%j")
        left = [eid for eid, _, name in (line.partition("|") for line in out.split())
                if name.startswith(JOB_NAME_PREFIX)]
        if left:
            self.command("scancel", *left)

    def self_check(self) -> None:
        try:
            self.command("sinfo", "--noheader", "--format=%P")
        except SlurmCommandError as exc:
            raise RuntimeError(f"the cluster's Slurm does not answer: {exc}") from None

    def workspace(self, name: str) -> SlurmWorkspace:
        return SlurmWorkspace(self, self.work_dir / name)


def batch_script(request: RunRequest) -> str:
    """The job's environment and command; its rlimits for open files and file size
    (Slurm's cgroups limit CPU, memory and time)."""
    exports = "".join(f"export {key}={shlex.quote(value)}\n"
                      for key, value in sorted(request.env.items()))
    limits = request.limits
    return (f"#!/bin/sh\n{exports}ulimit -n {limits.open_files}\n"
            f"ulimit -f {max(1, limits.max_file_size // 1024)}\n"
            f"exec {shlex.join(request.argv)}\n")


class SlurmWorkspace(LocalWorkspace):
    """The job directory as with the local runner (the same collection of results); the
    job itself a Slurm job."""

    def __init__(self, runner: SlurmRunner, job_dir: Path):
        super().__init__(runner, job_dir)
        self.job: SlurmJob | None = None

    def start(self, request: RunRequest) -> RunningProcess:
        self.inputs = fingerprint(self.job_dir)
        settings = self.runner.settings
        minutes = math.ceil(request.limits.walltime / 60) + 1  # the worker stops it first
        args = ["--parsable", f"--job-name={JOB_NAME_PREFIX}{request.job_id}", "--nodes=1",
                "--ntasks=1", f"--cpus-per-task={request.cpus}",
                f"--mem={max(1, request.limits.memory_bytes >> 20)}", f"--time={minutes}",
                "--export=NIL", "--no-requeue", f"--chdir={self.job_dir}",
                f"--output={request.stdout}", f"--error={request.stderr}"]
        if settings.slurm_partition:
            args.append(f"--partition={settings.slurm_partition}")
        out = self.runner.command("sbatch", *args, stdin=batch_script(request))
        self.job = SlurmJob(self.runner, out.strip().split(";")[0])
        return self.job

    def collect(self, request: RunRequest, results: Path) -> Outcome:
        outcome = super().collect(request, results)
        state = self.job.state if self.job else ""
        return Outcome(outcome.results_bytes, LIMITS.get(slurm_outcome(state)[0]))

    def close(self) -> None:
        if self.job is not None and self.job.code is None:
            with contextlib.suppress(SlurmCommandError):
                self.runner.command("scancel", self.job.id)
        super().close()


class SlurmJob(RunningProcess):
    def __init__(self, runner: SlurmRunner, external_id: str):
        self.runner = runner
        self.id = external_id
        self.state = ""
        self.code: int | None = None

    def _ended(self) -> bool:
        try:
            out = self.runner.command("scontrol", "show", "job", "--oneliner", self.id)
        except SlurmCommandError as exc:
            if "Invalid job id" not in str(exc):
                return False  # slurmctld busy or restarting: ask again
            self.state, self.code = "UNKNOWN", -9  # forgotten: it did not report success
            return True
        fields = dict(word.split("=", 1) for word in out.split() if "=" in word)
        self.state = fields.get("JobState", "")
        if not self.state or slurm_outcome(self.state)[0] not in ENDED:
            return False
        status, _, signum = fields.get("ExitCode", "1:0").partition(":")
        self.code = -int(signum) if signum not in ("", "0") else int(status or 1)
        if self.state != "COMPLETED" and self.code == 0:
            self.code = 1  # cancelled, failed node: never a success
        return True

    def wait(self, timeout: float | None) -> int | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.code is None and not self._ended():
            if deadline is not None and time.monotonic() >= deadline:
                return None
            time.sleep(POLL_SECONDS if deadline is None else
                       max(0.0, min(POLL_SECONDS, deadline - time.monotonic())))
        return self.code

    def kill(self, grace: float) -> None:
        with contextlib.suppress(SlurmCommandError):
            self.runner.command("scancel", "--signal=TERM", "--full", self.id)
        if self.wait(grace) is None:
            with contextlib.suppress(SlurmCommandError):
                self.runner.command("scancel", self.id)
            self.wait(None)
