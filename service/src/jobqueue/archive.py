"""Safe handling of the tar archives that carry job files between the parts.

Archives come from untrusted places (a job's output, a user's upload), so every
extraction goes through `safe_extract`: relative paths only, no `..`, no links that
leave the destination, no device files, and caps on total size and file count.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import posixpath
import shutil
import tarfile
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath
from typing import IO


# Keep the execute bits; drop setuid/setgid/sticky and group/other write.
_FILE_MODE_MASK = 0o755


class UnsafeArchive(ValueError):
    """An archive or path that would escape its directory or break a limit."""


class ArchiveTooLarge(UnsafeArchive):
    """An archive whose content is over the size cap."""


# What the file systems take (NAME_MAX), and a whole relative path short enough to
# stay inside PATH_MAX with a job's directory in front of it.
NAME_MAX_BYTES = 255
PATH_MAX_BYTES = 3000


def check_name_length(name: str) -> None:
    """Raise if `name` is longer than a file system would take."""
    encoded = name.encode("utf-8", "surrogateescape")
    if len(encoded) > PATH_MAX_BYTES:
        raise UnsafeArchive(f"file name too long ({len(encoded)} bytes, at most "
                            f"{PATH_MAX_BYTES}): {name[:60]!r}...")
    if any(len(part) > NAME_MAX_BYTES for part in encoded.split(b"/")):
        raise UnsafeArchive(f"file name too long (a part of over {NAME_MAX_BYTES} bytes): "
                            f"{name[:60]!r}...")


def check_relative_path(name: str) -> PurePosixPath:
    """Return `name` as a clean relative path inside a job directory, or raise."""
    if not name or "\x00" in name or "\\" in name:
        raise UnsafeArchive(f"invalid file name {name!r}")
    check_name_length(name)
    path = PurePosixPath(name)  # folds "." and repeated slashes
    if path.is_absolute():
        raise UnsafeArchive(f"absolute path not allowed: {name!r}")
    if ".." in path.parts:
        raise UnsafeArchive(f"path leaves the job directory: {name!r}")
    if not path.parts:
        raise UnsafeArchive(f"invalid file name {name!r}")
    return path


def safe_extract(source: str | os.PathLike | IO[bytes], dest: str | os.PathLike,
                 max_bytes: int | None = None, max_files: int | None = None) -> list[str]:
    """Extract a (possibly compressed) tar into `dest`; return the names written.

    Every member is checked before anything is written; regular files and directories
    are written first and symbolic links last, so nothing is written through a link
    from the archive; every link is checked again once all exist, because links can
    combine (`a -> b/..` plus `b -> .`) into an escape that no single one shows.
    """
    dest_path = Path(dest)
    dest_path.mkdir(parents=True, exist_ok=True)
    root = os.path.realpath(dest_path)
    try:
        with (tarfile.open(fileobj=source, mode="r:*") if hasattr(source, "read")
              else tarfile.open(source, mode="r:*")) as tar:
            members = tar.getmembers()
            _check_limits(members, max_bytes, max_files)
            for member in members:
                _check_member(member)
            names: list[str] = []
            links: list[tarfile.TarInfo] = []
            for member in members:
                name = _clean_name(member.name)
                if not name:
                    continue  # the archive's own "." entry
                if member.issym():
                    links.append(member)
                    continue
                target = _target_path(root, name)
                if member.isdir():
                    _make_dir(root, target)
                elif member.islnk():
                    linked = _target_path(root, _clean_name(member.linkname))
                    _inside(root, os.path.realpath(linked), member.name)
                    _remove_existing(target)
                    os.link(linked, target, follow_symlinks=False)
                else:
                    _write_file(tar, member, target)
                names.append(name)
            created = []
            for member in links:
                name = _clean_name(member.name)
                target = _target_path(root, name)
                _remove_existing(target)
                os.symlink(member.linkname, target)
                created.append((target, member.name))
                names.append(name)
            for target, member_name in created:
                if not _resolves_inside(root, target):
                    for path, _ in created:
                        _remove_existing(path)
                    raise UnsafeArchive(
                        f"archive member {member_name!r} is a link that points outside")
    except (tarfile.TarError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise UnsafeArchive(f"not a readable tar archive: {exc}") from None
    return names


def _check_limits(members: list[tarfile.TarInfo], max_bytes: int | None,
                  max_files: int | None) -> None:
    if max_files is not None and len(members) > max_files:
        raise UnsafeArchive(f"archive has more than {max_files} entries")
    total = sum(m.size for m in members if m.isfile())
    if max_bytes is not None and total > max_bytes:
        raise ArchiveTooLarge(f"archive content of {total} bytes exceeds {max_bytes} bytes")


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


def _check_member(member: tarfile.TarInfo) -> None:
    name = member.name
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchive(f"archive member {name!r} has an absolute path")
    if "\\" in name or "\x00" in name:
        raise UnsafeArchive(f"archive member {name!r} has an invalid name")
    check_name_length(name)
    if ".." in name.split("/"):
        raise UnsafeArchive(f"archive member {name!r} contains '..'")
    if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
        raise UnsafeArchive(f"archive member {name!r} is a device, fifo or other special file")
    if member.issym() or member.islnk():
        link = member.linkname
        if not link or link.startswith("/") or "\x00" in link:
            raise UnsafeArchive(f"archive member {name!r} links to absolute path {link!r}")
        check_name_length(link)
        # Symbolic links are relative to their directory; hard links to the archive root.
        base = posixpath.dirname(_clean_name(name)) if member.issym() else ""
        resolved = posixpath.normpath(posixpath.join(base, link))
        if resolved == ".." or resolved.startswith("../"):
            raise UnsafeArchive(f"archive member {name!r} links outside: {link!r}")


def _clean_name(name: str) -> str:
    clean = posixpath.normpath(name)
    return "" if clean == "." else clean


def _target_path(root: str, name: str) -> str:
    """Destination of ``name``; its directories are created and must really be inside ``root``."""
    target = os.path.join(root, *name.split("/"))
    parent = os.path.dirname(target)
    _make_dir(root, parent)
    _inside(root, os.path.realpath(parent), name)
    return target


def _make_dir(root: str, path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        _inside(root, os.path.realpath(path), path)
        return
    relative = os.path.relpath(path, root)
    current = root
    for part in relative.split(os.sep):
        if part in ("", "."):
            continue
        current = os.path.join(current, part)
        if os.path.islink(current) or (os.path.exists(current) and not os.path.isdir(current)):
            _inside(root, os.path.realpath(current), relative)
            if not os.path.isdir(current):
                os.unlink(current)  # an older file (or dangling link) is replaced by the folder
        if not os.path.isdir(current):
            os.mkdir(current, 0o755)


def _write_file(tar: tarfile.TarFile, member: tarfile.TarInfo, target: str) -> None:
    source = tar.extractfile(member)
    if source is None:
        raise UnsafeArchive(f"archive member {member.name!r} has no data")
    _remove_existing(target)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(target, flags, member.mode & _FILE_MODE_MASK | 0o600)
    with source, os.fdopen(fd, "wb") as out:
        shutil.copyfileobj(source, out, 1024 * 1024)
    # A strange mtime is not worth failing the download for.
    with contextlib.suppress(OSError, OverflowError, ValueError):
        os.utime(target, (member.mtime, member.mtime))


def _remove_existing(path: str) -> None:
    if os.path.islink(path) or os.path.isfile(path):
        os.unlink(path)
    elif os.path.isdir(path):
        shutil.rmtree(path)


def _inside(root: str, real: str, name: str) -> None:
    if real != root and not real.startswith(root.rstrip(os.sep) + os.sep):
        raise UnsafeArchive(f"archive member {name!r} would be written outside {root}")


def _resolves_inside(root: str, link_path: str) -> bool:
    real = os.path.realpath(link_path)
    return real == root or real.startswith(root.rstrip(os.sep) + os.sep)
