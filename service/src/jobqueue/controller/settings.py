"""The controller's settings: /etc/jobqueue/controller.toml, overridden by JOBQUEUE_<KEY>."""

from __future__ import annotations

import dataclasses
import os

from jobqueue.config import ConfigError, load_settings

DEFAULT_PATH = "/etc/jobqueue/controller.toml"
ENV_PREFIX = "JOBQUEUE_"


@dataclasses.dataclass(frozen=True)
class ControllerSettings:
    database_url: str = ""
    data_dir: str = "/var/lib/jobqueue"
    queue_backend: str = "dispatcher"
    lease_seconds: int = 60
    max_attempts: int = 3
    claim_wait_seconds: int = 30
    max_upload_bytes: int = 1 << 30
    max_files: int = 10000
    # Longest one request may spend unpacking an archive (inputs or results): past it,
    # the request is refused and its thread free again.
    max_archive_seconds: int = 120
    max_job_cpus: int = 64
    default_walltime: int = 3600
    max_walltime: int = 7 * 24 * 3600
    default_memory: int = 1024
    default_output_limit: int = 1024
    # The most one job may ask for (MiB): above, refused at submit.
    max_job_memory: int = 256 * 1024
    max_output_limit: int = 64 * 1024
    allow_anonymous: bool = False
    log_tail_bytes: int = 1 << 20
    idempotency_window_seconds: int = 24 * 3600
    # A job asking for more CPUs than the largest worker seen within the window:
    # "refuse" it at submit, or "hold" it queued (with that reason) for a larger one.
    oversized_jobs: str = "refuse"
    worker_seen_window_seconds: int = 24 * 3600
    # Per user (admins excepted): most jobs queued at once (each task of an array counts),
    # and most submissions within a minute; past either, a submit is a 429.
    max_queued_per_user: int = 20000
    max_submits_per_minute: int = 600
    # Most tasks of one job array (its indices are 0 to this minus one, as Slurm's).
    max_array_size: int = 10000
    # The software environments the lab declared (workers offer them by name), and the
    # one a job without its own runs in ("": the worker's own Python).
    environments: list[str] = dataclasses.field(default_factory=list)
    default_environment: str = ""
    # Each queue backend's own settings: the table [queue.NAME] of controller.toml.
    queue: dict[str, dict] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.database_url:
            url = f"sqlite:///{os.path.join(self.data_dir, 'jobqueue.db')}"
            object.__setattr__(self, "database_url", url)
        positive = ("lease_seconds", "max_attempts", "claim_wait_seconds", "max_upload_bytes",
                    "max_files", "max_archive_seconds", "max_job_cpus", "default_walltime",
                    "max_walltime", "default_memory", "default_output_limit",
                    "max_job_memory", "max_output_limit", "log_tail_bytes",
                    "idempotency_window_seconds", "worker_seen_window_seconds",
                    "max_array_size", "max_queued_per_user", "max_submits_per_minute")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"setting {name!r} must be positive, got {getattr(self, name)}")
        for default, most in (("default_memory", "max_job_memory"),
                              ("default_output_limit", "max_output_limit"),
                              ("default_walltime", "max_walltime")):
            if getattr(self, default) > getattr(self, most):
                raise ConfigError(f"setting {default!r} ({getattr(self, default)}) is above "
                                  f"{most!r} ({getattr(self, most)})")
        if self.default_environment and self.default_environment not in self.environments:
            raise ConfigError(f"setting 'default_environment' ({self.default_environment!r}) "
                              "is not among 'environments'")
        if self.oversized_jobs not in ("refuse", "hold"):
            raise ConfigError(f"setting 'oversized_jobs' must be 'refuse' or 'hold', got "
                              f"{self.oversized_jobs!r}")


def load(path: str | None = None, **overrides) -> ControllerSettings:
    path = path or os.environ.get("JOBQUEUE_CONFIG", DEFAULT_PATH)
    return load_settings(ControllerSettings, path, ENV_PREFIX, **overrides)
