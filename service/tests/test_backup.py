"""`jobqueue-admin backup` and `restore`: a controller's database and job storage come
back whole (jobs, tokens, inputs, logs, results), on SQLite and on PostgreSQL, and a
backup that does not match its manifest is refused before anything is written."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest
from sqlalchemy import text

from conftest import tar_bytes
from jobqueue.controller import admin, backup
from jobqueue.controller.db import make_engine


def admin_run(capsys, *args: str) -> dict:
    assert admin.main(["--config", "/nonexistent.toml", *args]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def everything(stack) -> dict:
    """What users see of every job: its record, files, logs and results."""
    root = stack.headers("root")
    seen = {}
    for job in stack.http.get("/api/v1/jobs?all=1", headers=root).get_json()["jobs"]:
        path = f"/api/v1/jobs/{job['id']}"
        seen[job["id"]] = (
            job, stack.http.get(f"{path}/files", headers=root).get_json(),
            stack.http.get(f"{path}/log", headers=root).get_json(),
            archive_contents(stack.http.get(f"{path}/results", headers=root).data)
            if job["state"] == "succeeded" else None)
    return seen


def archive_contents(data: bytes) -> dict[str, bytes]:
    """A results archive's files (the archive itself is made on each request)."""
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


@pytest.fixture
def backed_up(stack, database_url, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("JOBQUEUE_DATABASE_URL", database_url)
    monkeypatch.setenv("JOBQUEUE_DATA_DIR", str(tmp_path / "data"))
    done = stack.submit_ok()["id"]
    stack.submit_ok()  # still queued
    lease = stack.claim_ok()["lease"]
    assert stack.upload(done, lease, results=tar_bytes({"out.txt": b"result\n"}),
                        stdout=b"hello\n").status_code == 200
    before = everything(stack)
    made = admin_run(capsys, "backup", str(tmp_path / "backup"))
    assert made["jobs"] == 2 and made["files"] >= 3, made
    return before, tmp_path / "backup"


def test_a_restore_onto_an_emptied_controller_brings_everything_back(
        stack, backed_up, database_url, tmp_path, capsys):
    before, backup_dir = backed_up
    engine = make_engine(database_url)
    with engine.begin() as db:  # the database and the storage lost
        db.execute(text("DELETE FROM jobs"))
        db.execute(text("DELETE FROM tokens"))
    engine.dispose()
    shutil.rmtree(tmp_path / "data" / "jobs")
    assert stack.http.get("/api/v1/jobs", headers=stack.headers("root")).status_code == 401
    restored = admin_run(capsys, "restore", str(backup_dir))
    assert restored["jobs"] == 2
    stack.app.extensions["jobqueue"].session_factory.kw["bind"].dispose()
    assert everything(stack) == before


def test_a_backup_that_does_not_match_its_manifest_is_refused_untouched(
        stack, backed_up, tmp_path, capsys):
    before, backup_dir = backed_up
    with open(backup_dir / "storage.tar", "r+b") as tar:
        tar.seek(600)
        tar.write(b"X")
    assert admin.main(["--config", "/nonexistent.toml", "restore", str(backup_dir)]) == 2
    assert "does not match the manifest" in capsys.readouterr().err
    assert everything(stack) == before
    assert not list(Path(tmp_path / "data").glob(".restore-*"))


def test_a_backup_whose_storage_escapes_its_directory_is_refused_untouched(
        stack, backed_up, tmp_path, capsys):
    """A manifest that matches is no proof of a safe archive: a member named out of
    the storage (written by whoever could write the backup) is refused."""
    before, backup_dir = backed_up
    with tarfile.open(backup_dir / "storage.tar", "a") as tar:
        tar.addfile(tarfile.TarInfo("../escaped"), io.BytesIO(b""))
    manifest = json.loads((backup_dir / "manifest.json").read_text())
    manifest["storage"]["sha256"] = backup._sha256(backup_dir / "storage.tar")
    (backup_dir / "manifest.json").write_text(json.dumps(manifest))
    assert admin.main(["--config", "/nonexistent.toml", "restore", str(backup_dir)]) == 2
    assert "storage.tar" in capsys.readouterr().err
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "data" / "escaped").exists()
    assert everything(stack) == before
    assert not list(Path(tmp_path / "data").glob(".restore-*"))
