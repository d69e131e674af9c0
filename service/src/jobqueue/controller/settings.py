"""The controller's settings: /etc/jobqueue/controller.toml, overridden by JOBQUEUE_<KEY>."""

from __future__ import annotations

import dataclasses
import os

from jobqueue.config import ConfigError, load_settings, setting

DEFAULT_PATH = "/etc/jobqueue/controller.toml"
ENV_PREFIX = "JOBQUEUE_"


@dataclasses.dataclass(frozen=True)
class ControllerSettings:
    database_url: str = setting(
        "",
        "SQLAlchemy URL; `postgresql+psycopg://user:pw@host/db` in production",
        shown="`sqlite:///<data_dir>/jobqueue.db`",
    )
    database_pool_size: int = setting(
        10,
        "PostgreSQL connections each controller process keeps at most: a request that finds "
        "them all in use waits for one. Processes × this, plus a few for the waiting room and "
        "admin commands, must fit the server's `max_connections`",
    )
    data_dir: str = setting(
        "/var/lib/jobqueue",
        "job input and result files live under `<data_dir>/jobs/<id>/`",
    )
    queue_backend: str = setting("dispatcher", "which `QueueBackend` runs queued jobs")
    lease_seconds: int = setting(
        180,
        "a running job's lease; a worker heartbeats to extend it, and stops a job whose lease it "
        "could not renew before the lease can run out (about 2.5 min at 180 s: longer than a "
        "controller's reload under load)",
    )
    max_attempts: int = setting(
        3,
        "a job whose lease expires is requeued until this many attempts, then `lost`",
    )
    claim_wait_seconds: int = setting(
        30,
        "longest a worker's long-poll claim waits (bounded so Apache threads are never starved)",
    )
    waiting_room_dir: str = setting(
        "",
        "directory of the waiting room's sockets (`jobqueue-waiting-room`): idle workers then "
        "wait there, not in a WSGI thread each, and a claim answers at once. `\"\"`: claims "
        "long-poll (`jobqueue dev`, a single process)",
    )
    waiting_room_wait_seconds: int = setting(
        300,
        "longest a wait in the waiting room lasts: wake-ups end it sooner, so it only bounds "
        "how often an idle worker claims again",
    )
    max_upload_bytes: int = setting(1 << 30, "request body cap (413 past it)")
    max_files: int = setting(10000, "most files in one job's inputs or results")
    max_archive_seconds: int = setting(
        120,
        "longest one request may spend unpacking an archive (inputs or results); past it the "
        "request is refused (`400`). Archives are read as a stream: entry count, sizes and name "
        "depth are checked on each header before its data, and the decompressed stream is bounded "
        "by those caps",
    )
    max_job_cpus: int = setting(64, "largest `cpus` a job may ask for")
    default_walltime: int = setting(3600, "seconds, when the spec gives none")
    max_walltime: int = setting(7 * 24 * 3600, "seconds")
    default_memory: int = setting(1024, "MiB, when the spec gives none")
    default_output_limit: int = setting(1024, "MiB of results, when the spec gives none")
    max_job_memory: int = setting(
        256 * 1024,
        "MiB: most a job may ask for (refused at submit above it)",
    )
    max_output_limit: int = setting(
        64 * 1024,
        "MiB: most a job may ask for (refused at submit above it)",
    )
    allow_anonymous: bool = setting(
        False,
        "when true, requests without a token act as user `anonymous`",
    )
    single_sign_on: str = setting(
        "",
        "the web page's single sign-on: `\"\"` off; `existing` trusts the identity Apache's "
        "mod_auth_openidc puts in REMOTE_USER on `/sso/login` for users an admin created; "
        "`create` also makes a user (role `user`) of an identity seen for the first time",
    )
    single_sign_on_hours: int = setting(
        12,
        "how long a web session opened by single sign-on lasts (its token then expires; "
        "signing out revokes it at once)",
    )
    log_tail_bytes: int = setting(
        1 << 20,
        "most bytes of each of stdout and stderr that `GET /jobs/{id}/log` shows (its end; the "
        "whole log is kept, up to the job's output limit)",
    )
    idempotency_window_seconds: int = setting(
        24 * 3600,
        "how long an `Idempotency-Key` of a submit is remembered",
    )
    oversized_jobs: str = setting(
        "refuse",
        "a job asking for more CPUs or memory than any worker seen (within the window below) "
        "offers: `refuse` it at submit (`400`, naming the worker that comes closest), or `hold` it"
        " queued with that reason until a larger worker joins",
    )
    worker_seen_window_seconds: int = setting(
        24 * 3600,
        "workers whose last claim is older than this no longer count for the check above",
    )
    max_queued_per_user: int = setting(
        20000,
        "most jobs one user (not an admin) may have queued at once, each task of an array "
        "counting; past it a submit is a `429` with `Retry-After`",
    )
    max_submits_per_minute: int = setting(
        600,
        "most submissions one user (not an admin) may make within a minute, an array counting "
        "once; past it a `429` with `Retry-After` (when the oldest of them leaves the minute)",
    )
    max_array_size: int = setting(
        10000,
        "most tasks of one job array; its indices run from 0 to this minus one (Slurm's "
        "`MaxArraySize`)",
    )
    environments: list[str] = setting(
        factory=list,
        doc="names of the software environments jobs may choose (spec field `environment`, "
            "`jobqueue submit --env NAME`); another name is a `400` listing these. Workers offer "
            "them by name (their own `environments`); a job in one goes only to a worker that "
            "offers it, and waits, saying so, while none does",
    )
    default_environment: str = setting(
        "",
        "the environment of a job that names none (one of `environments`; `\"\"`: the worker's own "
        "Python)",
    )
    queue: dict[str, dict] = setting(
        factory=dict,
        doc="each backend's own settings, the table `[queue.NAME]` (in the environment, "
            "`JOBQUEUE_QUEUE` as a JSON object); a wrong key fails at start naming the table",
    )

    def __post_init__(self) -> None:
        if not self.database_url:
            url = f"sqlite:///{os.path.join(self.data_dir, 'jobqueue.db')}"
            object.__setattr__(self, "database_url", url)
        positive = ("database_pool_size", "lease_seconds", "max_attempts", "claim_wait_seconds",
                    "waiting_room_wait_seconds", "max_upload_bytes",
                    "max_files", "max_archive_seconds", "max_job_cpus", "default_walltime",
                    "max_walltime", "default_memory", "default_output_limit",
                    "max_job_memory", "max_output_limit", "log_tail_bytes",
                    "idempotency_window_seconds", "worker_seen_window_seconds",
                    "max_array_size", "max_queued_per_user", "max_submits_per_minute",
                    "single_sign_on_hours")
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
        if self.single_sign_on not in ("", "existing", "create"):
            raise ConfigError(f"setting 'single_sign_on' must be \"\", 'existing' or 'create', "
                              f"got {self.single_sign_on!r}")
        if self.oversized_jobs not in ("refuse", "hold"):
            raise ConfigError(f"setting 'oversized_jobs' must be 'refuse' or 'hold', got "
                              f"{self.oversized_jobs!r}")


def load(path: str | None = None, **overrides) -> ControllerSettings:
    path = path or os.environ.get("JOBQUEUE_CONFIG", DEFAULT_PATH)
    return load_settings(ControllerSettings, path, ENV_PREFIX, **overrides)
