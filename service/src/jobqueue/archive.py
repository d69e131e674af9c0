"""Safe handling of the tar archives that carry job files between the parts.

Archives come from untrusted places (a job's output, a user's upload), so every
extraction goes through `safe_extract`: relative paths only, no `..`, no links that
leave the destination, no device files, and caps on total size and file count.
"""

from __future__ import annotations

import bz2
import collections
import contextlib
import gzip
import io
import lzma
import os
import posixpath
import shutil
import tarfile
import time
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
# Folders in a path at most: deeper trees are no one's inputs or results, and walking
# them costs a frame per level.
MAX_DEPTH = 64


def check_name_length(name: str) -> None:
    """Raise if `name` is longer or deeper than a file system or a walk should take."""
    encoded = name.encode("utf-8", "surrogateescape")
    if encoded.count(b"/") >= MAX_DEPTH:
        raise UnsafeArchive(f"path too deep (more than {MAX_DEPTH} levels): {name[:60]!r}...")
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


# Bytes a tar spends on one entry besides its content: its header block, a long name's
# or link's extra blocks (PATH_MAX_BYTES each) or a pax header, and the padding of its
# data to a whole block. With the content cap, this bounds the decompressed stream.
ENTRY_OVERHEAD_BYTES = 2 * 512 + 2 * (PATH_MAX_BYTES + 512) + 512
# The end-of-archive blocks and the padding of the last record.
TRAILER_BYTES = 20 * 512
_MAGIC = ((b"\x1f\x8b", lambda f: gzip.GzipFile(fileobj=f, mode="rb")),
          (b"BZh", bz2.BZ2File), (b"\xfd7zXZ\x00", lzma.LZMAFile))


class _Bounded(io.RawIOBase):
    """The decompressed tar stream, read through a budget and a clock: a small archive
    that expands without end, or one read too slowly, stops at the first read past
    either, before the bytes are held anywhere."""

    def __init__(self, raw: IO[bytes], budget: int | None, deadline: float | None):
        self.raw, self.left, self.deadline = raw, budget, deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        size = len(buffer)
        if self.left is not None:
            size = min(size, self.left + 1)
        data = self.raw.read(size)
        if self.left is not None:
            self.left -= len(data)
            if self.left < 0:
                raise ArchiveTooLarge("archive expands past its size limit (its content "
                                      "and entries' headers)")
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise UnsafeArchive("archive took too long to read")
        buffer[:len(data)] = data
        return len(data)


def _decompressed(source: IO[bytes]) -> IO[bytes]:
    """`source` uncompressed, whichever of gzip, bzip2 or xz it is in (or plain tar)."""
    head = source.read(6)
    whole = io.BufferedReader(_Prefixed(head, source))
    for magic, opener in _MAGIC:
        if head.startswith(magic):
            return opener(whole)
    return whole


class _Prefixed(io.RawIOBase):
    """The bytes already read from a stream, then the rest of it."""

    def __init__(self, head: bytes, rest: IO[bytes]):
        self.head, self.rest = head, rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self.head:
            data, self.head = self.head[:len(buffer)], self.head[len(buffer):]
        else:
            data = self.rest.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)


def safe_extract(source: str | os.PathLike | IO[bytes], dest: str | os.PathLike,
                 max_bytes: int | None = None, max_files: int | None = None,
                 seconds: float | None = None, all_or_nothing: bool = True) -> list[str]:
    """Extract a (possibly compressed) tar into `dest`; return the names written.

    The archive is read as a stream, one member at a time, and every cap applies to a
    member's header before its data is read: the count of entries, the declared size
    of each file and of all together, the length and depth of names. The decompressed
    stream as a whole is bounded by those caps (`_Bounded`), and reading by `seconds`
    of wall clock. With `all_or_nothing` (and a source that can seek), a first pass
    checks every header before anything is written; without it, an archive refused
    part way leaves what it wrote so far, for callers that extract into a directory
    they remove on failure and would rather not read the archive twice.

    Regular files and directories are written as they come, symbolic links last, so
    nothing is written through a link from the archive; a hard link may only name a
    file before it; every link is checked again once all exist, because links can
    combine (`a -> b/..` plus `b -> .`) into an escape that no single one shows.
    """
    dest_path = Path(dest)
    dest_path.mkdir(parents=True, exist_ok=True)
    root = os.path.realpath(dest_path)
    deadline = None if seconds is None else time.monotonic() + seconds
    budget = None
    if max_bytes is not None and max_files is not None:
        budget = max_bytes + (max_files + 1) * ENTRY_OVERHEAD_BYTES + TRAILER_BYTES
    with contextlib.ExitStack() as stack:
        if not hasattr(source, "read"):
            source = stack.enter_context(open(source, "rb"))

        def read(use):
            return _read_members(source, budget, deadline, max_bytes, max_files, use)

        if all_or_nothing and source.seekable():
            start = source.tell()
            read(lambda tar, members: collections.deque(members, maxlen=0))
            source.seek(start)
        return read(lambda tar, members: _extract_members(tar, members, root))


