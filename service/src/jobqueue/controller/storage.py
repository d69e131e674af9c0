"""Job files on disk: `<data_dir>/jobs/<id>/input/` as submitted, and `result/` as
uploaded by the attempt that finished the job (its `output/` files plus stdout and
stderr). Results land in a staging directory first and are moved into place only
once the database has accepted them, so a refused upload never touches stored files.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import IO

from jobqueue.archive import (
    ArchiveTooLarge,
    check_relative_path,
    iter_files,
    pack_dir,
    safe_extract,
)

CHUNK = 1 << 16


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
    def __init__(self, data_dir: str | os.PathLike, max_files: int, log_tail_bytes: int):
        self.root = Path(data_dir) / "jobs"
        self.root.mkdir(parents=True, exist_ok=True)
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
                safe_extract(archive, input_dir, budget, self.max_files)
                budget = max_bytes - _tree_size(input_dir)
            for name, stream in files:
                target = input_dir / check_relative_path(name)
                if target.exists() or target.is_symlink():
                    raise ValueError(f"file {name!r} is given twice")
                target.parent.mkdir(parents=True, exist_ok=True)
                budget -= _copy_capped(stream, target, budget)
            names = list(iter_files(input_dir))
            if len(names) > self.max_files:
                raise ValueError(f"a job may have at most {self.max_files} files")
            return names
        except BaseException:
            self.delete(job_id)
            raise

    def input_archive(self, job_id: str) -> IO[bytes]:
        return self._archive(self.job_dir(job_id) / "input")

    # -- results -----------------------------------------------------------------------

    def stage_result(self, job_id: str, lease: str, results: IO[bytes] | None,
                     stdout: IO[bytes] | None, stderr: IO[bytes] | None,
                     max_bytes: int) -> Path:
        staging = self.job_dir(job_id) / f"staging-{lease}"
        shutil.rmtree(staging, ignore_errors=True)
        (staging / "output").mkdir(parents=True)
        try:
            if results is not None:
                safe_extract(results, staging / "output", max_bytes, self.max_files)
            for name, stream in (("stdout", stdout), ("stderr", stderr)):
                self._save_log_tail(stream, staging / name)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return staging

    def commit_result(self, job_id: str, staging: Path) -> None:
        final = self.job_dir(job_id) / "result"
        shutil.rmtree(final, ignore_errors=True)
        os.replace(staging, final)

    def discard(self, staging: Path) -> None:
        shutil.rmtree(staging, ignore_errors=True)

    def _save_log_tail(self, stream: IO[bytes] | None, dest: Path) -> None:
        with open(dest, "wb") as out:
            if stream is not None:
                shutil.copyfileobj(stream, out, CHUNK)
        if dest.stat().st_size > self.log_tail_bytes:
            with open(dest, "rb") as fh:
                fh.seek(-self.log_tail_bytes, os.SEEK_END)
                tail = fh.read()
            dest.write_bytes(tail)

    # -- reading -----------------------------------------------------------------------

    def _layers(self, job_id: str) -> list[Path]:
        """Directories whose files make up the job's view; later ones win."""
        job_dir = self.job_dir(job_id)
        return [job_dir / "input", job_dir / "result" / "output"]

    def list_files(self, job_id: str) -> list[dict]:
        merged: dict[str, int] = {}
        for layer in self._layers(job_id):
            if layer.is_dir():
                for rel in iter_files(layer):
                    path = layer / rel
                    if not path.is_symlink():
                        merged[rel] = path.stat().st_size
        return [{"path": rel, "size": size} for rel, size in sorted(merged.items())]

    def find_file(self, job_id: str, name: str) -> Path | None:
        rel = check_relative_path(name)
        for layer in reversed(self._layers(job_id)):
            path = layer / rel
            # Serve only regular files that really are inside the layer.
            if path.is_file() and not path.is_symlink() and \
                    path.resolve().is_relative_to(layer.resolve()):
                return path
        return None

    def results_archive(self, job_id: str) -> IO[bytes]:
        with tempfile.TemporaryDirectory(dir=self.root) as tmp:
            merged = Path(tmp) / "merged"
            merged.mkdir()
            for layer in self._layers(job_id):
                if layer.is_dir():
                    for rel in iter_files(layer):
                        target = merged / rel
                        target.parent.mkdir(parents=True, exist_ok=True)
                        target.unlink(missing_ok=True)
                        os.link(layer / rel, target, follow_symlinks=False)
            return self._archive(merged)

    def read_log(self, job_id: str) -> dict[str, str]:
        result = self.job_dir(job_id) / "result"
        return {name: (result / name).read_bytes().decode("utf-8", "replace")
                if (result / name).is_file() else "" for name in ("stdout", "stderr")}

    def delete(self, job_id: str) -> None:
        shutil.rmtree(self.job_dir(job_id), ignore_errors=True)

    @staticmethod
    def _archive(directory: Path) -> IO[bytes]:
        spool = tempfile.SpooledTemporaryFile(max_size=8 << 20)
        pack_dir(directory, spool)  # a missing directory packs as an empty archive
        spool.seek(0)
        return spool


def _tree_size(root: Path) -> int:
    return sum((root / rel).lstat().st_size for rel in iter_files(root))
