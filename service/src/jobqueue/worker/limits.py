"""The resource limits a job runs under, by name: set in-process by the slot's `run`,
or by prlimit(1) for the local runner (see `tether`)."""

from __future__ import annotations

import resource

# Each limit by name: its resource, and prlimit(1)'s option for it.
RLIMITS = {
    "cpu_seconds": (resource.RLIMIT_CPU, "cpu"),
    "memory_bytes": (resource.RLIMIT_AS, "as"),
    "open_files": (resource.RLIMIT_NOFILE, "nofile"),
    "max_file_size": (resource.RLIMIT_FSIZE, "fsize"),
}


def apply(limits: dict[str, int]) -> None:
    for key, value in limits.items():
        resource.setrlimit(RLIMITS[key][0], (value, value))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def prlimit_options(limits: dict[str, int]) -> list[str]:
    """The same limits, and no core files, as prlimit(1) options."""
    return [f"--{RLIMITS[key][1]}={value}" for key, value in limits.items()] + ["--core=0"]

