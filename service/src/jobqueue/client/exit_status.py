"""What the `jobqueue` command exits with (its --help lists them), and for a job the
way a shell would give its own exit status."""

from __future__ import annotations

from typing import Any

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_JOB_NOT_SUCCEEDED = 3
EXIT_WAIT_TIMEOUT = 4
EXIT_JOB_CANCELLED = 5
EXIT_JOB_TIMED_OUT = 124  # as timeout(1)
EXIT_INTERRUPTED = 130


def job_exit_status(job: dict[str, Any]) -> int:
    """What the CLI exits with for a finished job: 0 if it succeeded; else per state,
    or the job's own exit status as a shell gives it (128 + N for signal N)."""
    state, code = job.get("state"), job.get("exit_code")
    if state == "succeeded":
        return EXIT_OK
    if state == "timed_out":
        return EXIT_JOB_TIMED_OUT
    if state == "cancelled":
        return EXIT_JOB_CANCELLED
    if isinstance(code, int) and not isinstance(code, bool) and code != 0:
        return code if 0 < code < 256 else min(128 - code, 255) if code < 0 else 255
    return EXIT_JOB_NOT_SUCCEEDED
