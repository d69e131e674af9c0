"""The worker's settings: /etc/jobqueue/worker.toml, overridden by JOBQUEUE_WORKER_<KEY>."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import socket
import sys

from jobqueue.config import ConfigError, load_settings

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
    controller_url: str = "http://127.0.0.1:8080"
    token: str = ""
    token_file: str = ""
    ca_bundle: str = ""
    name: str = ""
    cpus: int = 0
    # MiB of memory this worker's jobs may ask for in sum (the controller hands out only
    # jobs that fit beside the running ones); 0: the host's memory less HOST_RESERVE_MIB.
    memory: int = 0
    work_dir: str = "/var/lib/jobqueue-worker"
    max_file_size: int = 1 << 30
    heartbeat_seconds: float = 10.0
    log_seconds: float = 1.0  # how often running jobs' new log bytes go to the controller
    claim_wait_seconds: float = 30.0
    service_start: str = ""
    service_stop: str = ""
    service_end: str = ""
    on_shutdown: str = "requeue"
    python: str = ""
    # Software environments offered to jobs: name -> a virtualenv's directory (a job
    # in one runs its .py with DIR/bin/python, DIR/bin first on its PATH).
    environments: dict[str, str] = dataclasses.field(default_factory=dict)
    kill_grace_seconds: float = 5.0
    retry_seconds: float = 300.0
    # "local": jobs run as the worker's user, unconfined (jobqueue dev, tests).
    # "systemd": each job runs confined in a slot unit (see jobqueue.worker.systemd_runner).
    runner: str = "local"
    slots: int = 0  # job slots of the systemd runner; 0: one per CPU
    slots_dir: str = "/var/lib/jobqueue-slots"
    slot_unit: str = "jobqueue-job@{slot}.service"
    slot_user: str = "jq-slot{slot}"
    # runner = "slurm" (a remote cluster's own Slurm): jobs at most at once, the
    # partition (empty: the default one), where Slurm's commands are (empty: PATH).
    slurm_max_jobs: int = 4
    slurm_partition: str = ""
    slurm_bin_dir: str = ""

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
