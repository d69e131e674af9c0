"""Each job confined in a slot: `runner = "systemd"`.

A worker has a fixed pool of slots, one per job it may run at once. Slot N is a user of
its own (`jq-slotN`), a directory (`slots_dir/N`, see `jobqueue.worker.slot`) and a
systemd unit (`jobqueue-job@N.service`) that runs the job as that user, under its
AppArmor profile with the job's environment's stacked on it (`jobqueue.worker.apparmor`),
without network, in a cgroup with the job's memory, CPU and task limits. The worker
itself stays unprivileged: it starts, stops and sets limits on those units through
systemd's D-Bus API, which a polkit rule allows for the worker's user and these unit
names only (the roles install both). A slot's user cannot read the worker's token or
config, other slots, or anything its profiles do not list.

A slot's unit is started ahead of its job (armed): once the worker has read a job's
results from it, it starts the unit again, and the root wipe, the sandbox and `run`'s
own start take place while the results go up and the next job is claimed. The worker
then writes the inputs, `request.json` and `output-limit` into the slot, sets the
limits (as `systemctl set-property --runtime` would: they apply to the running unit at
once), says go on the slot's FIFO, which has the unit's root step set the job's quota
and `run` start the job, and waits for systemd to signal the end, all over one D-Bus
connection (`systemd_bus`). The unit's root steps hold the job's files to that output
limit with a project quota of the slots' file system, and mark `output-limit-reached`
when the kernel refused it more. The unit packs the job's results itself, as the
slot's user, so nothing is read with more rights than the job had; the worker copies
them out of the slot's outbox only if they are regular files of the slot's user.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import pwd
import shutil
import stat
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import NoReturn
from urllib.parse import urlsplit

from jobqueue.worker import cgroup
from jobqueue.worker import slot as slot_files
from jobqueue.worker.runner import (
    Limits,
    Outcome,
    Runner,
    RunningProcess,
    RunRequest,
    Usage,
    Workspace,
)
from jobqueue.worker.settings import WorkerSettings
from jobqueue.worker.systemd_bus import JobCanceled, Systemd, SystemdError

log = logging.getLogger("jobqueue.worker")

# The AppArmor profile stacked on a slot's for a job of the worker's own Python; for
# one of an environment, this, a dash and its name (roles/apparmor generates them).
ENV_PROFILE = "jobqueue-env"
SYSTEMD_TIMEOUT = 120.0  # a stop waits for the unit's clean-up, slow under emulation
# A change systemd did not signal (its bus reconnected) is seen within this.
WAIT_SLICE = 5.0
# systemd's Result for a unit ended by a limit it enforces.
LIMIT_RESULTS = {"oom-kill": "memory", "timeout": "walltime"}

# Started in a slot before the first job: must be denied both.
CANARY = """
import json, socket, sys
found = {}
try:
    open(sys.argv[1]).read(1)
    found["secret"] = "read"
except OSError as exc:
    found["secret"] = type(exc).__name__
try:
    socket.create_connection((sys.argv[2], int(sys.argv[3])), timeout=5).close()
    found["network"] = "connected"
except OSError as exc:
    found["network"] = type(exc).__name__
