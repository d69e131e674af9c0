"""The worker's settings: /etc/jobqueue/worker.toml, overridden by JOBQUEUE_WORKER_<KEY>."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import socket
import sys

from jobqueue.config import ConfigError, load_settings, setting

DEFAULT_PATH = "/etc/jobqueue/worker.toml"
ENV_PREFIX = "JOBQUEUE_WORKER_"
ON_SHUTDOWN = ("requeue", "finish")
RUNNERS = ("local", "systemd", "slurm")
# What the host and the worker itself keep of the memory when `memory` is 0 (the
# reserve roles/worker leaves by default), and the least the jobs get then.
HOST_RESERVE_MIB = 384
MIN_JOB_MEMORY_MIB = 256


def _clock(name: str, value: str | None) -> dt.time | None:
    if not value:
        return None
    try:
        return dt.time.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"setting {name!r}: expected HH:MM, got {value!r}") from None


@dataclasses.dataclass(frozen=True)
class WorkerSettings:
    controller_url: str = setting(
        "http://127.0.0.1:8080",
        "base URL of the controller (no `/api/v1`)",
    )
    token: str = setting("", "the worker's own bearer token (role `worker`)", shown="—")
    token_file: str = setting("", "read the token from this file instead", shown="—")
    ca_bundle: str = setting("", "CA file to verify the controller's certificate", shown="—")
    name: str = setting("", "worker name shown on jobs", shown="host name")
    cpus: int = setting(
        0,
        "CPUs to use: n > 0 uses n, 0 uses all, n < 0 leaves n free (as dispynode)",
    )
    memory: int = setting(
        0,
        "MiB the worker's jobs may ask for in sum: the controller hands it only jobs whose memory "
        "fits beside those it runs, so jobs together never ask the host for more; 0 = the host's "
        "memory less 384 MiB, as `roles/worker` leaves by default (`slurm` runner: not counted "
        "unless set)",
    )
    work_dir: str = setting(
        "/var/lib/jobqueue-worker",
        "the worker's state; with the `local` runner each attempt runs in `<work_dir>/<job "
        "id>-<attempt>/`",
    )
    max_file_size: int = setting(1 << 30, "largest single file a job may write (RLIMIT_FSIZE)")
    heartbeat_seconds: float = setting(10.0, "how often running jobs' leases are renewed")
    log_seconds: float = setting(
        1.0,
        "how often running jobs' new stdout/stderr bytes are sent to the controller (what "
        "`jobqueue log -f` shows as they grow)",
    )
    claim_wait_seconds: float = setting(30.0, "long-poll wait asked of the controller")
    service_start: str = setting(
        "",
        "`HH:MM`: start claiming each day (dispynode's service window)",
        shown="—",
    )
    service_stop: str = setting("", "`HH:MM`: stop claiming; running jobs finish", shown="—")
    service_end: str = setting("", "`HH:MM`: stop claiming and hand back running jobs", shown="—")
    on_shutdown: str = setting(
        "requeue",
        "on SIGTERM: `requeue` kills running jobs and hands them back; `finish` lets them finish "
        "and uploads them",
    )
    python: str = setting(
        "",
        "interpreter that runs job scripts",
        shown="the worker's own interpreter",
    )
    environments: dict[str, str] = setting(
        factory=dict,
        doc="software environments this worker offers: a table of name = a virtualenv's directory "
            "(roles/worker builds them from `worker_environments`). A job in one runs its `.py` "
            "with that virtualenv's Python, its `bin/` first on `PATH` and `VIRTUAL_ENV` set; the "
            "worker's claims list the names",
    )
    kill_grace_seconds: float = setting(5.0, "between SIGTERM and SIGKILL when a job is stopped")
    retry_seconds: float = setting(
        300.0,
        "how long an upload, a hand-back or an input download is retried while the controller is "
        "unreachable or answers 5xx (heartbeats retry within the lease, claims for ever, both with"
        " a backoff of at most 10 s)",
    )
    runner: str = setting(
        "local",
        "`local`: jobs run as the worker's own user, unconfined (`jobqueue dev`, tests, hosts "
        "without systemd); `systemd`: each job confined in a slot (below); `slurm`: each job a "
        "Slurm job of a remote cluster this worker feeds (below)",
    )
    slots: int = setting(
        0,
        "job slots of the `systemd` runner (jobs at once at most); 0 = one per CPU",
    )
    slots_dir: str = setting(
        "/var/lib/jobqueue-slots",
        "slot N's hand-over directory is `<slots_dir>/N`",
    )
    slot_unit: str = setting("jobqueue-job@{slot}.service", "slot N's systemd unit (`{slot}`: N)")
    slot_user: str = setting("jq-slot{slot}", "slot N's system user")
    slurm_max_jobs: int = setting(
        4,
        "`slurm` runner: jobs the worker takes from the dispatcher at once (other clusters share "
        "the rest)",
    )
    slurm_partition: str = setting(
        "",
        "`slurm` runner: the cluster's partition (empty: its default)",
    )
    slurm_bin_dir: str = setting(
        "",
        "`slurm` runner: where `sbatch`, `scontrol`, `scancel` are (empty: `PATH`)",
    )

    def __post_init__(self) -> None:
        if not self.name:
            object.__setattr__(self, "name", socket.gethostname())
        if not self.python:
            object.__setattr__(self, "python", sys.executable)
        if self.token_file and not self.token:
            try:
                with open(self.token_file, encoding="utf-8") as fh:
                    object.__setattr__(self, "token", fh.read().strip())
            except OSError as exc:
                raise ConfigError(f"setting 'token_file': cannot read it: {exc}") from None
        if not self.token:
            raise ConfigError("setting 'token' (or 'token_file') is required: the worker's token")
        if self.on_shutdown not in ON_SHUTDOWN:
            raise ConfigError(f"setting 'on_shutdown' must be one of {ON_SHUTDOWN}")
        if self.heartbeat_seconds <= 0 or self.claim_wait_seconds < 0:
            raise ConfigError("settings 'heartbeat_seconds' and 'claim_wait_seconds' must be > 0")
        if not 0 < self.log_seconds <= 3600:
            raise ConfigError("setting 'log_seconds' must be > 0 and at most 3600")
        if self.runner not in RUNNERS:
            raise ConfigError(f"setting 'runner' must be one of {RUNNERS}, not {self.runner!r}")
        if self.slurm_max_jobs < 1:
            raise ConfigError("setting 'slurm_max_jobs' must be >= 1")
        if self.memory < 0:
            raise ConfigError("setting 'memory' must be >= 0 (MiB; 0: the host's memory "
                              f"less {HOST_RESERVE_MIB})")
        if self.slots < 0:
            raise ConfigError("setting 'slots' must be >= 0")
        if self.retry_seconds < 0:
            raise ConfigError("setting 'retry_seconds' must be >= 0")
        for name, directory in self.environments.items():
            if not isinstance(directory, str) or not os.path.isabs(directory):
                raise ConfigError(f"setting 'environments': {name!r} must be an absolute "
                                  "path (a virtualenv's directory)")
        for key in ("service_start", "service_stop", "service_end"):
            _clock(key, getattr(self, key))

    @property
    def total_cpus(self) -> int:
        """Like dispynode: n > 0 uses n, 0 uses all, n < 0 leaves n free (at least 1 used).
        With the slurm runner, the CPUs the cluster offers this worker's jobs: `cpus` as
        given (the submit host's own do not count)."""
        if self.runner == "slurm":
            return max(1, self.cpus)
        available = len(os.sched_getaffinity(0))
        if self.cpus > 0:
            return min(self.cpus, available)
        return max(1, available + self.cpus)

    @property
    def total_memory(self) -> int | None:
        """MiB the worker's jobs may ask for in sum; None (not counted) with the slurm
        runner unless set: the cluster's nodes are not this host."""
        if self.memory > 0:
            return self.memory
        if self.runner == "slurm":
            return None
        host = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") >> 20
        return max(MIN_JOB_MEMORY_MIB, host - HOST_RESERVE_MIB)

    @property
    def slot_count(self) -> int:
        return self.slots or self.total_cpus

    def window(self) -> ServiceWindow:
        return ServiceWindow(_clock("service_start", self.service_start),
                             _clock("service_stop", self.service_stop),
                             _clock("service_end", self.service_end))


def _within(now: dt.time, start: dt.time, end: dt.time) -> bool:
    """Whether `now` is in [start, end), where the span may wrap past midnight."""
    if start <= end:
        return start <= now < end
    return now >= start or now < end


@dataclasses.dataclass(frozen=True)
class ServiceWindow:
    """dispynode's service window: claim from `start` until `stop`; at `end`, also hand
    back running jobs. Unset times mean 'always'."""

    start: dt.time | None
    stop: dt.time | None
    end: dt.time | None

    def accepting(self, now: dt.time) -> bool:
        close = self.stop or self.end
        if close is None:
            return True
        return _within(now, self.start or dt.time(0, 0), close)

    def must_end(self, now: dt.time) -> bool:
        if self.end is None:
            return False
        return not _within(now, self.start or dt.time(0, 0), self.end)


def load(path: str | None = None, **overrides) -> WorkerSettings:
    path = path or os.environ.get("JOBQUEUE_WORKER_CONFIG", DEFAULT_PATH)
    return load_settings(WorkerSettings, path, ENV_PREFIX, **overrides)
