"""Where and how a job runs: the seam the worker calls.

A `Runner` gives each attempt a `Workspace`: the directory its inputs go to, a way to
start the job and stop it, and, once it has ended, its logs and the files it made.

`LocalRunner` (for `jobqueue dev`, the tests and hosts without systemd) runs the job as
the worker's own user, in its own session (so the whole process group can be killed),
under resource limits, with a tether that kills the job if the worker dies (see
`jobqueue.worker.tether`). It confines nothing. `jobqueue.worker.systemd_runner` runs
each job confined in a slot of its own.
"""

from __future__ import annotations

import abc
import contextlib
import os
import select
import shutil
import signal
import stat
import subprocess
import threading
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path

from jobqueue.archive import iter_files, pack_dir
from jobqueue.worker.tether import command as tether_command


@dataclass(frozen=True)
class Limits:
    walltime: float          # seconds, enforced by the caller through RunningProcess.wait
    cpu_seconds: int
    memory_bytes: int
    open_files: int = 1024
    max_file_size: int = 1 << 30

    def rlimits(self) -> dict[str, int]:
        return {"cpu_seconds": self.cpu_seconds, "memory_bytes": self.memory_bytes,
                "open_files": self.open_files, "max_file_size": self.max_file_size}


@dataclass(frozen=True)
class RunRequest:
    job_id: str
    job_dir: Path
    argv: list[str]          # the job's own command, e.g. [python, entry, *args]
    limits: Limits
    stdout: Path
    stderr: Path
    env: dict[str, str] = field(default_factory=dict)
    output_limit: int = 1 << 30  # bytes: all files the job makes plus its logs
    cpus: int = 1
    environment: str | None = None  # the software environment's name (None: the worker's own)


@dataclass(frozen=True)
class Outcome:
    """How an attempt ended, as far as the runner knows."""
    results_bytes: int       # content packed into the results archive
    limit: str | None = None  # the limit that ended it: memory, output, cpu, walltime


@dataclass(frozen=True)
class Usage:
    """What an attempt used, as far as the runner could measure it (None: unknown)."""
    cpu_seconds: float | None = None   # user + system
    peak_memory: int | None = None     # bytes
    wall_seconds: float | None = None

    def as_json(self) -> dict:
        return {"cpu_seconds": self.cpu_seconds, "peak_memory": self.peak_memory,
                "wall_seconds": self.wall_seconds}


class RunningProcess(abc.ABC):
    @abc.abstractmethod
    def wait(self, timeout: float | None) -> int | None:
        """The exit status (negative: killed by that signal), or None if still running."""

    def usage(self) -> Usage:
        """Once it has ended: what the job used."""
        return Usage()

    @abc.abstractmethod
    def kill(self, grace: float) -> None:
        """Stop the job and everything it started: SIGTERM, then SIGKILL after `grace`."""


class Workspace(abc.ABC):
    """One attempt's place on the worker. `job_dir` is empty and private to this attempt
    until `close`."""

    job_dir: Path

    @abc.abstractmethod
    def start(self, request: RunRequest) -> RunningProcess:
        """Start the job in `job_dir`; return at once."""

    def read_log(self, request: RunRequest, name: str, offset: int, size: int) -> bytes:
        """While the job runs: at most `size` bytes of its stdout or stderr from `offset`
        on (b"" if there are none yet), read only as this runner trusts its files."""
        return b""

    @abc.abstractmethod
    def collect(self, request: RunRequest, results: Path) -> Outcome:
        """After the job ended: its logs to `request.stdout`/`stderr`, the files it made or
        changed (regular files only) as tar.gz to `results`."""

    @abc.abstractmethod
    def close(self) -> None:
        """Remove everything the attempt left."""


class Runner(abc.ABC):
    capacity: int | None = None  # jobs it can run at once, if limited

    def set_aside(self) -> int:
        """How many places to run a job it has stopped using (slots it could not clean)."""
        return 0

    @abc.abstractmethod
    def workspace(self, name: str) -> Workspace:
        """A fresh workspace for one attempt; `name` is unique to the attempt."""

    @abc.abstractmethod
    def recover(self) -> None:
        """On start: stop whatever a previous worker left running."""

    @abc.abstractmethod
    def self_check(self) -> None:
        """On start: raise RuntimeError if the confinement it promises is not in force."""


