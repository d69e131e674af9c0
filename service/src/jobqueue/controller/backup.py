"""Back up and restore a controller: its database and its job storage, with a manifest
of checksums that a restore checks before it writes anything and again after.

A backup is a directory of three files:

    database.sqlite3 | database.pgdump   SQLite's online backup, or pg_dump's custom format
    storage.tar                          the job storage (data_dir/jobs): inputs, logs, results
    manifest.json                        what the rest holds, and the SHA-256 of each file

The database is copied first, then the storage: a job in the database has all its
files in the backup (the storage only grows while jobs exist; a job deleted during the
backup may leave files without a job, which a restore keeps and nothing reads).
A restore replaces the database (users and tokens included) and writes the storage
back; the controller's service must be stopped meanwhile.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import tarfile
import tempfile
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.engine import URL, make_url

from jobqueue import __version__
from jobqueue.archive import UnsafeArchive, safe_extract
from jobqueue.models import Job, utcnow

MANIFEST = "manifest.json"
STORAGE = "storage.tar"
FORMAT = 1
CHUNK = 1 << 20


class BackupError(Exception):
    pass


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _libpq(url: URL) -> tuple[str, dict[str, str]]:
    """A libpq connection URI for pg_dump/pg_restore, its password in the environment
    (not on a command line other users can read)."""
    env = dict(os.environ)
    if url.password is not None:
        env["PGPASSWORD"] = str(url.password)
    plain = url.set(drivername="postgresql", password=None)
    return plain.render_as_string(hide_password=False), env


def _run(argv: list[str], env: dict[str, str] | None = None) -> None:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    except FileNotFoundError:
        raise BackupError(f"{argv[0]} is not installed on this host") from None
    if result.returncode != 0:
        raise BackupError(f"{argv[0]} failed: {result.stderr.strip()[-2000:]}")


def backup(database_url: str, data_dir: Path, session, dest: Path) -> dict:
    """Write a backup into `dest` (a new directory); its manifest."""
    dest.mkdir(parents=True)
    url = make_url(database_url)
    jobs = session.scalar(select(func.count()).select_from(Job))
    session.rollback()
    if url.get_backend_name() == "sqlite":
        database = dest / "database.sqlite3"
        source = sqlite3.connect(f"file:{url.database}?mode=ro", uri=True)
        target = sqlite3.connect(database)
        with target:
            source.backup(target)
        source.close()
        target.close()
    else:
        database = dest / "database.pgdump"
        uri, env = _libpq(url)
        _run(["pg_dump", "--format=custom", "--no-owner", "--file", str(database), uri], env)
    files: dict[str, str] = {}
    jobs_dir = data_dir / "jobs"
    with tarfile.open(dest / STORAGE, "w") as tar:
        for path in sorted(jobs_dir.rglob("*")) if jobs_dir.is_dir() else ():
            name = path.relative_to(data_dir).as_posix()
            if path.is_symlink() or not (path.is_file() or path.is_dir()):
                continue  # the storage holds files and directories only
            tar.add(path, arcname=name, recursive=False)
            if path.is_file():
                files[name] = _sha256(path)
    manifest = {"format": FORMAT, "version": __version__,
                "created_at": utcnow().isoformat(timespec="seconds"),
                "jobs": jobs,
                "database": {"file": database.name, "sha256": _sha256(database)},
                "storage": {"file": STORAGE, "sha256": _sha256(dest / STORAGE),
                            "files": files}}
    (dest / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return summary(manifest)


def summary(manifest: dict) -> dict:
    return {"jobs": manifest["jobs"], "files": len(manifest["storage"]["files"]),
            "created_at": manifest["created_at"], "version": manifest["version"]}


def _checked_manifest(source: Path) -> dict:
    """The backup's manifest, once its database and storage files match it."""
    try:
        manifest = json.loads((source / MANIFEST).read_text())
        parts = [manifest["database"], manifest["storage"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BackupError(f"{source} is not a backup: {exc}") from None
    if manifest.get("format") != FORMAT:
        raise BackupError(f"{source}: backup format {manifest.get('format')!r}, not {FORMAT}")
    for part in parts:
        path = source / Path(part["file"]).name
        if not path.is_file() or _sha256(path) != part["sha256"]:
            raise BackupError(f"{path} is missing or does not match the manifest's checksum")
    return manifest


def restore(database_url: str, data_dir: Path, source: Path) -> dict:
    """Replace the database and the job storage with the backup in `source`."""
    manifest = _checked_manifest(source)
    url = make_url(database_url)
    database = source / Path(manifest["database"]["file"]).name
    if (url.get_backend_name() == "sqlite") != (database.suffix == ".sqlite3"):
        raise BackupError(f"{database.name} cannot be restored into a "
                          f"{url.get_backend_name()} database")
    # The storage first, beside the old one, checked file by file; then the swap.
    staging = Path(tempfile.mkdtemp(prefix=".restore-", dir=data_dir))
    try:
        # The project's own checked extraction: the manifest's checksums say nothing
        # of a name or a link, and Debian 12's Python has no extraction filters.
        try:
            safe_extract(source / STORAGE, staging)
        except UnsafeArchive as exc:
            raise BackupError(f"{STORAGE}: {exc}") from None
        expected = manifest["storage"]["files"]
        for name, digest in expected.items():
            path = staging / name
            if not path.is_file() or _sha256(path) != digest:
                raise BackupError(f"{name} does not match the manifest after extraction")
        if url.get_backend_name() == "sqlite":
            target = Path(url.database)
            copy = target.with_name(target.name + ".restoring")
            shutil.copyfile(database, copy)
            for suffix in ("-wal", "-shm"):  # the old database's journal is not the new one's
                target.with_name(target.name + suffix).unlink(missing_ok=True)
            os.replace(copy, target)
        else:
            uri, env = _libpq(url)
            _run(["pg_restore", "--clean", "--if-exists", "--no-owner", "--single-transaction",
                  "--dbname", uri, str(database)], env)
        old = data_dir / "jobs"
        if old.exists():
            shutil.rmtree(old)
        (staging / "jobs").mkdir(exist_ok=True)
        os.replace(staging / "jobs", old)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return summary(manifest)
