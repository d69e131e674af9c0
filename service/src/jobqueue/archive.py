"""Safe handling of the tar archives that carry job files between the parts.

Archives come from untrusted places (a job's output, a user's upload), so every
extraction goes through `safe_extract`: relative paths only, no `..`, no links that
leave the destination, no device files, and caps on total size and file count.
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath
from typing import IO


class UnsafeArchive(ValueError):
    """An archive or path that would escape its directory or break a limit."""


class ArchiveTooLarge(UnsafeArchive):
    """An archive whose content is over the size cap."""


def check_relative_path(name: str) -> PurePosixPath:
    """Return `name` as a clean relative path inside a job directory, or raise."""
    if not name or "\x00" in name or "\\" in name:
        raise UnsafeArchive(f"invalid file name {name!r}")
    path = PurePosixPath(name)  # folds "." and repeated slashes
    if path.is_absolute():
        raise UnsafeArchive(f"absolute path not allowed: {name!r}")
    if ".." in path.parts:
        raise UnsafeArchive(f"path leaves the job directory: {name!r}")
    if not path.parts:
        raise UnsafeArchive(f"invalid file name {name!r}")
    return path


def safe_extract(source: str | os.PathLike | IO[bytes], dest: str | os.PathLike,
                 max_bytes: int, max_files: int) -> list[str]:
    """Extract a (possibly gzipped) tar into `dest`; return the regular files written."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    try:
        with (tarfile.open(fileobj=source, mode="r:*") if hasattr(source, "read")
              else tarfile.open(source, mode="r:*")) as tar:
            members = []
            total = 0
            for member in tar:
                check_relative_path(member.name)
                if member.islnk():
                    raise UnsafeArchive(f"hard links are not allowed: {member.name!r}")
                if not (member.isfile() or member.isdir() or member.issym()):
                    raise UnsafeArchive(f"special files are not allowed: {member.name!r}")
                total += member.size
                if total > max_bytes:
                    raise ArchiveTooLarge(f"archive content exceeds {max_bytes} bytes")
                if len(members) >= max_files:
                    raise UnsafeArchive(f"archive has more than {max_files} entries")
                members.append(member)
            for member in members:
                # The 'data' filter refuses links that point outside `dest`.
                try:
                    tar.extract(member, dest, filter="data")
                except tarfile.FilterError as exc:
                    raise UnsafeArchive(f"unsafe archive member {member.name!r}: {exc}") from None
                if member.isfile():
                    written.append(str(check_relative_path(member.name)))
    except tarfile.TarError as exc:
        raise UnsafeArchive(f"not a valid tar archive: {exc}") from None
    return written


def pack_dir(src: str | os.PathLike, dest: IO[bytes],
             keep: Callable[[str], bool] = lambda rel: True) -> int:
    """Write the files under `src` as tar.gz to `dest`; return the bytes of content packed.

    Symbolic links are stored as links, never followed, so a job cannot smuggle a file
    from outside its directory into its results.
    """
    src = Path(src)
    total = 0
    with tarfile.open(fileobj=dest, mode="w:gz", compresslevel=6) as tar:
        for rel in iter_files(src):
            if keep(rel):
                info = tar.gettarinfo(str(src / rel), arcname=rel)
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                if info.isreg():
                    with open(src / rel, "rb") as fh:
                        tar.addfile(info, fh)
                    total += info.size
                elif info.issym():
                    tar.addfile(info)
    return total


def iter_files(root: str | os.PathLike) -> Iterable[str]:
    """Relative paths of regular files and symlinks below `root`, sorted, links not followed."""
    root = Path(root)
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        base = Path(dirpath)
        # Symlinked directories show up in dirnames; list them as links, not descend.
        for name in sorted(filenames + [d for d in dirnames if (base / d).is_symlink()]):
            path = base / name
            if path.is_symlink() or path.is_file():
                yield path.relative_to(root).as_posix()
