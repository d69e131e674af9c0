"""Which runner a worker's settings ask for: the plain one, confined slots under
systemd, or a Slurm cluster's batch jobs."""

from __future__ import annotations

from pathlib import Path

from jobqueue.worker.runner import LocalRunner, Runner
from jobqueue.worker.settings import WorkerSettings


def make_runner(settings: WorkerSettings, slot_locks: Path | None = None) -> Runner:
    """The settings' runner. With `slot_locks`, a systemd runner shares the node's slots
    with other processes (one job each), taking a free one under a lock file there."""
    if settings.runner == "systemd":
        from jobqueue.worker.systemd_runner import SystemdRunner
        return SystemdRunner(settings, slot_locks)
    if settings.runner == "slurm":
        from jobqueue.worker.slurm_runner import SlurmRunner
        return SlurmRunner(settings)
    return LocalRunner(Path(settings.work_dir))
