"""Inside a job slot's unit, as the slot's own user: `python -m jobqueue.worker.slot
armed|run|finish SLOT_DIR`.

A slot directory holds what the worker hands over and what it takes back:

    request.json   written by the worker: the job's argv, environment, rlimits, limits,
                   the grace between SIGTERM and SIGKILL
    output-limit   written by the worker: the job's output limit in bytes, which the
                   unit's root step makes the disk quota of the slot's directories
    output-limit-reached  made by that root step when the quota refused the job a write
    go             the worker's FIFO (0600): it writes "go" there once the job's inputs,
                   request and limits are in place, for the unit's root step to read
    quota-set      made by that root step once it has set the job's quota
    sandbox-stale  made by it instead when a path the unit's sandbox masks was made, or
                   made again, since the unit started: the worker starts it again
    tmp/ var-tmp/ shm/    the job's /tmp, /var/tmp and /dev/shm (bound there by the unit)
    work/          the job's directory: the worker's inputs, then whatever the job makes
    outbox/        stdout, stderr, status.json, results.tar.gz: for the worker to read

`armed` is the unit's main process: started before the worker has the job, it waits
until the unit's root step, told go by the worker, has set the job's quota (it marks
quota-set, then sends GO_SIGNAL), then does what `run` does. `run` starts the job,
keeps its files under the output limit while it runs, and when the job's first process
ends, kills every process the slot's user still has (a daemonised child does not
outlive its job), then packs the files the job made (regular files owned by the
slot's user only: no links, nothing of the worker's) and writes the job's status;
stopped, it gives the job SIGTERM and, after the grace, SIGKILL. `finish` does that
packing for a `run` that could not: one killed (the unit's memory limit, its stop
timeout), or one whose results did not fit in the job's disk quota, which the unit's
root step lifts first. Both run with the job's own identity and confinement, so
nothing they read can be more than the job could read. The unit wipes the slot as
root around them (the worker role's jobqueue-slot-wipe: before a start, and after a
stop).
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import secrets
import select
import signal
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

from jobqueue.worker import apparmor, cgroup, limits, seccomp

REQUEST = "request.json"
OUTPUT_LIMIT = "output-limit"  # the worker's: bytes, for the unit's root step to set the quota
OUTPUT_LIMIT_REACHED = "output-limit-reached"  # root's: the kernel refused the job a write
EXIT = "exit"  # root's: how the unit's main process ended, as systemd told ExecStopPost
GO = "go"  # the worker's FIFO, read by the unit's root step
QUOTA_SET = "quota-set"  # root's: the job's quota is in force, it may start
SANDBOX_STALE = "sandbox-stale"  # root's: a path the sandbox masks changed since it was made
# Sent by the root step after QUOTA_SET. Its default action is to ignore it: sent before
# `armed` blocks it, it is lost rather than fatal, and QUOTA_SET tells.
GO_SIGNAL = signal.SIGWINCH
STATUS = "status.json"
RESULTS = "results.tar.gz"
CANNOT_START = 126  # as a shell's exit status for a command found but not executable
USAGE_SECONDS = 1.0  # between two measurements of the job's disk use


class OutputLimit(Exception):
    pass


def own_files(root: Path):
    """(relative path, lstat) of the slot user's regular files under `root`, sorted;
    links, devices and the worker's files (the untouched inputs) are left out. Walked
    without recursion (a job may nest directories past Python's recursion limit);
    what cannot be listed (a path past PATH_MAX, a directory without rights) is
    skipped, as os.walk does."""
    uid = os.getuid()
    pending = [root]
    while pending:
        directory = pending.pop()
        try:
            with os.scandir(directory) as entries:
                names = sorted((entry.name, entry.is_dir(follow_symlinks=False))
                               for entry in entries)
        except OSError:
            continue
        for name, is_dir in names:
            if is_dir:
                continue
            path = Path(directory, name)
            try:
                info = path.lstat()
            except OSError:
                continue
            if stat.S_ISREG(info.st_mode) and info.st_uid == uid and info.st_nlink == 1:
                yield path.relative_to(root).as_posix(), info
        pending.extend(Path(directory, name) for name, is_dir in reversed(names) if is_dir)


def log_bytes(slot: Path) -> int:
    total = 0
    for log in ("stdout", "stderr"):
        with contextlib.suppress(OSError):
            total += (slot / "outbox" / log).lstat().st_size
    return total


def disk_use(slot: Path) -> int:
    """Bytes the job has written: its own files in work/ and its two logs."""
    return log_bytes(slot) + sum(info.st_size for _, info in own_files(slot / "work"))


def _signal_job(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signum)


def _kill_the_rest() -> None:
    """SIGKILL every other process of this user: in a slot, all of them are the job's."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(-1, signal.SIGKILL)


def _clear_own(directory: Path) -> None:
    """Remove what this user owns below `directory` (not the worker's inputs), its own
    dirs made writable first. Best effort: the slot's unit wipes the slot as root after
    a stop."""
    with contextlib.suppress(RecursionError):  # os.walk on a tree nested too deep
        _clear_own_walk(directory)


def _clear_own_walk(directory: Path) -> None:
    uid = os.getuid()
    for dirpath, dirnames, _ in os.walk(directory, followlinks=False):
        for name in dirnames:
            path = Path(dirpath, name)
            with contextlib.suppress(OSError):
                if path.lstat().st_uid == uid and not path.is_symlink():
                    path.chmod(0o700)
    for dirpath, dirnames, filenames in os.walk(directory, topdown=False, followlinks=False):
        for name in filenames + dirnames:
            path = Path(dirpath, name)
            with contextlib.suppress(OSError):
                if path.lstat().st_uid != uid:
                    continue
                if path.is_dir() and not path.is_symlink():
                    path.rmdir()
                else:
                    path.unlink()


def _create(path: Path):
    """A new file for the worker to read, whatever the job left at that name."""
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except IsADirectoryError:  # moved aside whole (the job may have locked what is in it)
        path.rename(path.with_name(f".{path.name}-{secrets.token_hex(8)}"))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    os.fchmod(fd, 0o644)  # whatever the umask: the worker reads it as "other"
    return os.fdopen(fd, "wb")


def _write_json(path: Path, data: dict) -> None:
    with _create(path) as fh:
        fh.write(json.dumps(data).encode())


def open_regular(path: Path, uid: int):
    """For the worker: open a file of the outbox only if it is a regular file of the
    slot's user (the job could have left a link or a FIFO at that name)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_uid != uid or info.st_nlink != 1:
        os.close(fd)
        raise PermissionError(f"{path} is not a regular file of the slot's user")
    return os.fdopen(fd, "rb")


def armed(slot: Path) -> int:
    """`run`, once the unit's root step has set the job's quota. Stopped before that (the
    worker stops), there is no job: the root step then packs nothing (no QUOTA_SET)."""
    waited = {GO_SIGNAL, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, waited)
    while not (slot / QUOTA_SET).exists():
        if signal.sigwait(waited) == signal.SIGTERM:
            return 0
    signal.pthread_sigmask(signal.SIG_UNBLOCK, waited)  # the job inherits the mask
    return run(slot)


def run(slot: Path) -> int:
    if os.getuid() == 0:  # kill(-1) below would hit the whole machine
        print("jobqueue slot: refusing to run a job as root", file=sys.stderr)
        return 2
    request = json.loads((slot / REQUEST).read_text())
    outbox = slot / "outbox"
    limit = request["output_limit"]
    quota_kept = seccomp.Filter()

    stack = request.get("apparmor_stack")

    def confine() -> None:
        if stack:
            try:
                apparmor.stack_onexec(stack)
            except OSError as exc:  # fd 2 is the job's stderr by now
                os.write(2, f"jobqueue slot: cannot confine the job by {stack}: {exc}\n".encode())
                raise
        limits.apply(request["rlimits"])
        quota_kept.install()

    with _create(outbox / "stdout") as out, _create(outbox / "stderr") as err:
        # `run` has one thread: the profile, limits and filter can be set between fork
        # and exec.
        try:
            job = subprocess.Popen(
                request["argv"], cwd=slot / "work", env=request["env"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True,
                preexec_fn=confine)
        except (OSError, subprocess.SubprocessError) as exc:
            err.write(f"jobqueue slot: the job could not start: {exc}\n".encode())
            _write_json(outbox / STATUS, {"exit_code": CANNOT_START, "limit": None})
            return CANNOT_START
    # Stopped from outside (cancel, wall time): the job gets the signal, and what is
    # left of it after the grace gets SIGKILL. The grace is `run`'s to keep, not the
    # unit's TimeoutStopSec: that one also bounds `finish`, which needs longer.
    grace = math.ceil(request.get("kill_grace", 0))

    def stop(*_):
        _signal_job(job.pid, signal.SIGTERM)
        if grace > 0:
            # A second stop keeps the first one's deadline.
            if earlier := signal.alarm(grace):
                signal.alarm(earlier)
        else:
            _kill_the_rest()

    signal.signal(signal.SIGALRM, lambda *_: _kill_the_rest())
    signal.signal(signal.SIGTERM, stop)
    # Woken by the job's end (its pidfd turns readable), or each second to measure.
    ended = select.poll()
    ended.register(os.pidfd_open(job.pid), select.POLLIN)
    exceeded = None
    while job.poll() is None:
        if not ended.poll(USAGE_SECONDS * 1000) and disk_use(slot) >= limit:
            exceeded = "output"
            _kill_the_rest()
    _kill_the_rest()
    # A job that used up its quota's files leaves no room for it: `finish` then packs,
    # and the unit's exit status (below) still tells the job's.
    with contextlib.suppress(OSError):
        _write_json(outbox / STATUS, {"exit_code": job.returncode, "limit": exceeded})
    # No process of the job is left (kill(-1) spares none of this user's): what is
    # packed and measured now is final. Results that do not fit in the job's quota
    # are packed by `finish` once the unit's root step has lifted it.
    with contextlib.suppress(OSError):
        settle(slot, job.returncode)
    return exit_status(job.returncode)


def exit_status(returncode: int) -> int:
    """`run`'s own exit status, the job's as a shell gives it (128 + N for signal N):
    systemd records it as the unit's, where the job cannot write (status.json is in the
    job's reach)."""
    return 128 - returncode if returncode < 0 else returncode


def pack(slot: Path) -> int:
    """Pack the job's own files into outbox/results.tar.gz; bytes of content packed."""
    request = json.loads((slot / REQUEST).read_text())
    budget = request["output_limit"] - log_bytes(slot)
    if budget < 0:
        raise OutputLimit(-budget)
    work, total = slot / "work", 0
    with _create(slot / "outbox" / RESULTS) as dest, tarfile.open(fileobj=dest, mode="w:gz") as tar:
        for rel, info in own_files(work):
            total += info.st_size
            if total >= budget:
                raise OutputLimit(total)
            try:
                source = os.open(work / rel, os.O_RDONLY | os.O_NOFOLLOW)
            except OSError as exc:
                if exc.errno in (errno.EACCES, errno.EPERM):
                    os.chmod(work / rel, info.st_mode | stat.S_IRUSR, follow_symlinks=False)
                    source = os.open(work / rel, os.O_RDONLY | os.O_NOFOLLOW)
                else:
                    raise
            with os.fdopen(source, "rb") as fh:
                member = tarfile.TarInfo(rel)
                member.size, member.mtime, member.mode = info.st_size, info.st_mtime, 0o644
                tar.addfile(member, fh)
    return total


def memory_peak() -> int | None:
    """The peak memory of this unit's cgroup (the whole job's), read by `finish`: no
    process of the job is left then, and the cgroup is gone once `finish` ends."""
    try:
        directory = cgroup.own(Path("/proc/self/cgroup").read_text())
    except OSError:
        return None
    return cgroup.memory_peak(directory) if directory is not None else None


def settle(slot: Path, exit_code) -> None:
    """Pack the job's results and write its final status.json, marked packed for the
    unit's root step. The files' own sizes decide the output limit, as `run` checked
    them while the job ran: a job it stopped there is over it here too."""
    status = {"exit_code": exit_code if type(exit_code) is int else None, "limit": None,
              "memory_peak": memory_peak()}
    try:
        status["results_bytes"] = pack(slot)
    except OutputLimit:
        (slot / "outbox" / RESULTS).unlink(missing_ok=True)
        status["limit"] = "output"
    _write_json(slot / "outbox" / STATUS, status | {"packed": True})


def finish(slot: Path) -> int:
    """Pack for a `run` that did not, now that every process of the job is gone. The
    job could write the status.json `run` left (or plant one after killing `run`), so
    only its exit code is kept, which tells signal N from exit status 128 + N and
    nothing more (systemd's record of `run` decides)."""
    try:
        reported = json.loads((slot / "outbox" / STATUS).read_text()).get("exit_code")
    except (OSError, ValueError, AttributeError):
        reported = None  # `run` was stopped before it ended
    settle(slot, reported)
    _clear_own(slot / "work")  # the worker removes its own inputs
    return 0


def main(argv: list[str]) -> int:
    steps = {"armed": armed, "run": run, "finish": finish}
    if len(argv) != 2 or argv[0] not in steps:
        print("usage: python -m jobqueue.worker.slot armed|run|finish SLOT_DIR",
              file=sys.stderr)
        return 2
    return steps[argv[0]](Path(argv[1]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
