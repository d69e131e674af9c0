"""Job files on disk: `<data_dir>/jobs/<id>/input/` as submitted, `result/` as
uploaded by the attempt that finished the job (its `output/` files plus stdout and
stderr), and `live/<lease>/` the logs a running attempt's worker streams while it runs
(replaced by the result's once that is in). The tasks of a job array share one input,
`<data_dir>/jobs/<array id>/input/`: the methods that read a job's input take the id
whose input it is (`input_id`).

A result upload survives a crash at any step. It is written to
`<data_dir>/uploads/staging.<pid>.<random>/`, flushed to disk, then renamed to
`uploads/ready.<job>.<lease>.<random>/`: a complete upload of that attempt. Only then
does the database record the outcome, and only after that is the ready directory
renamed to the job's `result/`. Whatever a crash interrupts, start-up (`recover`)
finishes or discards: staging of a dead process is dropped; a ready upload becomes
the result if the database says its attempt finished the job, waits for the worker's
retry if the attempt is still running, and is dropped otherwise. A refused upload
never touches stored files.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import secrets
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from jobqueue import faults
from jobqueue.archive import (
    ArchiveTooLarge,
    check_relative_path,
    iter_files,
    pack_dir,
    safe_extract,
)
from jobqueue.states import JobState

log = logging.getLogger(__name__)

CHUNK = 1 << 16
UNPACKERS = 2  # archives a controller process unpacks at once; more wait their turn


def _lowest_priority() -> None:
    # Linux keeps a nice value per thread: only this pool's threads give way. Where
    # that is refused, they unpack at the usual priority (an initializer that raised
    # would break the pool).
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    except OSError as exc:
        log.warning("unpacking at the usual priority: %s", exc)


# Unpacking an archive is the heaviest work a request does: it runs in these threads,
# at nice 19, so the kernel hands the CPU to every other request first.
_unpacking = ThreadPoolExecutor(UNPACKERS, "unpack", initializer=_lowest_priority)


def unpack(archive: IO[bytes], dest: Path, max_bytes: int, max_files: int,
           seconds: float | None) -> list[str]:
    """`safe_extract` in a low-priority thread of the pool, waited for."""
    # One pass: the caller removes `dest` if the archive is refused part way.
    return _unpacking.submit(safe_extract, archive, dest, max_bytes, max_files, seconds,
                             all_or_nothing=False).result()
LOGS = ("stdout", "stderr")
LIVE = "live"


@dataclass(frozen=True)
class LiveLog:
    """A running attempt's log as stored so far: `size` bytes of the worker's (where
    its next append starts); `cut` once it reached the job's output limit and was
    closed with a marker line (it then grows no more)."""

    size: int
    cut: bool = False


class LogGap(ValueError):
    """An append that starts past the end of what is stored: bytes would be missing."""

    def __init__(self, offset: int, size: int):
        super().__init__(f"offset {offset} is past the end of the log ({size} bytes stored)")
        self.size = size


def _fsync_path(path: str | os.PathLike, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """Flush every file and directory under `root` to disk (links are left as they are)."""
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                _fsync_path(path)
        _fsync_path(dirpath, directory=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _copy_capped(src: IO[bytes], dest: Path, budget: int) -> int:
    """Copy a stream to `dest`, failing once more than `budget` bytes arrive."""
    written = 0
    with open(dest, "wb") as out:
        while chunk := src.read(CHUNK):
            written += len(chunk)
            if written > budget:
                raise ArchiveTooLarge("uploaded files exceed the size limit")
            out.write(chunk)
    return written


class JobFiles:
    def __init__(self, data_dir: str | os.PathLike, max_files: int, log_tail_bytes: int,
                 max_archive_seconds: float | None = None):
        self.max_archive_seconds = max_archive_seconds
        self.root = Path(data_dir) / "jobs"
        self.root.mkdir(parents=True, exist_ok=True)
        self.uploads = Path(data_dir) / "uploads"
        self.uploads.mkdir(exist_ok=True)
        self.max_files = max_files
        self.log_tail_bytes = log_tail_bytes

    def job_dir(self, job_id: str) -> Path:
        return self.root / job_id

    # -- submission --------------------------------------------------------------------

    def save_inputs(self, job_id: str, files: Iterable[tuple[str, IO[bytes]]],
                    archives: Iterable[IO[bytes]], max_bytes: int) -> list[str]:
        """Write uploaded files and unpacked archives to the job's input directory."""
        input_dir = self.job_dir(job_id) / "input"
        input_dir.mkdir(parents=True)
        try:
            budget = max_bytes
            for archive in archives:
                unpack(archive, input_dir, budget, self.max_files, self.max_archive_seconds)
                budget = max_bytes - _tree_size(input_dir)
            for name, stream in files:
                target = input_dir / check_relative_path(name)
                if target.is_dir() and not target.is_symlink():
                    raise ValueError(f"file {name!r} has the name of a directory of the job")
                if target.exists() or target.is_symlink():
                    raise ValueError(f"file {name!r} is given twice")
                try:
                    target.parent.mkdir(parents=True, exist_ok=True)
                except (FileExistsError, NotADirectoryError):
                    raise ValueError(f"file {name!r} would be inside another file of the "
                                     "job") from None
                budget -= _copy_capped(stream, target, budget)
            names = list(iter_files(input_dir))
            if len(names) > self.max_files:
                raise ValueError(f"a job may have at most {self.max_files} files")
            # On disk before the database says the job exists.
            fsync_tree(input_dir)
            _fsync_path(input_dir.parent, directory=True)
            _fsync_path(self.root, directory=True)
            return names
        except BaseException:
            self.delete(job_id)
            raise

    def add_tasks(self, job_ids: Iterable[str]) -> None:
        """The directories of an array's tasks, where their results will go (their input
        is the array's, saved with `save_inputs` under the array's id)."""
        for job_id in job_ids:
            self.job_dir(job_id).mkdir()
        _fsync_path(self.root, directory=True)

    def share_inputs(self, from_id: str, to_id: str) -> None:
        """`to_id` gets `from_id`'s inputs: hard links, as saved inputs never change (a
        copy where the file system refuses a link). FileNotFoundError if there are none."""
        source, dest = self.job_dir(from_id) / "input", self.job_dir(to_id) / "input"
        if not source.is_dir():
            raise FileNotFoundError(source)
        dest.parent.mkdir()
        try:
            shutil.copytree(source, dest, symlinks=True, copy_function=_link_or_copy)
            fsync_tree(dest)
            _fsync_path(dest.parent, directory=True)
            _fsync_path(self.root, directory=True)
        except BaseException:
            self.delete(to_id)
            raise

    def input_archive(self, job_id: str, input_id: str | None = None,
                      results_of: Iterable[tuple[str, str]] = ()) -> IO[bytes]:
        """The job's inputs; with `results_of` ((folder, job id) pairs), also those jobs'
        results, each under its folder."""
        own = self.job_dir(input_id or job_id) / "input"
        if not results_of:
            return self._archive(own)
        return self._merged([(own, "")] + [(self.job_dir(parent) / "result" / "output", folder)
                                           for folder, parent in results_of])

    def input_size(self, job_id: str, input_id: str | None = None,
                   results_of: Iterable[tuple[str, str]] = ()) -> tuple[int, int]:
        """Bytes and files `input_archive` would pack, from the file system's sizes."""
        layers = [self.job_dir(input_id or job_id) / "input"] + [
            self.job_dir(parent) / "result" / "output" for _folder, parent in results_of]
        existing = [layer for layer in layers if layer.is_dir()]
        return (sum(_tree_size(layer) for layer in existing),
                sum(1 for layer in existing for _ in iter_files(layer)))

    # -- results -----------------------------------------------------------------------

    def stage_result(self, job_id: str, lease: str, results: IO[bytes] | None,
                     stdout: IO[bytes] | None, stderr: IO[bytes] | None,
                     max_bytes: int) -> Path:
        """Write an attempt's upload to disk, durably; return its ready directory."""
        staging = self.uploads / f"staging.{os.getpid()}.{secrets.token_hex(8)}"
        (staging / "output").mkdir(parents=True)
        try:
            if results is not None:
                unpack(results, staging / "output", max_bytes, self.max_files,
                       self.max_archive_seconds)
            faults.point("upload:writing")
            # The logs are the job's output too: what its files left of the limit.
            budget = max(0, max_bytes - _tree_size(staging / "output"))
            for name, stream in (("stdout", stdout), ("stderr", stderr)):
                budget -= _save_log(stream, staging / name, budget, name)
            fsync_tree(staging)
            faults.point("upload:staged")
            ready = self.uploads / f"ready.{job_id}.{lease}.{secrets.token_hex(8)}"
            os.rename(staging, ready)
            _fsync_path(self.uploads, directory=True)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return ready

    def _ready(self, job_id: str, lease: str | None = None) -> list[Path]:
        """Complete uploads waiting for the job (of one attempt, if `lease` is given)."""
        prefix = f"ready.{job_id}." + (f"{lease}." if lease is not None else "")
        return sorted(p for p in self.uploads.iterdir() if p.name.startswith(prefix))

    def has_result(self, job_id: str) -> bool:
        return (self.job_dir(job_id) / "result").is_dir()

    def place_result(self, job_id: str, lease: str, own: Path | None = None) -> bool:
        """Make a ready upload of the attempt that finished the job its result (`own`, the
        caller's, first), unless it has one; drop the job's other uploads. Safe to run
        twice, even at the same time: a rename onto an existing result fails, so the
        first one in wins."""
        final = self.job_dir(job_id) / "result"
        candidates = self._ready(job_id, lease)
        if own in candidates:
            candidates.remove(own)
            candidates.insert(0, own)
        for ready in candidates:
            if final.is_dir():
                break
            try:
                os.rename(ready, final)
            except FileNotFoundError:
                continue  # another request placed this one, or the job was deleted
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
                break  # another request placed a result first
            _fsync_path(final.parent, directory=True)
        for leftover in self._ready(job_id):
            self.discard(leftover)
        if final.is_dir():  # the result's logs replace the streamed ones
            shutil.rmtree(self.job_dir(job_id) / LIVE, ignore_errors=True)
        return final.is_dir()

    def recover(self, attempt_of: Callable[[str], tuple[JobState, str | None] | None]) -> None:
        """Finish or drop what crashed uploads left. `attempt_of(job_id)` gives the job's
        state and lease, or None if there is no such job."""
        for path in sorted(self.uploads.iterdir()):
            kind, _, rest = path.name.partition(".")
            if kind == "staging":
                pid = rest.partition(".")[0]
                # A live process (another mod_wsgi process) may still be writing it.
                if pid.isdigit() and int(pid) != os.getpid() and _process_alive(int(pid)):
                    continue
                log.info("dropping the staging of a cut upload: %s", path.name)
                self.discard(path)
            elif kind == "ready":
                job_id, _, rest = rest.partition(".")
                lease = rest.rpartition(".")[0]
                attempt = attempt_of(job_id)
                if attempt is not None and attempt[1] == lease:
                    if attempt[0] is JobState.RUNNING:
                        continue  # its worker retries the upload
                    if attempt[0].finished:
                        log.info("job %s: placing the result a crash left unplaced", job_id)
                        self.place_result(job_id, lease)
                        continue
                log.info("dropping the upload of a superseded attempt: %s", path.name)
                self.discard(path)

    def discard(self, staging: Path) -> None:
        shutil.rmtree(staging, ignore_errors=True)

    # -- reading -----------------------------------------------------------------------

    def _layers(self, job_id: str, input_id: str | None = None) -> list[Path]:
        """Directories whose files make up the job's view; later ones win."""
        return [self.job_dir(input_id or job_id) / "input",
                self.job_dir(job_id) / "result" / "output"]

    def list_files(self, job_id: str, input_id: str | None = None) -> list[dict]:
        merged: dict[str, int] = {}
        for layer in self._layers(job_id, input_id):
            if layer.is_dir():
                for rel in iter_files(layer):
                    path = layer / rel
                    if not path.is_symlink():
                        merged[rel] = path.stat().st_size
        return [{"path": rel, "size": size} for rel, size in sorted(merged.items())]

    def find_file(self, job_id: str, name: str, input_id: str | None = None) -> Path | None:
        rel = check_relative_path(name)
        for layer in reversed(self._layers(job_id, input_id)):
            path = layer / rel
            # Serve only regular files that really are inside the layer.
            if path.is_file() and not path.is_symlink() and \
                    path.resolve().is_relative_to(layer.resolve()):
                return path
        return None

    def results_archive(self, job_id: str, with_inputs: bool = True,
                        input_id: str | None = None) -> IO[bytes]:
        layers = self._layers(job_id, input_id)[0 if with_inputs else 1:]
        return self._merged([(layer, "") for layer in layers])

    def _merged(self, layers: list[tuple[Path, str]]) -> IO[bytes]:
        """One archive of (directory, folder in the archive) layers; later ones win."""
        with tempfile.TemporaryDirectory(dir=self.root) as tmp:
            merged = Path(tmp) / "merged"
            merged.mkdir()
            for layer, folder in layers:
                if layer.is_dir():
                    for rel in iter_files(layer):
                        target = merged / folder / rel
                        target.parent.mkdir(parents=True, exist_ok=True)
                        target.unlink(missing_ok=True)
                        os.link(layer / rel, target, follow_symlinks=False)
            return self._archive(merged)

    def log_path(self, job_id: str, name: str) -> Path | None:
        """The job's whole stdout or stderr as stored with its result, if it has one."""
        path = self.job_dir(job_id) / "result" / name
        return path if name in LOGS and path.is_file() else None

    # -- live logs: streamed by the worker while the attempt runs ---------------------

    def _live_dir(self, job_id: str, lease: str) -> Path:
        return self.job_dir(job_id) / LIVE / lease

    def live_log_path(self, job_id: str, lease: str | None, name: str) -> Path | None:
        """What the attempt holding `lease` has streamed of a log so far, if anything."""
        if lease is None or name not in LOGS:
            return None
        path = self._live_dir(job_id, lease) / name
        return path if path.is_file() else None

    def live_log(self, job_id: str, lease: str, name: str) -> LiveLog:
        directory = self._live_dir(job_id, lease)
        cut = directory / f"{name}.cut"
        if cut.is_file():
            return LiveLog(int(cut.read_text() or 0), cut=True)
        path = directory / name
        return LiveLog(path.stat().st_size if path.is_file() else 0)

    def append_live_log(self, job_id: str, lease: str, name: str, offset: int, data: bytes,
                        budget: int) -> LiveLog:
        """Store `data`, the bytes of the log from `offset` on. What is stored already is
        skipped (a retried append changes nothing); the logs together keep to `budget`
        bytes, and one that reaches it is closed with a marker line. Appends to one log
        are serialised (a retry may overlap its first try in another process)."""
        if name not in LOGS:
            raise ValueError(f"no log {name!r}")
        directory = self._live_dir(job_id, lease)
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(directory / name, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            stored = self.live_log(job_id, lease, name)
            if stored.cut:
                return stored
            size = os.fstat(fd).st_size
            if offset > size:
                raise LogGap(offset, size)
            new = data[size - offset:]
            other = sum(self.live_log(job_id, lease, log).size for log in LOGS if log != name)
            room = max(0, budget - other - size)
            _write_all(fd, new[:room])
            if len(new) <= room:
                return LiveLog(size + len(new))
            _write_all(fd, f"\n[jobqueue: {name} cut here at the job's output limit; the "
                           "rest is not kept]\n".encode())
            (directory / f"{name}.cut").write_text(str(size + room))
            return LiveLog(size + room, cut=True)
        finally:
            os.close(fd)

    def readable_log(self, job_id: str, lease: str | None, name: str
                     ) -> tuple[Path | None, bool]:
        """The log to show: the result's once it is in, else the running attempt's
        streamed so far; and whether it is the latter."""
        final = self.log_path(job_id, name)
        if final is not None:
            return final, False
        live = self.live_log_path(job_id, lease, name)
        return live, live is not None

    def read_log(self, job_id: str, lease: str | None = None) -> dict[str, str]:
        """The end of stdout and stderr (at most `log_tail_bytes` each, from the start of
        a line, after a marker saying how much is left out); while the attempt holding
        `lease` runs, of what it has streamed so far."""
        logs = {}
        for name in LOGS:
            path, _ = self.readable_log(job_id, lease, name)
            if path is None:
                logs[name] = ""
                continue
            size = path.stat().st_size
            with open(path, "rb") as fh:
                fh.seek(max(0, size - self.log_tail_bytes))
                tail = fh.read()
            if size > len(tail):
                tail = tail.partition(b"\n")[2] or tail
                tail = (f"[jobqueue: the first {size - len(tail)} bytes are left out here; "
                        f"the whole {name}: GET .../log/{name}]\n").encode() + tail
            logs[name] = tail.decode("utf-8", "replace")
        return logs

    def delete(self, job_id: str) -> None:
        shutil.rmtree(self.job_dir(job_id), ignore_errors=True)

    @staticmethod
    def _archive(directory: Path) -> IO[bytes]:
        spool = tempfile.SpooledTemporaryFile(max_size=8 << 20)
        pack_dir(directory, spool)  # a missing directory packs as an empty archive
        spool.seek(0)
        return spool


def _link_or_copy(source: str, dest: str) -> None:
    try:
        os.link(source, dest)
    except OSError:
        shutil.copy2(source, dest)


def _save_log(stream: IO[bytes] | None, dest: Path, budget: int, name: str) -> int:
    """Store a log of at most `budget` bytes, and a line saying so where it was cut;
    return the bytes of it kept."""
    kept = cut = 0
    with open(dest, "wb") as out:
        while stream is not None and (chunk := stream.read(CHUNK)):
            room = max(0, budget - kept)
            out.write(chunk[:room])
            kept += min(room, len(chunk))
            cut += len(chunk) - min(room, len(chunk))
        if cut:
            out.write(f"\n[jobqueue: {name} cut here at the job's output limit; {cut} more "
                      "bytes were not kept]\n".encode())
    return kept


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _tree_size(root: Path) -> int:
    return sum((root / rel).lstat().st_size for rel in iter_files(root))
