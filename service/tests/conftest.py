"""Fixtures: a controller app on SQLite and on PostgreSQL, with users of every role."""

from __future__ import annotations

import fcntl
import gzip
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from jobqueue.client import Client
from jobqueue.controller.app import create_app
from jobqueue.localcluster import LocalCluster, create_users
from jobqueue.controller.settings import ControllerSettings

POSTGRES_URL = os.environ.get("JOBQUEUE_TEST_POSTGRES_URL", "")


def reset_postgres(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/jobqueue.db"
    if not POSTGRES_URL:
        if os.environ.get("CI"):
            pytest.fail("CI must set JOBQUEUE_TEST_POSTGRES_URL: PostgreSQL tests may not skip")
        pytest.skip("JOBQUEUE_TEST_POSTGRES_URL is not set")
    url = own_database(POSTGRES_URL)
    reset_postgres(url)
    return url


def own_database(url: str) -> str:
    """The database of this pytest-xdist worker (created on first use) on the server of
    `url`, or `url` itself without xdist."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not worker:
        return url
    own = f"{url.rsplit('/', 1)[1]}_{worker}"
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        if not conn.exec_driver_sql("SELECT 1 FROM pg_database WHERE datname = %(name)s",
                                    {"name": own}).first():
            conn.exec_driver_sql(f'CREATE DATABASE "{own}"')
    engine.dispose()
    return f"{url.rsplit('/', 1)[0]}/{own}"


def tar_bytes(members: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    """A .tar.gz of `members` and symlinks `links`, the same bytes every time (test IDs
    made of them must match in every pytest-xdist worker)."""
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return buf.getvalue()


SCRIPT = b"print('hello')\n"


@dataclass
class Stack:
    """A controller app, its test client and a token per user."""

    app: object
    http: object
    tokens: dict[str, str]
    settings: ControllerSettings

    @property
    def backend(self):
        return self.app.extensions["jobqueue"].backend

    @property
    def files(self):
        return self.app.extensions["jobqueue"].files

    def jobs(self, who="alice") -> list[dict]:
        response = self.http.get("/api/v1/jobs", headers=self.headers(who))
        assert response.status_code == 200, response.get_json()
        return response.get_json()["jobs"]

    def headers(self, who: str | None) -> dict:
        return {"Authorization": f"Bearer {self.tokens[who]}"} if who else {}

    def submit(self, who="alice", spec=None, files=None, archive=None, key=None):
        spec = {"entry": "main.py"} if spec is None else spec
        files = {"main.py": SCRIPT} if files is None else files
        data = {"spec": spec if isinstance(spec, str) else json.dumps(spec)}
        data["files"] = [(io.BytesIO(content), name) for name, content in files.items()]
        if archive is not None:
            data["archive"] = (io.BytesIO(archive), "input.tar.gz")
        headers = self.headers(who) | ({"Idempotency-Key": key} if key is not None else {})
        return self.http.post("/api/v1/jobs", data=data, headers=headers,
                              content_type="multipart/form-data")

    def submit_ok(self, who="alice", **kwargs) -> dict:
        response = self.submit(who, **kwargs)
        assert response.status_code == 201, response.get_json()
        return response.get_json()

    def claim(self, cpus=1, wait=0, who="w1"):
        body = {"worker": who, "cpus": cpus, "wait": wait}
        return self.http.post("/api/v1/worker/claim", json=body, headers=self.headers(who))

    def claim_ok(self, **kwargs) -> dict:
        response = self.claim(**kwargs)
        assert response.status_code == 200, response.status_code
        return response.get_json()

    def heartbeat(self, job_id, lease, who="w1"):
        return self.http.post(f"/api/v1/worker/jobs/{job_id}/heartbeat", json={"lease": lease},
                              headers=self.headers(who))

    def upload(self, job_id, lease, state="succeeded", exit_code=0, results=None,
               stdout=b"out\n", stderr=b"", who="w1"):
        data = {"status": json.dumps({"lease": lease, "state": state, "exit_code": exit_code,
                                      "message": ""}),
                "stdout": (io.BytesIO(stdout), "stdout"), "stderr": (io.BytesIO(stderr), "stderr")}
        if results is not None:
            data["results"] = (io.BytesIO(results), "results.tar.gz")
        return self.http.post(f"/api/v1/worker/jobs/{job_id}/result", data=data,
                              headers=self.headers(who), content_type="multipart/form-data")

    def job(self, job_id, who="alice") -> dict:
        response = self.http.get(f"/api/v1/jobs/{job_id}", headers=self.headers(who))
        assert response.status_code == 200, response.get_json()
        return response.get_json()


@pytest.fixture
def make_stack(database_url, tmp_path):
    apps = []

    def factory(**overrides) -> Stack:
        settings = ControllerSettings(database_url=database_url, data_dir=str(tmp_path / "data"),
                                      **overrides)
        tokens = create_users(settings, ("alice", "user"), ("bob", "user"), ("root", "admin"),
                            ("w1", "worker"), ("w2", "worker"))
        app = create_app(settings)
        apps.append(app)
        return Stack(app, app.test_client(), tokens, settings)

    yield factory
    for app in apps:
        state = app.extensions["jobqueue"]
        state.backend.close()
        state.session_factory.kw["bind"].dispose()


@pytest.fixture
def stack(make_stack) -> Stack:
    return make_stack()


class Cluster(LocalCluster):
    """A local cluster with user alice and workers w1, w2, and a client for alice."""

    def __init__(self, tmp_path: Path, database_url: str, **settings):
        settings = ControllerSettings(database_url=database_url,
                                      data_dir=str(tmp_path / "controller"), **settings)
        self.tokens = create_users(settings, ("alice", "user"), ("w1", "worker"),
                                   ("w2", "worker"))
        super().__init__(tmp_path, settings)
        self.client = Client(self.url, self.tokens["alice"])

    def start_worker(self, name: str, cpus: int = 1, **extra):
        # A short claim wait bounds how long a worker takes to stop.
        settings = {"heartbeat_seconds": 0.5, "claim_wait_seconds": 2} | extra
        return super().start_worker(name, self.tokens[name], cpus, **settings)

    def submit(self, script: str, args=(), **spec) -> str:
        job = self.client.submit({"main.py": script.encode()},
                                 {"entry": "main.py", "args": list(args), **spec})
        return job["id"]

    def wait_for(self, job_id: str, predicate, seconds: float = 60) -> dict:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            job = self.client.get(job_id)
            if predicate(job):
                return job
            time.sleep(0.1)
        raise AssertionError(f"job never reached the expected state: {job}\n{self.logs()}")

    def stop(self) -> None:
        super().stop()
        self.client.close()


@pytest.fixture
def cluster(database_url, tmp_path):
    clusters = []

    def start(**settings) -> Cluster:
        clusters.append(Cluster(tmp_path, database_url, **settings))
        return clusters[-1]

    yield start
    for c in clusters:
        c.stop()


def slurm(*args: str) -> str:
    """A Slurm command's output (the local Slurm's, through SLURM_CONF)."""
    return subprocess.run(args, capture_output=True, text=True, check=True, timeout=30).stdout


@pytest.fixture
def local_slurm():
    """The one-node Slurm scripts/test-slurm.sh starts on this machine (it sets
    SLURM_CONF). The tests' jobs (named jq-... by the slurm backend, jqw-... by the
    slurm runner) that a test leaves are cancelled after it."""
    if not os.environ.get("SLURM_CONF") or not shutil.which("sbatch"):
        if os.environ.get("CI"):
            pytest.fail("CI must run the Slurm tests: scripts/test-slurm.sh sets SLURM_CONF")
        pytest.skip("no local Slurm (SLURM_CONF is not set)")
    # One test at a time across pytest-xdist workers: each cancels what the others left.
    with open(Path(tempfile.gettempdir()) / "jobqueue-test-slurm.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield
        _cancel_test_jobs()


def _cancel_test_jobs() -> None:
    ours = [line.split("|")[0] for line in
            slurm("squeue", "-h", "-t", "pending,running", "-o", "%i|%j").splitlines()
            if "|jq" in line]
    if ours:
        subprocess.run(["scancel", *ours], check=False)


def pytest_runtest_logreport(report):
    from fault_report import PROPERTY, ROWS

    if report.when == "call":
        ROWS.extend(value for name, value in report.user_properties if name == PROPERTY)


def pytest_terminal_summary(terminalreporter):
    from fault_report import ROWS, table

    if ROWS:
        terminalreporter.section("fault injection")
        for line in table():
            terminalreporter.write_line(line)
