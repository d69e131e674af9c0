"""Waiting for a job or an array on the command line, showing its progress."""

from __future__ import annotations

import itertools
import sys
import threading
import time
from typing import Any, Self, TextIO

from jobqueue.client import display
from jobqueue.client.api import TERMINAL_STATES, Client
from jobqueue.client.exit_status import EXIT_JOB_NOT_SUCCEEDED, EXIT_OK, job_exit_status

class Progress:
    """Shows a job's state changes and elapsed time on ``stream`` while waiting.

    Every state change is a line of its own. On a terminal a spinner line also shows the
    current state and the time waited; it is redrawn in place and erased at the end.
    """

    FRAMES = "|/-\\"

    def __init__(self, job_id: Any, stream: TextIO | None = None) -> None:
        self.job_id = job_id
        self.stream = stream if stream is not None else sys.stderr
        self.tty = _isatty(self.stream)
        self.started = time.monotonic()
        self.state: str | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Self:
        if self.tty:
            self._thread = threading.Thread(target=self._spin, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            self._clear()

    def update(self, job: dict[str, Any]) -> None:
        state = str(job.get("state"))
        if state == self.state:
            return
        self.state = state
        details = []
        if job.get("worker") and state == "running":
            details.append(f"on {job['worker']}")
        if job.get("attempts") and int(job["attempts"]) > 1 and state in ("queued", "running"):
            details.append(f"attempt {job['attempts']}")
        if state in TERMINAL_STATES:
            if job.get("exit_code") is not None:
                details.append(f"exit code {job['exit_code']}")
            if job.get("message"):
                details.append(str(job["message"]))
        suffix = f" ({'; '.join(details)})" if details else ""
        with self._lock:
            self._clear()
            self.stream.write(f"[{self.elapsed()}] job {self.job_id}: {state}{suffix}\n")
            self.stream.flush()

    def elapsed(self) -> str:
        return display.clock(time.monotonic() - self.started)

    def _spin(self) -> None:
        for frame in itertools.cycle(self.FRAMES):
            if self._stop.wait(0.1):
                return
            with self._lock:
                line = f"{frame} job {self.job_id} {self.state or 'waiting'}  {self.elapsed()}"
                self.stream.write("\r" + line + "\033[K")
                self.stream.flush()

    def _clear(self) -> None:
        if self.tty:
            self.stream.write("\r\033[K")
            self.stream.flush()


def wait_for_array(client: Client, array_id: str, timeout: float | None, as_json: bool) -> int:
    """Wait until no task of the array is queued or running; exit 0 only if all succeeded."""
    shown: list[dict] = []

    def update(summary: dict[str, Any]) -> None:
        if not as_json and (not shown or shown[-1] != summary.get("counts")):
            shown.append(summary.get("counts"))
            counts = ", ".join(f"{n} {s}" for s, n in sorted(summary["counts"].items()))
            print(f"array {array_id}: {counts}", file=sys.stderr, flush=True)

    summary = client.wait_array(array_id, timeout=timeout, on_update=update)
    counts = summary.get("counts", {})
    if as_json:
        display.print_json(summary)
    else:
        print(f"array {array_id} " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    return EXIT_OK if set(counts) <= {"succeeded"} else EXIT_JOB_NOT_SUCCEEDED


def wait_and_report(client: Client, job_id: Any, timeout: float | None, as_json: bool) -> int:
    with Progress(job_id) as progress:
        job = client.wait(job_id, timeout=timeout, on_update=progress.update)
    if as_json:
        display.print_json(job)
    else:
        print(f"job {job_id} {job.get('state')}")
    return job_exit_status(job)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
