"""Extract a results archive without letting any member land outside the destination.

The archive comes from a job, i.e. from code that anybody with a token could have run, so it
is treated as hostile:

* every member is checked before anything is written: no absolute names, no ``..``, no
  devices or fifos, no absolute link targets, no link target that leaves the destination;
* regular files and directories are written first, symbolic links last, so nothing is ever
  written through a link that came from the archive;
* before each write the real (symlink-resolved) parent directory must still be inside the
  destination, and every link created is checked again once all links exist, because links
  can combine (``a -> b/..`` plus ``b -> .``) into an escape that no single one shows.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import shutil
import tarfile
from pathlib import Path

from jobqueue.client.errors import UnsafeArchiveError

_FILE_MODE_MASK = 0o755  # keep the execute bits, drop setuid/setgid/sticky and group/other write


def safe_extract(archive: str | os.PathLike[str], dest: str | os.PathLike[str]) -> list[str]:
    """Extract the tar (optionally compressed) ``archive`` into ``dest``; return member names."""
    dest_path = Path(dest)
    dest_path.mkdir(parents=True, exist_ok=True)
    root = os.path.realpath(dest_path)
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
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
                    source = _target_path(root, _clean_name(member.linkname))
                    _inside(root, os.path.realpath(source), member.name)
                    _remove_existing(target)
                    os.link(source, target, follow_symlinks=False)
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
                    raise UnsafeArchiveError(
                        f"archive member {member_name!r} is a link that points outside {dest}"
                    )
    except tarfile.TarError as exc:
        raise UnsafeArchiveError(f"{archive} is not a readable tar archive: {exc}") from exc
    return names


def _check_member(member: tarfile.TarInfo) -> None:
    name = member.name
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchiveError(f"archive member {name!r} has an absolute path")
    if "\\" in name or "\x00" in name:
        raise UnsafeArchiveError(f"archive member {name!r} has an invalid name")
    if ".." in name.split("/"):
        raise UnsafeArchiveError(f"archive member {name!r} contains '..'")
    if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
        raise UnsafeArchiveError(f"archive member {name!r} is a device, fifo or other special file")
    if member.issym() or member.islnk():
        link = member.linkname
        if not link or link.startswith("/") or "\x00" in link:
            raise UnsafeArchiveError(f"archive member {name!r} links to absolute path {link!r}")
        # Symbolic links are relative to their directory; hard links to the archive root.
        base = posixpath.dirname(_clean_name(name)) if member.issym() else ""
        resolved = posixpath.normpath(posixpath.join(base, link))
        if resolved == ".." or resolved.startswith("../"):
            raise UnsafeArchiveError(f"archive member {name!r} links outside: {link!r}")


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
        raise UnsafeArchiveError(f"archive member {member.name!r} has no data")
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
        raise UnsafeArchiveError(f"archive member {name!r} would be written outside {root}")


def _resolves_inside(root: str, link_path: str) -> bool:
    real = os.path.realpath(link_path)
    return real == root or real.startswith(root.rstrip(os.sep) + os.sep)
