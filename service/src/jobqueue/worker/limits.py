"""The resource limits a job runs under, by name: set in-process by the slot's `run`,
or by prlimit(1) for the local runner (see `tether`)."""

from __future__ import annotations

import resource

RLIMITS = {
    "cpu_seconds": resource.RLIMIT_CPU,
    "memory_bytes": resource.RLIMIT_AS,
    "open_files": resource.RLIMIT_NOFILE,
    "max_file_size": resource.RLIMIT_FSIZE,
}
PRLIMIT_OPTIONS = {"cpu_seconds": "cpu", "memory_bytes": "as", "open_files": "nofile",
                   "max_file_size": "fsize"}


def apply(limits: dict[str, int]) -> None:
    for key, value in limits.items():
        resource.setrlimit(RLIMITS[key], (value, value))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

