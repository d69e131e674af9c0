"""`queue_backend = "slurm"`: every job becomes a Slurm job.

The reconcile pass (`jobqueue.queue.batch`) submits each queued job with `sbatch`
(its CPUs, memory and time; the job name carries our id) and reads all of our Slurm
jobs' states with one `squeue` call per pass, plus one `sacct` call for those squeue
no longer lists. The batch script runs `jobqueue-worker --one-job ID` on the node:
the same worker code as in the dispatcher mode takes the job's lease, fetches its
inputs over HTTPS, runs it through the node's runner (confined slots under systemd)
on the CPUs Slurm allocated, and uploads the results. Slurm never requeues a job by
itself (`--no-requeue`): a failed attempt is requeued by us as a new Slurm job, so the
attempt count means the same as in the dispatcher mode.

Settings, table `[queue.slurm]` of controller.toml: see `SlurmSettings`.
"""

from __future__ import annotations

import getpass
import math
import shlex
from dataclasses import dataclass

from jobqueue import slurm_command
from jobqueue.config import setting
from jobqueue.models import Job
from jobqueue.queue.batch import BatchQueue, SchedulerError, SchedulerJob
from jobqueue.scheduler_states import slurm_outcome

JOB_NAME_PREFIX = "jq-"
# Memory for the node's worker process beside the job's own, added to the job's --mem:
# a Python process of about 40 MiB, which streams the inputs and results through
# files (their page cache is reclaimable), and room for that cache to work in.
WORKER_MEMORY_MIB = 128
# Seconds past the job's own wall time before Slurm ends it: the node's worker stops
# the job at its wall time itself and still has to upload.
TIME_GRACE_SECONDS = 120

# sbatch's words (slurm 22.05) for a job this cluster can never run as asked: more
# memory or CPUs than any node has, a partition or account that does not exist. Any
# other failure (slurmctld away, a timeout, a submit limit reached) is tried again.
REFUSALS = (
    "Requested node configuration is not available",
    "Memory specification can not be satisfied",
    "More processors requested than permitted",
    "Node count specification invalid",
    "Invalid partition name specified",
    "Invalid account or account/partition combination specified",
    "Invalid qos specification",
    "Requested time limit is invalid",
)

@dataclass(frozen=True)
class SlurmSettings:
    partition: str = setting("", "the partition to submit to (empty: Slurm's default)")
    worker_command: str = setting(
        "/opt/jobqueue/venv/bin/jobqueue-worker",
        "the worker on the nodes",
    )
    worker_config: str = setting(
        "/etc/jobqueue/worker.toml",
        "the nodes' worker settings (token, controller URL, runner)",
    )
    batch_output: str = setting(
        "/var/log/jobqueue/slurm-%j.out",
        "the batch script's own output on the node (the job's output goes to the controller)",
    )
    sbatch_args: list[str] = setting(
        factory=list,
        doc="more `sbatch` options, e.g. `[\"--account=lab\"]`",
    )
    bin_dir: str = setting("", "where Slurm's commands are (empty: `PATH`)")


class SlurmQueue(BatchQueue):
    name = "slurm"
    Settings = SlurmSettings

    def __init__(self, session_factory, settings, events=None, own_settings=None) -> None:
        super().__init__(session_factory, settings, events, own_settings or SlurmSettings())
        self.user = getpass.getuser()

    def _run(self, name: str, *args: str, stdin: str | None = None) -> str:
        try:
            return slurm_command.run(name, *args, bin_dir=self.own.bin_dir, stdin=stdin)
        except slurm_command.SlurmCommandError as exc:
            raise SchedulerError(str(exc)) from None

    def batch_script(self, job: Job) -> str:
        command = shlex.join([self.own.worker_command, "--config", self.own.worker_config,
                              "--one-job", job.id])
        return f"#!/bin/sh\nexec {command}\n"

    def sbatch_args(self, job: Job) -> list[str]:
        minutes = math.ceil((job.walltime + TIME_GRACE_SECONDS) / 60)
        args = ["--parsable", f"--job-name={JOB_NAME_PREFIX}{job.id}", "--nodes=1",
                "--ntasks=1", f"--cpus-per-task={job.cpus}",
                f"--mem={job.memory + WORKER_MEMORY_MIB}", f"--time={minutes}",
                # Nothing of the controller's environment (its database URL) reaches the node.
                "--export=NIL", "--no-requeue", f"--output={self.own.batch_output}",
                "--chdir=/tmp"]
        if self.own.partition:
            args.append(f"--partition={self.own.partition}")
        return args + list(self.own.sbatch_args)

    def submit(self, job: Job) -> str:
        try:
            out = self._run("sbatch", *self.sbatch_args(job), stdin=self.batch_script(job))
        except SchedulerError as exc:
            if any(words in str(exc) for words in REFUSALS):
                raise SchedulerError(str(exc), refused=True) from None
            raise
        external_id = out.strip().split(";")[0]  # "ID" or "ID;cluster"
        if not external_id.isdigit():
            raise SchedulerError(f"sbatch answered {out.strip()!r}, not a job id")
        return external_id

    def query(self, external_ids: list[str]) -> dict[str, SchedulerJob]:
        # All of our jobs slurmctld still holds (finished ones for MinJobAge), with
        # strays of requeued attempts among them; one call whatever their number.
        out = self._run("squeue", "--noheader", "--states=all", f"--user={self.user}",
                        "--format=%i|%j|%T|%r|%N")
        seen: dict[str, SchedulerJob] = {}
        for line in out.splitlines():
            parts = line.split("|")
            if len(parts) != 5 or not parts[1].startswith(JOB_NAME_PREFIX):
                continue
            external_id, _, state, reason, node = parts
            outcome, by = slurm_outcome(state)
            seen[external_id] = SchedulerJob(external_id, state.split(" ")[0], outcome,
                                             "" if reason == "None" else reason, node, by)
        gone = [eid for eid in external_ids if eid not in seen]
        if gone:
            seen.update(self._accounting(gone))
        return seen

    def _accounting(self, external_ids: list[str]) -> dict[str, SchedulerJob]:
        """sacct's end states of jobs squeue forgot; nothing if accounting is off."""
        try:
            out = self._run("sacct", "--noheader", "--parsable2", "--allocations",
                            f"--jobs={','.join(external_ids)}",
                            "--format=JobIDRaw,JobName,State,NodeList")
        except SchedulerError:
            return {}  # unknown for now: counted as missing, never as done
        seen: dict[str, SchedulerJob] = {}
        for line in out.splitlines():
            parts = line.split("|")
            if len(parts) != 4 or not parts[1].startswith(JOB_NAME_PREFIX):
                continue
            external_id, _, state, node = parts
            outcome, by = slurm_outcome(state)
            seen[external_id] = SchedulerJob(external_id, state.split(" ")[0], outcome,
                                             node=node, by=by)
        return seen

    def kill(self, external_ids: list[str]) -> None:
        self._run("scancel", *external_ids)
