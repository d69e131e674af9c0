"""The filter the slot's `run` puts on a job, installed in a real process here: the
requests that would move a file out of the slot's quota project fail with EPERM, and
nothing else changes. On the VMs a hostile job tries them on the slots' file system
(tests/worker/test_hostile.py)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from jobqueue.worker import seccomp

ATTEMPT = """
import errno, fcntl, os, sys
from jobqueue.worker import seccomp
fd = os.open(sys.argv[1], os.O_RDONLY)
if sys.argv[2] == "filtered":
    seccomp.Filter().install()
for name, request in (("FS_IOC_FSSETXATTR", 0x401C5820), ("FS_IOC_SETFLAGS", 0x40086602),
                      ("FS_IOC32_SETFLAGS", 0x40046602), ("FS_IOC_GETFLAGS", 0x80086601),
                      ("FS_IOC_FSGETXATTR", 0x801C581F)):
    try:
        fcntl.ioctl(fd, request | (0xABCD << 32) if name == "FS_IOC_SETFLAGS" else request,
                    bytearray(28))
        print(name, "done")
    except OSError as exc:  # (high bits set on one: the kernel reads the low 32 only)
        print(name, errno.errorcode[exc.errno])
print("write", os.write(os.open(os.devnull, os.O_WRONLY), b"x"))
"""


def attempts(path, mode: str) -> dict[str, str]:
    result = subprocess.run([sys.executable, "-c", ATTEMPT, str(path), mode],
                            capture_output=True, text=True, timeout=60, check=True)
    return dict(line.split(" ", 1) for line in result.stdout.splitlines())


@pytest.mark.skipif(platform.machine() not in seccomp.ARCHITECTURES,
                    reason="no filter for this architecture")
def test_the_job_cannot_change_its_files_quota_project_and_nothing_else_changes(tmp_path):
    path = tmp_path / "file"
    path.write_text("x")
    before, after = attempts(path, "plain"), attempts(path, "filtered")
    for request in ("FS_IOC_FSSETXATTR", "FS_IOC_SETFLAGS", "FS_IOC32_SETFLAGS"):
        assert after[request] == "EPERM", (request, before[request])
    for request in ("FS_IOC_GETFLAGS", "FS_IOC_FSGETXATTR"):
        assert after[request] == before[request] != "EPERM"
    assert after["write"] == "1"


def test_each_architecture_has_its_own_program_and_others_none():
    programs = {machine: seccomp.program(machine) for machine in seccomp.ARCHITECTURES}
    assert len(set(programs.values())) == len(programs)
    assert all(len(code) % 8 == 0 for code in programs.values())
    with pytest.raises(OSError, match="no seccomp filter for the sparc"):
        seccomp.program("sparc")