class _ProcessGroup(RunningProcess):
    """The job, leader of its own process group, and its tether. The job is reaped with
    wait4, whose rusage covers it and every child it waited for (ru_maxrss: the largest
    one). Its end is seen through a pidfd, at once and without polling."""

    def __init__(self, popen: subprocess.Popen, tether: int):
        self.popen = popen
        self.tether = tether  # write end of the tether's pipe: closing it kills the job
        # Closed with the object, never while a thread may still be polling it.
        self._pidfd = os.pidfd_open(popen.pid)
        weakref.finalize(self, os.close, self._pidfd)
        self._lock = threading.Lock()
        self._reap_lock = threading.Lock()
        self.started = time.monotonic()
        self.code: int | None = None
        self._usage = Usage()

    def _reap(self) -> int | None:
        """The exit status if the tether has ended (reaping it once), else None. Never
        blocks: the worker's threads may ask at the same time."""
        with self._reap_lock:
            if self.code is None:
                pid, status, rusage = os.wait4(self.popen.pid, os.WNOHANG)
                if pid == 0:
                    return None
                self.code = os.waitstatus_to_exitcode(status)
                self.popen.returncode = self.code  # Popen must not wait for it again
                self._usage = Usage(cpu_seconds=rusage.ru_utime + rusage.ru_stime,
                                    peak_memory=rusage.ru_maxrss * 1024,  # KiB on Linux
                                    wall_seconds=time.monotonic() - self.started)
            return self.code

    def wait(self, timeout: float | None) -> int | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        ended = select.poll()
        ended.register(self._pidfd, select.POLLIN)  # readable once the process has ended
        while (code := self._reap()) is None:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return None
            ended.poll(None if left is None else left * 1000)
        self._release_tether()
        return code

    def usage(self) -> Usage:
        return self._usage

    def _release_tether(self) -> None:
        with self._lock:
            if self.tether >= 0:
                os.close(self.tether)
                self.tether = -1

    def _signal_group(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signum)

    def kill(self, grace: float) -> None:
        self._signal_group(signal.SIGTERM)
        if self.wait(grace) is None:
            self._signal_group(signal.SIGKILL)
            self.wait(None)
        # Children that outlived the leader are still in its process group.
        self._signal_group(signal.SIGKILL)
        self._release_tether()


def fingerprint(root: Path) -> dict[str, tuple[int, int]]:
    return {rel: ((st := (root / rel).lstat()).st_size, st.st_mtime_ns)
            for rel in iter_files(root)}


class LocalRunner(Runner):
    """Runs jobs as the worker's own user, limited by rlimits, in `work_dir`."""

    def __init__(self, work_dir: Path | None = None):
        self.work_dir = work_dir

    def recover(self) -> None:
        """Nothing to do: a previous worker's jobs died with it (the tether)."""

    def self_check(self) -> None:
        """Nothing to check: this runner promises no confinement."""

    def workspace(self, name: str) -> LocalWorkspace:
        if self.work_dir is None:
            raise RuntimeError("LocalRunner needs a work_dir for workspaces")
        return LocalWorkspace(self, self.work_dir / name)

    def start(self, request: RunRequest) -> RunningProcess:
        # Only the worker holds the write end (pipes are not inherited by other jobs).
        watch, tether = os.pipe()
        try:
            with open(request.stdout, "wb") as out, open(request.stderr, "wb") as err:
                popen = subprocess.Popen(
                    tether_command(request.limits.rlimits(), request.argv),
                    cwd=request.job_dir, env=request.env, stdin=watch, stdout=out,
                    stderr=err, start_new_session=True, close_fds=True)
        except BaseException:
            os.close(tether)
            raise
        finally:
            os.close(watch)
        return _ProcessGroup(popen, tether)


class LocalWorkspace(Workspace):
    def __init__(self, runner: LocalRunner, job_dir: Path):
        self.runner = runner
        self.job_dir = job_dir
        shutil.rmtree(job_dir, ignore_errors=True)
        job_dir.mkdir(mode=0o700)
        self.inputs: dict[str, tuple[int, int]] = {}

    def start(self, request: RunRequest) -> RunningProcess:
        self.inputs = fingerprint(self.job_dir)
        return self.runner.start(request)

    def read_log(self, request: RunRequest, name: str, offset: int, size: int) -> bytes:
        # The worker's own files (its meta directory), which the job writes through the
        # descriptors it was given.
        path = {"stdout": request.stdout, "stderr": request.stderr}[name]
        try:
            with open(path, "rb") as fh:
                fh.seek(offset)
                return fh.read(size)
        except FileNotFoundError:
            return b""

    def collect(self, request: RunRequest, results: Path) -> Outcome:
        def changed(rel: str) -> bool:
            # Inputs the job left as they were are already stored on the controller;
            # hard-linked files may be the worker's own, links point elsewhere.
            info = (self.job_dir / rel).lstat()
            return (stat.S_ISREG(info.st_mode) and info.st_nlink == 1
                    and self.inputs.get(rel) != (info.st_size, info.st_mtime_ns))

        with open(results, "wb") as fh:
            return Outcome(pack_dir(self.job_dir, fh, keep=changed))

    def close(self) -> None:
        shutil.rmtree(self.job_dir, ignore_errors=True)