print(json.dumps(found))
"""


class SlotBroken(SystemdError):
    """A slot whose unit failed before its job could start (its wipe, most likely):
    set aside for good, while the worker goes on with its other slots."""


# How the unit ended, and what it used: systemd keeps CPUUsageNSec (its cgroup's CPU
# time), when the unit became active (the job's start: an armed unit waits before) and
# when its main process exited, after the unit has stopped, until it unloads the unit
# (at once, for one that stopped cleanly and nothing references).
JOB_TIMES = ("ActiveEnterTimestampMonotonic", "ExecMainExitTimestampMonotonic")
STATE_PROPERTIES = ("ActiveState", "Result", "ExecMainCode", "ExecMainStatus", "ControlGroup",
                    "CPUUsageNSec", *JOB_TIMES)


def environment_profile(environment: str | None) -> str:
    return ENV_PROFILE if environment is None else f"{ENV_PROFILE}-{environment}"


def _count(text: str | None) -> int | None:
    """A whole number systemd gives, or None for empty or the infinity it uses for
    unknown (2^64 - 1)."""
    if not text or not text.isdigit() or int(text) >= (1 << 64) - 1:
        return None
    return int(text)


def job_wall(state: dict[str, str]) -> float | None:
    """Seconds from the job's start (its unit became active) to the exit of the slot's
    main process, as systemd has them; None once it has forgotten them."""
    start, end = (_count(state.get(name)) for name in JOB_TIMES)
    return (end - start) / 1e6 if start and end and end >= start else None


def slot_usage(state: dict[str, str], sampled_peak: int | None, sampled_cpu_usec: int | None,
               reported_peak, memory_limit: int, observed_wall: float | None = None) -> Usage:
    """An ended slot unit's usage. CPU and wall time from systemd; where it had unloaded
    the unit, the CPU time the worker last read from the unit's cgroup and the wall
    time it saw (`observed_wall`). Peak memory: the highest the worker read from the
    unit's cgroup while it ran, or what the slot's `run` (or `finish`) read last in it
    (the job's processes are gone by then; capped at the job's memory limit, which the
    cgroup cannot pass), whichever is higher."""
    nsec = _count(state.get("CPUUsageNSec"))
    cpu = nsec / 1e9 if nsec is not None else \
        (sampled_cpu_usec / 1e6 if sampled_cpu_usec is not None else None)
    wall = job_wall(state)
    if wall is None:
        wall = observed_wall
    peaks = [sampled_peak] if sampled_peak is not None else []
    if isinstance(reported_peak, int) and not isinstance(reported_peak, bool) and \
            reported_peak >= 0:
        peaks.append(min(reported_peak, memory_limit))
    return Usage(cpu_seconds=cpu, peak_memory=max(peaks) if peaks else None,
                 wall_seconds=wall)


def job_exit_code(state: dict[str, str], reported) -> int:
    """The job's exit code, from systemd's record of the slot's main process (`run`,
    which exits with the job's status, 128 + N for signal N): a job can write the
    status.json `run` leaves, and can kill `run`, but cannot make it exit 0. What
    status.json says only tells signal N (reported as -N) from an exit status of
    128 + N; a `run` that was killed, or whose end systemd did not see, is a failure."""
    if state.get("ExecMainCode") not in ("1", "exited"):
        return -9
    status = _count(state.get("ExecMainStatus"))
    if status is None:
        return -9
    if status > 128 and reported == 128 - status:
        return reported
    return status


def recorded_end(slot_dir: Path) -> dict[str, str]:
    """How the slot's main process ended, as the unit's root step wrote it from
    systemd's $EXIT_CODE, $EXIT_STATUS and $SERVICE_RESULT, named as the unit's properties:
    systemd unloads an inactive unit and forgets its own record, sometimes before the
    worker asks. Empty if there is none."""
    try:
        words = (slot_dir / slot_files.EXIT).read_text().split()
    except OSError:
        return {}
    if len(words) != 3:
        return {}
    code, status, result = words
    return {"ExecMainCode": code, "ExecMainStatus": status, "Result": result}


class SystemdRunner(Runner):
    """With `slot_locks`, several processes (one job each, started by a batch scheduler)
    share the slots: each takes a free one under an exclusive lock on a file in that
    directory, held until the slot is released, and none stops the others' units."""

    def __init__(self, settings: WorkerSettings, slot_locks: Path | None = None):
        self.settings = settings
        self.slots_dir = Path(settings.slots_dir)
        self.free = list(range(1, settings.slot_count + 1))
        self.capacity = settings.slot_count
        self.quarantined: dict[int, str] = {}  # slot -> why it is set aside
        self.lock = threading.Lock()
        self.slot_locks = slot_locks
        self.held: dict[int, int] = {}  # slot -> its lock file's descriptor
        self.armed: dict[int, str] = {}  # slot -> the start job of its unit, started ahead
        self.systemd = Systemd(SYSTEMD_TIMEOUT)

    def unit(self, slot: int) -> str:
        return self.settings.slot_unit.format(slot=slot)

    def uid(self, slot: int) -> int:
        return pwd.getpwnam(self.settings.slot_user.format(slot=slot)).pw_uid

    def recover(self) -> None:
        """Stop every slot's unit: jobs a killed worker left running are not tethered to
        it (systemd runs them), and their attempts are handed back by the worker."""
        if self.slot_locks is not None:
            return  # the other slots are other processes' jobs
        self.armed.clear()
        for slot in self.free:
            with contextlib.suppress(SystemdError):
                self.systemd.stop(self.unit(slot))
            with contextlib.suppress(SystemdError):
                self.systemd.reset_failed(self.unit(slot))

    def self_check(self) -> None:
        secret = self.settings.token_file or os.environ.get("JOBQUEUE_WORKER_CONFIG", "")
        url = urlsplit(self.settings.controller_url)
        port = url.port or (443 if url.scheme == "https" else 80)
        argv = [sys.executable, "-c", CANARY, secret, url.hostname or "", str(port)]
        while True:
            try:
                found, code = self._canary(argv)
                break
            except SlotBroken as exc:  # set aside: the canary tries the next slot
                log.warning("canary: %s", exc)
        if code != 0 or found.get("secret") in (None, "read") or \
                found.get("network") in (None, "connected"):
            raise RuntimeError(f"confinement is not in force, refusing to run jobs: a job "
                               f"in a slot got {found or 'nothing'} (exit status {code})")
        log.info("confinement checked: a job in a slot was denied the secret (%s) and the "
                 "network (%s)", found["secret"], found["network"])
        for slot in list(self.free):
            self.arm(slot)

    def _canary(self, argv: list[str]) -> tuple[dict, int | None]:
        """What the canary found, and its exit code, from a run in a free slot."""
        workspace = None
        try:
            workspace = self.workspace("canary")
            with tempfile.TemporaryDirectory() as tmp:
                request = RunRequest("canary", workspace.job_dir, argv,
                                     Limits(walltime=60, cpu_seconds=60, memory_bytes=256 << 20),
                                     Path(tmp, "stdout"), Path(tmp, "stderr"),
                                     {"PATH": "/usr/bin:/bin"}, output_limit=1 << 20)
                process = workspace.start(request)
                code = process.wait(SYSTEMD_TIMEOUT)
                if code is None:
                    process.kill(0)
                workspace.collect(request, Path(tmp, "results"))
                return json.loads(request.stdout.read_text() or "{}"), code
        except SlotBroken:
            raise
        except (SystemdError, OSError, ValueError, KeyError) as exc:  # KeyError: no slot user
            raise RuntimeError(f"the job slots do not work: {exc}") from None
        finally:
            if workspace is not None:
                workspace.close()

    def workspace(self, name: str) -> SlotWorkspace:
        with self.lock:
            slot = self._take()
        return SlotWorkspace(self, slot)

    def _take(self) -> int:
        for slot in self.free:
            if self.slot_locks is not None:
                fd = os.open(self.slot_locks / f"slot-{slot}.lock", os.O_RDWR | os.O_CREAT,
                             0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    continue  # another job on the node has it
                self.held[slot] = fd
                # Whoever held it last may have died without stopping its unit (a node
                # process killed by Slurm): no job of theirs may run on in this slot.
                with contextlib.suppress(SystemdError):
                    self.systemd.stop(self.unit(slot))
                with contextlib.suppress(SystemdError):
                    self.systemd.reset_failed(self.unit(slot))
            self.free.remove(slot)
            return slot
        # The worker claims per CPU, a scheduler allocates per CPU: a bug, or more jobs
        # on the node than it has slots.
        raise SystemdError("no free job slot")

    def begin_start(self, slot: int) -> str:
        """Start the slot's unit: its start job ends once the job has started (go)."""
        go = self.slots_dir / str(slot) / slot_files.GO
        with contextlib.suppress(FileNotFoundError):
            if not stat.S_ISFIFO(go.lstat().st_mode):
                go.unlink()
        with contextlib.suppress(FileExistsError):
            os.mkfifo(go, 0o600)
        # The slot's unit is bound to the worker's: a plain start while someone stops
        # the worker would start the worker again (its stop job replaced). With job-mode
        # fail the slot's start fails instead, and the job goes back.
        return self.systemd.begin_start(self.unit(slot), mode="fail")

    def arm(self, slot: int) -> None:
        """Start a free slot's unit ahead of its next job (see the module's doc); a slot
        that cannot be is started with its job instead."""
        if self.slot_locks is not None or slot in self.armed:
            return  # a batch scheduler's process runs one job, and takes its slot after
        try:
            self.armed[slot] = self.begin_start(slot)
        except (SystemdError, OSError) as exc:
            log.warning("slot %d: not readied ahead of its next job: %s", slot, exc)

    def quarantine(self, slot: int, why: str) -> None:
        """Never hand `slot` out again; the worker then claims for one job fewer."""
        with self.lock:
            self.quarantined[slot] = why
            self.capacity = self.settings.slot_count - len(self.quarantined)
        log.error("slot %d set aside (%d of %d left): %s", slot, self.capacity,
                  self.settings.slot_count, why)

    def set_aside(self) -> int:
        with self.lock:
            return len(self.quarantined)

    def release(self, slot: int) -> None:
        with self.lock:
            if slot not in self.quarantined:
                self.free.append(slot)
                self.free.sort()
            if (fd := self.held.pop(slot, None)) is not None:
                os.close(fd)


def read_outbox_log(path: Path, uid: int, offset: int, size: int) -> bytes:
    """Bytes of a running job's log in its slot's outbox, only if it is a regular file
    of the slot's user (as `collect` copies it): the job may have left anything there."""
    try:
        with slot_files.open_regular(path, uid) as fh:
            fh.seek(offset)
            return fh.read(size)
    except FileNotFoundError:
        return b""


def _remove_contents(directory: Path) -> None:
    """Remove what the worker can (its own files, the slot's user removed its own)."""
    for path in directory.iterdir():
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                path.unlink()


class SlotWorkspace(Workspace):
    def __init__(self, runner: SystemdRunner, slot: int):
        self.runner = runner
        self.slot = slot
        self.unit = runner.unit(slot)
        self.uid = runner.uid(slot)
        self.slot_dir = runner.slots_dir / str(slot)
        self.job_dir = self.slot_dir / "work"
        self.state: dict[str, str] = {}
        # Held to stop the job's unit, and to start it ahead of the next job.
        self.unit_lock = threading.Lock()
        for part in ("work", "outbox"):
            _remove_contents(self.slot_dir / part)

    def start(self, request: RunRequest) -> RunningProcess:
        # The inputs are the worker's, readable by the slot's group: the job may add
        # files next to them (directories group-writable), not change them in place.
        for dirpath, _, filenames in os.walk(self.job_dir):
            # work/ itself is the role's (setgid, which the worker may not set: its
            # unit has RestrictSUIDSGID); what it holds has the slot's group already.
            if dirpath != str(self.job_dir):
                os.chmod(dirpath, 0o770)
            for name in filenames:
                path = os.path.join(dirpath, name)
                mode = os.lstat(path).st_mode
                if stat.S_ISREG(mode):
                    os.chmod(path, mode | 0o040 | (0o010 if mode & 0o100 else 0))
        rlimits = request.limits.rlimits()
        del rlimits["memory_bytes"]  # the cgroup limits the whole job, not each process
        # For the unit's root step, which sets the job's disk quota from it.
        (self.slot_dir / slot_files.OUTPUT_LIMIT).write_text(f"{request.output_limit}\n")
        (self.slot_dir / slot_files.REQUEST).write_text(json.dumps({
            "argv": request.argv, "env": request.env, "rlimits": rlimits,
            "output_limit": request.output_limit,
            "kill_grace": self.runner.settings.kill_grace_seconds,
            "apparmor_stack": environment_profile(request.environment)}))
        memory = request.limits.memory_bytes
        self.runner.systemd.set_limits(self.unit, memory, request.cpus)
        try:
            self._go(self.runner.armed.pop(self.slot, None) or self.runner.begin_start(self.slot))
        except SystemdError as exc:
            if not (self.slot_dir / slot_files.SANDBOX_STALE).exists():
                self._unfit(exc)
            # Readied before a path its sandbox masks was made (or made again): the unit
            # started now masks it.
            try:
                self._go(self.runner.begin_start(self.slot))
            except SystemdError as again:
                self._unfit(again)
        return SlotProcess(self, memory)

    def _go(self, start: str) -> None:
        """Say go to the slot's unit, and wait for its `start` job: the job has started."""
        # Opened for reading too, a FIFO's open does not wait for the root step; the word
        # stays in it until that step has read it, or the start has failed.
        go = os.open(self.slot_dir / slot_files.GO, os.O_RDWR | os.O_NOFOLLOW)
        try:
            os.write(go, b"go\n")
            self.runner.systemd.wait_job(start, f"StartUnit {self.unit}")
        finally:
            os.close(go)

    def _unfit(self, exc: SystemdError) -> NoReturn:
        """Raise for a start that failed, setting the slot aside if it is to blame: the
        unit ran and failed before the job (its root steps could not clean the slot or
        set the job's quota). Killed at the last job's memory limit while it waited for
        this one, or anything else (no answer from systemd), says nothing about it."""
        if isinstance(exc, JobCanceled):
            raise exc  # stopped from outside before the job: nothing of the slot's doing
        state = self.runner.systemd.state(self.unit, ("ActiveState", "Result"))
        if state["ActiveState"] == "failed" and state["Result"] != "oom-kill":
            self.runner.quarantine(self.slot, str(exc))
            raise SlotBroken(f"slot {self.slot}: {exc}") from None
        raise exc

    def collect(self, request: RunRequest, results: Path) -> Outcome:
        outbox = self.slot_dir / "outbox"
        for name, target in (("stdout", request.stdout), ("stderr", request.stderr),
                             (slot_files.RESULTS, results)):
            try:
                with slot_files.open_regular(outbox / name, self.uid) as src, \
                        open(target, "wb") as dest:
                    shutil.copyfileobj(src, dest)
            except FileNotFoundError:
                Path(target).write_bytes(b"")
        status = self.status()
        # The limits systemd and the kernel enforced, then the ones `run` and `finish`
        # found (in the job's reach, but a job can only fail itself by them).
        limit = LIMIT_RESULTS.get(self.state.get("Result", "")) or \
            ("output" if (self.slot_dir / slot_files.OUTPUT_LIMIT_REACHED).exists() else None) \
            or status.get("limit")
        size = status.get("results_bytes", 0)
        # All of it read: the slot is readied for the next job while this one's results
        # go up (an empty outbox spares its root wipe a walk).
        _remove_contents(outbox)
        self._arm_if_ended()
        return Outcome(size if isinstance(size, int) else 0, limit)

    def _arm_if_ended(self) -> None:
        """Ready the slot for its next job, unless its unit was not seen to end (it still
        holds this one's: a start now would be no start at all) or it is set aside."""
        with self.unit_lock:
            if self.state.get("ActiveState") not in ("inactive", "failed") or \
                    self.slot in self.runner.quarantined or self.slot in self.runner.armed:
                return
            try:
                if self.state["ActiveState"] == "failed":
                    self.runner.systemd.reset_failed(self.unit)
            except SystemdError as exc:
                log.warning("slot %d: %s", self.slot, exc)
            self.runner.arm(self.slot)

    def read_log(self, request: RunRequest, name: str, offset: int, size: int) -> bytes:
        return read_outbox_log(self.slot_dir / "outbox" / name, self.uid, offset, size)

    def status(self) -> dict:
        try:
            with slot_files.open_regular(self.slot_dir / "outbox" / slot_files.STATUS,
                                         self.uid) as fh:
                status = json.loads(fh.read(65536))
        except (OSError, ValueError):
            return {}
        return status if isinstance(status, dict) else {}

    def close(self) -> None:
        for part in ("work", "outbox"):
            _remove_contents(self.slot_dir / part)
        for name in (slot_files.REQUEST, slot_files.OUTPUT_LIMIT, slot_files.OUTPUT_LIMIT_REACHED,
                     slot_files.EXIT):
            with contextlib.suppress(FileNotFoundError):
                (self.slot_dir / name).unlink()
        self._arm_if_ended()  # a job that was not collected
        self.runner.release(self.slot)


class SlotProcess(RunningProcess):
    def __init__(self, workspace: SlotWorkspace, memory_limit: int):
        self.workspace = workspace
        self.memory_limit = memory_limit
        self.code: int | None = None
        self.peak: int | None = None      # the highest memory.peak read while it ran
        self.cpu_usec: int | None = None  # the last cpu.stat read while it ran
        self._usage = Usage()
        # The unit's start job has ended: the job has started.
        self.started = time.monotonic()
        self.main_times: dict[str, str] = {}  # read while the unit was still loaded

    def _sample(self, state: dict[str, str]) -> None:
        """Read the unit's cgroup while it exists (running, or packing its results)."""
        directory = cgroup.path_of(state.get("ControlGroup", ""))
        if directory is None:
            return
        if (peak := cgroup.memory_peak(directory)) is not None:
            self.peak = max(self.peak or 0, peak)
        if (usec := cgroup.cpu_usec(directory)) is not None:
            self.cpu_usec = usec

    def _ended(self) -> bool:
        systemd, unit = self.workspace.runner.systemd, self.workspace.unit
        state = systemd.state(unit, ("ActiveState", "ControlGroup"))
        if state["ActiveState"] not in ("inactive", "failed"):
            self._sample(state)
            if state["ActiveState"] == "deactivating" and not self.main_times:
                # The main process may have exited, its stop step running: systemd's
                # times of it, kept for when the unit is unloaded as soon as it stops.
                times = systemd.state(unit, JOB_TIMES)
                if job_wall(times) is not None:
                    self.main_times = times
            return False
        seen_end = time.monotonic()
        # The root step's record of the main process first; systemd's for the rest.
        state |= recorded_end(self.workspace.slot_dir)
        state |= systemd.state(unit, tuple(name for name in STATE_PROPERTIES if name not in state))
        if job_wall(state) is None:
            state |= self.main_times
        self.workspace.state = state
        status = self.workspace.status()
        # What the worker saw, if systemd forgot and the stop step was too quick to be
        # seen: from the end of the start job to the end of the unit's stop step.
        self._usage = slot_usage(state, self.peak, self.cpu_usec, status.get("memory_peak"),
                                 self.memory_limit, observed_wall=seen_end - self.started)
        self.code = job_exit_code(state, status.get("exit_code"))
        return True

    def wait(self, timeout: float | None) -> int | None:
        """The job's exit code once its unit has ended, or None after `timeout`."""
        systemd, unit = self.workspace.runner.systemd, self.workspace.unit
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.code is None:
            seen = systemd.changes(unit)  # before the look: a change after it wakes us
            if self._ended():
                break
            left = WAIT_SLICE if deadline is None else deadline - time.monotonic()
            if left <= 0:
                return None
            systemd.wait_change(unit, seen, min(left, WAIT_SLICE))
        return self.code

    def usage(self) -> Usage:
        return self._usage

    def kill(self, grace: float) -> None:
        # SIGTERM to every process of the unit; the slot's `run` SIGKILLs what is left
        # of the job after the worker's grace, then the unit packs the results. Not
        # once the job's end was seen: the unit may then be readied for the next job
        # (a stop that comes late, as a lease lost while the results went up).
        with self.workspace.unit_lock:
            if self.code is None:
                try:
                    self.workspace.runner.systemd.stop(self.workspace.unit, wait=False)
                except SystemdError as exc:
                    log.warning("slot %d: %s", self.workspace.slot, exc)
        self.wait(None)
