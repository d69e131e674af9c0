"""How a job's process is started, limited and stopped: the seam the worker calls.

`LocalRunner` starts the job's script in its own session (so the whole process group
can be killed) under resource limits, through a tether that kills the job if the
worker dies (see `jobqueue.worker.tether`). Confinement (a separate user, an AppArmor
profile) plugs in at `LocalRunner.confine`, which wraps the command line.
"""

from __future__ import annotations

import abc
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path


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


class RunningProcess(abc.ABC):
    @abc.abstractmethod
    def wait(self, timeout: float | None) -> int | None:
        """The exit status (negative: killed by that signal), or None if still running."""

    @abc.abstractmethod
    def kill(self, grace: float) -> None:
        """Stop the job and everything it started: SIGTERM, then SIGKILL after `grace`."""


class Runner(abc.ABC):
    @abc.abstractmethod
    def start(self, request: RunRequest) -> RunningProcess:
        """Start the job in its directory; return at once."""


class _ProcessGroup(RunningProcess):
    def __init__(self, popen: subprocess.Popen, tether: int):
        self.popen = popen
        self.tether = tether  # write end of the tether's pipe: closing it kills the job
        self._lock = threading.Lock()

    def wait(self, timeout: float | None) -> int | None:
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        self._release_tether()
        return code

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
            self.popen.wait()
        # Children that outlived the leader are still in its process group.
        self._signal_group(signal.SIGKILL)
        self._release_tether()


class LocalRunner(Runner):
    """Runs jobs as the worker's own user, limited by rlimits."""

    def __init__(self, python: str = sys.executable):
        self.python = python  # runs the limits shim; jobs may use another interpreter

    def confine(self, request: RunRequest, argv: list[str]) -> list[str]:
        """Wrap the command in confinement; the plain runner adds none."""
        return argv

    def start(self, request: RunRequest) -> RunningProcess:
        # Only the worker holds the write end (pipes are not inherited by other jobs).
        watch, tether = os.pipe()
        command = [self.python, "-m", "jobqueue.worker.tether", str(watch),
                   json.dumps(request.limits.rlimits()), "--", *request.argv]
        try:
            with open(request.stdout, "wb") as out, open(request.stderr, "wb") as err:
                popen = subprocess.Popen(
                    self.confine(request, command), cwd=request.job_dir, env=request.env,
                    stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True,
                    close_fds=True, pass_fds=(watch,))
        except BaseException:
            os.close(tether)
            raise
        finally:
            os.close(watch)
        return _ProcessGroup(popen, tether)
