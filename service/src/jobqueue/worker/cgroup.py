"""Reading a cgroup (v2) for a job's accounting: `memory.peak` (Linux 5.19+; older
kernels: `memory.current`, sampled) and `cpu.stat`'s `usage_usec`. Files that are
missing or unreadable give None: accounting is best effort, never a job's failure."""

from __future__ import annotations

from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
MAX_READ = 4096  # these files are a few lines; a bigger one is not what we want


def path_of(control_group: str, root: Path = ROOT) -> Path | None:
    """The directory of a unit's `ControlGroup` (systemctl show), e.g.
    `/system.slice/x.service`; None for an empty one (the unit is not running)."""
    rel = control_group.strip().lstrip("/")
    if not rel or ".." in rel.split("/"):
        return None
    return root / rel


def own(proc_self_cgroup: str, root: Path = ROOT) -> Path | None:
    """This process's cgroup v2 directory, from the text of /proc/self/cgroup."""
    for line in proc_self_cgroup.splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":
            return path_of(path, root) or root
    return None


def _read(path: Path) -> str | None:
    try:
        with open(path, "rb") as fh:
            return fh.read(MAX_READ).decode("ascii", "replace")
    except OSError:
        return None


def _number(text: str | None) -> int | None:
    if text is None:
        return None
    text = text.strip()
    return int(text) if text.isdigit() else None


def parse_cpu_stat(text: str | None) -> int | None:
    """`usage_usec` of a cpu.stat: microseconds of CPU (user + system)."""
    for line in (text or "").splitlines():
        key, _, value = line.partition(" ")
        if key == "usage_usec":
            return _number(value)
    return None


def memory_peak(directory: Path) -> int | None:
    """The cgroup's peak memory in bytes, or its current use where the kernel keeps no
    peak (the caller then samples it)."""
    peak = _number(_read(directory / "memory.peak"))
    return peak if peak is not None else _number(_read(directory / "memory.current"))


def cpu_usec(directory: Path) -> int | None:
    return parse_cpu_stat(_read(directory / "cpu.stat"))
