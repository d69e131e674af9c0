"""Apply resource limits, then exec the job: `python -m jobqueue.worker.limits LIMITS -- argv`.

Limits are set in a fresh process just before exec rather than in a preexec_fn, which
is unsafe in the threaded worker daemon.
"""

from __future__ import annotations

import json
import os
import resource
import sys

RLIMITS = {
    "cpu_seconds": resource.RLIMIT_CPU,
    "memory_bytes": resource.RLIMIT_AS,
    "open_files": resource.RLIMIT_NOFILE,
    "max_file_size": resource.RLIMIT_FSIZE,
}


def apply(limits: dict[str, int]) -> None:
    for key, value in limits.items():
        resource.setrlimit(RLIMITS[key], (value, value))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def main(argv: list[str]) -> None:
    if len(argv) < 3 or argv[1] != "--":
        sys.exit("usage: python -m jobqueue.worker.limits LIMITS_JSON -- COMMAND [ARG...]")
    apply(json.loads(argv[0]))
    os.execvp(argv[2], argv[2:])


if __name__ == "__main__":
    main(sys.argv[1:])
