"""A job may not change the quota project of its files.

A slot's disk limit is a project quota: every file the job makes inherits the slot's
project from its directory. The owner of a file may change that (the FS_IOC_FSSETXATTR
ioctl, or the project-inheritance flag through FS_IOC_SETFLAGS), and a file moved to
another project no longer counts against the slot: the job would write without limit.
systemd's SystemCallFilter names system calls, not ioctl requests, so the slot's `run`
installs this filter in the job's process before it executes the job: those two
requests fail with EPERM, for the job and everything it starts (a seccomp filter is
inherited and cannot be removed). Every other ioctl, and every other system call, is
left to the unit's own filter.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct

# Per architecture: its audit number (seccomp_data.arch) and ioctl's system call number.
ARCHITECTURES = {"x86_64": (0xC000003E, 16), "aarch64": (0xC00000B7, 29)}
# The requests refused (the kernel reads the low 32 bits of the request).
REFUSED = (
    0x401C5820,  # FS_IOC_FSSETXATTR: sets the project ID and its inheritance flag
    0x40086602,  # FS_IOC_SETFLAGS
    0x40046602,  # FS_IOC32_SETFLAGS
)

# Classic BPF, as seccomp reads it (linux/filter.h, linux/seccomp.h).
LOAD_WORD = 0x20      # BPF_LD | BPF_W | BPF_ABS
JUMP_IF_EQUAL = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
RETURN = 0x06         # BPF_RET | BPF_K
ALLOW = 0x7FFF0000
REFUSE = 0x00050000 | errno.EPERM  # SECCOMP_RET_ERRNO
KILL = 0x80000000     # SECCOMP_RET_KILL_PROCESS: a call of another architecture
NR, ARCH, REQUEST = 0, 4, 24  # offsets in seccomp_data (arg 1's low word, little-endian)

PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2


def program(machine: str | None = None) -> bytes:
    """The filter's instructions for this machine's architecture."""
    machine = machine or os.uname().machine  # platform's costs the slot's `run` a module
    if machine not in ARCHITECTURES:
        raise OSError(f"no seccomp filter for the {machine} architecture")
    audit_arch, ioctl = ARCHITECTURES[machine]
    # (code, jump if true, jump if false, constant); jumps count the instructions skipped.
    refusals = len(REFUSED)
    steps = [(LOAD_WORD, 0, 0, ARCH),
             (JUMP_IF_EQUAL, 1, 0, audit_arch),
             (RETURN, 0, 0, KILL),
             (LOAD_WORD, 0, 0, NR),
             (JUMP_IF_EQUAL, 0, refusals + 1, ioctl),
             (LOAD_WORD, 0, 0, REQUEST)]
    steps += [(JUMP_IF_EQUAL, refusals - n, 0, request) for n, request in enumerate(REFUSED)]
    steps += [(RETURN, 0, 0, ALLOW), (RETURN, 0, 0, REFUSE)]
    return b"".join(struct.pack("=HBBI", *step) for step in steps)


class _Program(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]


class Filter:
    """Made before the fork; `install` then only calls prctl (in the job's process,
    before exec: `run` has one thread, so that is safe between fork and exec)."""

    def __init__(self, machine: str | None = None):
        self.instructions = program(machine)
        self.prog = _Program(len(self.instructions) // 8, self.instructions)
        self.libc = ctypes.CDLL(None, use_errno=True)

    def install(self) -> None:
        """Filter this process and everything it starts."""
        if self.libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 or self.libc.prctl(
                PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(self.prog), 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "seccomp filter not installed")