def _read_members(source: IO[bytes], budget: int | None, deadline: float | None,
                  max_bytes: int | None, max_files: int | None, use):
    """`use(tar, members)` on the archive read as a bounded stream; whatever in its
    bytes cannot be read is an UnsafeArchive."""
    try:
        with io.BufferedReader(_Bounded(_decompressed(source), budget, deadline),
                               1 << 16) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
            return use(tar, _admitted(tar, max_bytes, max_files))
    except (tarfile.TarError, EOFError, gzip.BadGzipFile, zlib.error, lzma.LZMAError,
            OSError) as exc:
        if isinstance(exc, OSError) and not _unreadable(exc):
            raise
        raise UnsafeArchive(f"not a readable tar archive: {exc}") from None


def _unreadable(exc: OSError) -> bool:
    """Whether an OSError came from the archive's bytes (a bad bzip2 stream, a truncated
    gzip) rather than from writing the files."""
    return exc.errno is None


def _admitted(tar: tarfile.TarFile, max_bytes: int | None, max_files: int | None):
    """The archive's members with their clean names, each checked on its header before
    its data is read (the caps, the name, the link) and refused with UnsafeArchive."""
    files: set[str] = set()  # regular files so far: what a hard link may name
    count = total = 0
    while (member := tar.next()) is not None:
        tar.members.clear()  # the stream's list of members read: unused here, and it grows
        count += 1
        if max_files is not None and count > max_files:
            raise UnsafeArchive(f"archive has more than {max_files} entries")
        _check_member(member)
        name = _clean_name(member.name)
        if member.isfile():
            total += member.size
            if max_bytes is not None and total > max_bytes:
                raise ArchiveTooLarge(f"archive content of over {total} bytes exceeds "
                                      f"{max_bytes} bytes")
            files.add(name)
        elif member.islnk():
            if _clean_name(member.linkname) not in files:
                raise UnsafeArchive(f"archive member {member.name!r} is a hard link to "
                                    f"{member.linkname!r}, which is not a file before it")
            files.add(name)
        else:
            files.discard(name)
        if name:  # not the archive's own "." entry
            yield member, name


def _extract_members(tar: tarfile.TarFile, members, root: str) -> list[str]:
    names: list[str] = []
    # Directories made or checked so far: no link from the archive exists before the
    # end, so they stay inside until a member replaces one (then all are checked again).
    folders: set[str] = set()
    links: list[tuple[tarfile.TarInfo, str]] = []
    for member, name in members:
        if member.issym():
            links.append((member, name))
            continue
        target = _target_path(root, name, folders)
        if member.isdir():
            _make_dir(root, target)
            folders.add(target)
        else:
            if _remove_existing(target):
                folders.clear()
            if member.islnk():
                linked = _target_path(root, _clean_name(member.linkname), folders)
                os.link(linked, target, follow_symlinks=False)
            else:
                _write_file(tar, member, target)
        names.append(name)
    created = []
    for member, name in links:
        target = _target_path(root, name)
        _remove_existing(target)
        os.symlink(member.linkname, target)
        created.append((target, member.name))
        names.append(name)
    for target, member_name in created:
        if not _resolves_inside(root, target):
            for path, _ in created:
                _remove_existing(path)
            raise UnsafeArchive(f"archive member {member_name!r} is a link that points outside")
    return names


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


def _target_path(root: str, name: str, folders: set[str] | None = None) -> str:
    """Destination of ``name``; its directories are created and must really be inside
    ``root`` (unless already in ``folders``, which then holds them)."""
    target = os.path.join(root, *name.split("/"))
    parent = os.path.dirname(target)
    if folders is not None and parent in folders:
        return target
    _make_dir(root, parent)
    _inside(root, os.path.realpath(parent), name)
    if folders is not None:
        folders.add(parent)
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
    """Write a member at `target`, where nothing is (the caller removed what was)."""
    source = tar.extractfile(member)
    if source is None:
        raise UnsafeArchive(f"archive member {member.name!r} has no data")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(target, flags, member.mode & _FILE_MODE_MASK | 0o600)
    with source, os.fdopen(fd, "wb") as out:
        shutil.copyfileobj(source, out, 1024 * 1024)
    # A strange mtime is not worth failing the download for.
    with contextlib.suppress(OSError, OverflowError, ValueError):
        os.utime(target, (member.mtime, member.mtime))


def _remove_existing(path: str) -> bool:
    """Remove what is at `path`; whether it was a directory."""
    if os.path.islink(path) or os.path.isfile(path):
        os.unlink(path)
    elif os.path.isdir(path):
        shutil.rmtree(path)
        return True
    return False


def _inside(root: str, real: str, name: str) -> None:
    if real != root and not real.startswith(root.rstrip(os.sep) + os.sep):
        raise UnsafeArchive(f"archive member {name!r} would be written outside {root}")


def _resolves_inside(root: str, link_path: str) -> bool:
    real = os.path.realpath(link_path)
    return real == root or real.startswith(root.rstrip(os.sep) + os.sep)
