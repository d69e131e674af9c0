"""Turn a script or a folder on disk into the job's files and its entry point."""

from __future__ import annotations

import os
from pathlib import Path

from jobqueue.archive import UnsafeArchive, check_relative_path
from jobqueue.client.errors import ClientError

# Never useful on a worker, and often large.
SKIPPED_DIRS = frozenset({"__pycache__", ".git", ".hg", ".svn", ".venv", ".mypy_cache"})
SKIPPED_SUFFIXES = (".pyc", ".pyo")


def check_relpath(relpath: str) -> str:
    """Return ``relpath`` as a clean POSIX relative path, or raise if it could escape."""
    try:
        return str(check_relative_path(relpath))
    except UnsafeArchive as exc:
        raise ClientError(f"job file path {relpath!r} must be relative and stay inside "
                          f"the job ({exc})") from None


def collect_folder(folder: str | os.PathLike[str]) -> dict[str, Path]:
    """Every regular file under ``folder``, keyed by its POSIX path relative to ``folder``.

    Symbolic links to files are followed (their content is sent); linked directories are not
    descended into, so a link loop cannot make the upload endless.
    """
    root = Path(folder)
    if not root.is_dir():
        raise ClientError(f"{root} is not a folder")
    files: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(root, onerror=_raise_walk_error):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIPPED_DIRS)
        for name in sorted(filenames):
            if name.endswith(SKIPPED_SUFFIXES):
                continue
            path = Path(dirpath) / name
            if not path.is_file():  # sockets, fifos, dangling links
                continue
            relpath = path.relative_to(root).as_posix()
            files[check_relpath(relpath)] = path
    if not files:
        raise ClientError(f"{root} holds no files to submit")
    return files


def choose_entry(folder: str | os.PathLike[str], files: dict[str, Path], entry: str | None) -> str:
    """The entry script of a folder job: ``entry`` if given, else its only top-level .py file."""
    if entry is not None:
        relpath = check_relpath(entry.replace(os.sep, "/"))
        if relpath not in files:
            raise ClientError(f"entry {entry!r} is not a file in {folder}")
        return relpath
    top_level = sorted(p for p in files if "/" not in p and p.endswith(".py"))
    if len(top_level) == 1:
        return top_level[0]
    if not top_level:
        raise ClientError(
            f"{folder} has no .py file at its top level; name the script with --entry"
        )
    raise ClientError(
        f"{folder} has {len(top_level)} .py files at its top level "
        f"({', '.join(top_level)}); choose one with --entry"
    )


def pack_path(
    path: str | os.PathLike[str], entry: str | None = None
) -> tuple[dict[str, Path], str]:
    """Files and entry for a job made from a single script or from a whole folder."""
    source = Path(path)
    if source.is_dir():
        files = collect_folder(source)
        return files, choose_entry(source, files, entry)
    if source.is_file():
        name = check_relpath(source.name)
        if entry is not None and entry != name:
            raise ClientError(f"--entry {entry!r} does not match the script {source.name!r}")
        return {name: source}, name
    raise ClientError(f"{source} does not exist")


def _raise_walk_error(exc: OSError) -> None:
    raise ClientError(f"cannot read {exc.filename}: {exc.strerror or exc}") from exc
