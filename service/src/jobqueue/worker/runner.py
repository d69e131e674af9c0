"""How a job's process is started, limited and stopped: the seam the worker calls.

`LocalRunner` starts the job's script in its own session (so the whole process group
can be killed) under resource limits. Confinement (a separate user, an AppArmor
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
    def __init__(self, popen: subprocess.Popen):
        self.popen = popen

    def wait(self, timeout: float | None) -> int | None:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

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


class LocalRunner(Runner):
    """Runs jobs as the worker's own user, limited by rlimits."""

    def __init__(self, python: str = sys.executable):
        self.python = python  # runs the limits shim; jobs may use another interpreter

    def confine(self, request: RunRequest, argv: list[str]) -> list[str]:
        """Wrap the command in confinement; the plain runner adds none."""
        return argv

    def start(self, request: RunRequest) -> RunningProcess:
        command = [self.python, "-m", "jobqueue.worker.limits",
                   json.dumps(request.limits.rlimits()), "--", *request.argv]
        with open(request.stdout, "wb") as out, open(request.stderr, "wb") as err:
            popen = subprocess.Popen(
                self.confine(request, command), cwd=request.job_dir, env=request.env,
                stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True,
                close_fds=True)
        return _ProcessGroup(popen)
