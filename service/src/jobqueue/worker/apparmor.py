"""Confine a job by its software environment's AppArmor profile as well as its slot's.

A slot's unit runs `run` under the slot's profile (jobqueue-job-N), which holds what a
job of any environment may need. Just before it executes the job, `run` asks AppArmor to
stack the job's environment's profile on its own from that exec on: the job then has
only what both allow, so only its own environment's paths. Stacking only narrows what
a process may do, so AppArmor allows it under no_new_privs (which the unit sets); the
slot's profile allows it for the environments' profiles alone, and those allow no
further change, so the job cannot leave the stack.
"""

from __future__ import annotations

import errno
import os

# Per-LSM process attributes (Linux 5.8+) first; the older shared file after.
EXEC_ATTRIBUTES = ("/proc/self/attr/apparmor/exec", "/proc/self/attr/exec")


def stack_onexec(profile: str) -> None:
    """From this process' next exec on, confine it by `profile` too. OSError if the
    kernel refuses (the profile is not loaded, or this one may not stack it)."""
    for path in EXEC_ATTRIBUTES:
        try:
            fd = os.open(path, os.O_WRONLY)
        except FileNotFoundError:
            continue
        try:
            os.write(fd, f"stack {profile}".encode())
        finally:
            os.close(fd)
        return
    raise OSError(errno.ENOENT, "this kernel has no AppArmor process attributes")
