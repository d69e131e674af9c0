"""Fault injection: real controller and worker processes killed at chosen steps and at
random under load, a PostgreSQL restart, answers lost on the way back. Whatever
happens, every job succeeds exactly once with its own results readable, no attempt
is burnt by a short outage, and no job runs twice at the same time.

A supervisor thread restarts whatever dies, as systemd does in production. Each
scenario adds a row to the table printed at the end of the run (and written to
$JOBQUEUE_FAULT_REPORT, if set): jobs succeeded / lost / duplicated, the most
attempts any job took, and how long the controller did not answer /healthz.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from jobqueue.client import Client, ClientError, TransportError
from jobqueue.controller.settings import ControllerSettings
from fault_report import report
from jobqueue.localcluster import LocalCluster, create_users
from private_postgres import PrivatePostgres, find_bindir

pytestmark = pytest.mark.e2e

# Takes a lock that any concurrent run of the same job would find taken: a run that
# finds it taken writes itself down as an overlap. The lock dies with the process.
JOB = r"""
import fcntl, os, sys, time
index, runs, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
lock = os.open(os.path.join(runs, index + ".lock"), os.O_CREAT | os.O_RDWR)
try:
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
except BlockingIOError:
    with open(os.path.join(runs, "overlaps"), "a") as fh:
        fh.write(index + "\n")
    fcntl.flock(lock, fcntl.LOCK_EX)
with open(os.path.join(runs, "starts"), "a") as fh:
    fh.write(index + "\n")
time.sleep(seconds)
os.makedirs("out", exist_ok=True)
with open("out/answer.txt", "w") as fh:
    fh.write(f"job {index} {os.environ['JOBQUEUE_JOB_ID']}\n")
print("done", index)
"""

@pytest.fixture(scope="session")
def private_postgres():
    if not os.environ.get("JOBQUEUE_TEST_POSTGRES_URL") and not os.environ.get("CI"):
        pytest.skip("JOBQUEUE_TEST_POSTGRES_URL is not set: PostgreSQL tests are off")
    bindir = find_bindir()
    if bindir is None:
        if os.environ.get("CI"):
            pytest.fail("CI needs the PostgreSQL server binaries (scripts/test-postgres.sh)")
        pytest.skip("no PostgreSQL server binaries")
    server = PrivatePostgres(bindir)
    yield server
    server.destroy()


@pytest.fixture(params=["sqlite", "postgres"])
def fault_db(request, tmp_path):
    """(name, URL, server or None): PostgreSQL is a private server a test may restart."""
    if request.param == "sqlite":
        return "sqlite", f"sqlite:///{tmp_path}/jobqueue.db", None
    server = request.getfixturevalue("private_postgres")
    return "postgres", server.create_database(f"faults_{os.getpid()}"), server


class Availability:
    """Probes /healthz every 50 ms; adds up the time it went unanswered."""

    def __init__(self, url: str):
        self.url = url
        self.down_seconds = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._probe, daemon=True)
        self._thread.start()

    def _probe(self) -> None:
        down_since = None
        while not self._stop.wait(0.05):
            try:
                ok = requests.get(f"{self.url}/healthz", timeout=2).status_code == 200
            except requests.RequestException:
                ok = False
            now = time.monotonic()
            if not ok and down_since is None:
                down_since = now
            elif ok and down_since is not None:
                self.down_seconds += now - down_since
                down_since = None

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.down_seconds


class FaultCluster(LocalCluster):
    """Controller and workers under a supervisor that restarts any process that dies.
    Each start of the controller arms the next of `faults` (a fault point), if any."""

    def __init__(self, root: Path, database_url: str, workers: int, faults=(), **settings):
        # An outage shorter than the lease costs no attempt; on this loaded test machine
        # a controller restart can take 10 s (in production: 2 s, and a 60 s lease).
        settings = ControllerSettings(database_url=database_url, data_dir=str(root / "data"),
                                      **{"lease_seconds": 30, **settings})
        self.tokens = create_users(settings, ("alice", "user"),
                                   *((f"w{i}", "worker") for i in range(1, workers + 1)))
        self.faults = list(faults)
        super().__init__(root, settings)
        self.client = Client(self.url, self.tokens["alice"], retry_seconds=60)
        self.restarts = {"controller": 0} | {f"w{i}": 0 for i in range(1, workers + 1)}
        self.stopping = threading.Event()
        for name in list(self.restarts)[1:]:
            self.start_worker(name)
        self.runs = root / "runs"
        self.runs.mkdir()
        self.availability = Availability(self.url)
        self._supervisor = threading.Thread(target=self._supervise, daemon=True)
        self._supervisor.start()

    def start_worker(self, name: str, cpus: int = 2, **extra):
        return super().start_worker(name, self.tokens[name], cpus, heartbeat_seconds=0.5,
                                    claim_wait_seconds=2, kill_grace_seconds=0.5, **extra)

    def start_controller(self, **env: str) -> subprocess.Popen:
        if self.faults:
            env["JOBQUEUE_FAULT"] = self.faults.pop(0)
        return super().start_controller(**env)

    def _supervise(self) -> None:
        while not self.stopping.wait(0.1):
            if self.controller.poll() is not None:
                try:
                    self.start_controller()
                except RuntimeError:
                    continue  # died while starting: try again, as systemd would
                self.restarts["controller"] += 1
            for name, process in list(self.workers.items()):
                if process.poll() is not None and not self.stopping.is_set():
                    self.start_worker(name)
                    self.restarts[name] = self.restarts.get(name, 0) + 1

    def wait_restarts(self, name: str, count: int, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while self.restarts[name] < count:
            assert time.monotonic() < deadline, f"{name} was not restarted {count} times"
            time.sleep(0.05)

    def submit(self, index: int, seconds: float) -> str:
        return self.client.submit({"main.py": JOB.encode()}, {
            "entry": "main.py", "args": [str(index), str(self.runs), str(seconds)]})["id"]

    def wait_all(self, seconds: float) -> list[dict]:
        """Every job, once none is queued or running."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                if not any(self.client.list(state=state, limit=1)
                           for state in ("queued", "running")):
                    return self.client.list()
            except TransportError:  # the controller is being restarted
                pass
            time.sleep(0.5)
        raise AssertionError(f"jobs still unfinished after {seconds} s:\n{self.logs()}")

    def stop(self) -> None:
        self.stopping.set()
        self._supervisor.join()
        self.availability.stop()
        super().stop()
        self.client.close()


@dataclass
class Outcome:
    succeeded: int
    lost: int
    duplicated: int
    max_attempts: int
    problems: list[str]


def check(c: FaultCluster, expected: dict[int, str], jobs: list[dict]) -> Outcome:
    """Each submitted job once, succeeded, its own answer readable, never run twice at once."""
    by_id = {job["id"]: job for job in jobs}

    def problem(index: int, job_id: str) -> str | None:
        job = by_id.get(job_id)
        if job is None or job["state"] != "succeeded":
            return f"job {index} ({job_id}): {job and job['state']} {job and job['message']}"
        answer = c.root / "answers" / job_id
        try:
            c.client.download_file(job_id, "out/answer.txt", answer)
        except ClientError as exc:
            return f"job {index} ({job_id}): results unreadable: {exc}"
        if answer.read_text() != f"job {index} {job_id}\n":
            return f"job {index} ({job_id}): another job's results: {answer.read_text()!r}"
        return None

    with ThreadPoolExecutor(4) as pool:
        problems = [p for p in pool.map(problem, expected, expected.values()) if p]
    succeeded = len(expected) - len(problems)
    overlaps = (c.runs / "overlaps").read_text().split() if (c.runs / "overlaps").exists() else []
    extra = len(jobs) - len(expected)
    if overlaps:
        problems.append(f"jobs that ran twice at once: {overlaps}")
    if extra:
        problems.append(f"{extra} job(s) beyond those submitted")
    leftovers = sorted(p.name for p in (Path(c.settings.data_dir) / "uploads").iterdir())
    if leftovers:
        problems.append(f"uploads left behind: {leftovers}")
    return Outcome(succeeded, len(expected) - succeeded, extra + len(overlaps),
                   max((j["attempts"] for j in jobs), default=0), problems)


@pytest.fixture
def fault_cluster(fault_db, tmp_path):
    clusters = []

    def start(workers: int = 2, faults=(), **settings) -> FaultCluster:
        (tmp_path / "answers").mkdir(exist_ok=True)
        clusters.append(FaultCluster(tmp_path, fault_db[1], workers, faults, **settings))
        return clusters[-1]

    yield start
    for c in clusters:
        c.stop()


# The steps of a request at which the controller is killed, in the order they happen.
STEPS = [
    "submit:after-commit",   # the job is stored; the client never hears of it
    "claim:after-commit",    # the job is claimed; the worker never hears of it
    "upload:writing",        # result files half written
    "upload:staged",         # result files complete, not yet marked ready
    "upload:before-commit",  # files ready and durable; the database not yet told
    "upload:after-commit",   # the database says succeeded; the files not yet in place
    "upload:placed",         # all done; the answer never leaves
]


def test_controller_killed_at_each_step_of_a_job(fault_db, fault_cluster, record_property):
    started = time.monotonic()
    c = fault_cluster(workers=1, faults=STEPS)
    expected = {}
    for index, _step in enumerate(STEPS):
        c.wait_restarts("controller", index)  # the controller armed with `_step` is up
        expected[index] = c.submit(index, 0)
        c.wait_all(60)
        c.wait_restarts("controller", index + 1, 10)  # it died at `_step` and came back
    outcome = check(c, expected, c.client.list())
    unavailable = c.availability.stop()
    report(record_property, f"controller SIGKILL at each step ({len(STEPS)})", fault_db[0],
           outcome, unavailable, started)
    assert not outcome.problems, "\n".join(outcome.problems) + c.logs()
    assert outcome.max_attempts == 1
    for job_id in expected.values():  # nothing but the inputs and one result per job
        job_dir = Path(c.settings.data_dir) / "jobs" / job_id
        assert sorted(p.name for p in job_dir.iterdir()) == ["input", "result"]


def _submit_all(c: FaultCluster, count: int, rng: random.Random) -> dict[int, str]:
    durations = [rng.uniform(0.02, 0.3) for _ in range(count)]
    with ThreadPoolExecutor(4) as pool:
        ids = pool.map(lambda i: c.submit(i, durations[i]), range(count))
        return dict(enumerate(ids))


def test_random_kills_of_controller_and_workers_under_load(fault_db, fault_cluster,
                                                           record_property):
    seed = int(os.environ.get("JOBQUEUE_FAULT_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    started = time.monotonic()
    count = 200
    c = fault_cluster(workers=2)
    kills = ["controller", "w1", "controller", "w2", "w1"]
    sent: list[str] = []
    done = threading.Event()

    def chaos():
        # At most 12.5 s of pauses in all: well inside the time the jobs take, so
        # every kill lands while they run.
        for victim in kills:
            if done.wait(rng.uniform(0.5, 2.5)):
                return
            # A kill must land on a started process: one sent while the supervisor is
            # still bringing the last one back would kill nothing that counts.
            c.wait_restarts(victim, sent.count(victim))
            process = c.controller if victim == "controller" else c.workers[victim]
            process.send_signal(signal.SIGKILL)
            sent.append(victim)

    killer = threading.Thread(target=chaos)
    killer.start()
    try:
        expected = _submit_all(c, count, rng)
        jobs = c.wait_all(240)
    finally:
        done.set()
        killer.join()
    outcome = check(c, expected, jobs)
    unavailable = c.availability.stop()
    report(record_property, f"SIGKILL controller x2, workers x3, {count} jobs", fault_db[0],
           outcome, unavailable, started)
    message = (f"seed {seed}, kills {sent}, restarts {c.restarts}\n"
               + "\n".join(outcome.problems))
    assert not outcome.problems, message + c.logs()
    assert sent == kills, "the jobs were done before every kill: " + message
    assert sum(c.restarts.values()) >= len(kills), message
    assert outcome.max_attempts == 1, message


def test_postgresql_restart_under_load(fault_db, fault_cluster, record_property):
    name, _, server = fault_db
    if server is None:
        pytest.skip("a restart of the database server applies to PostgreSQL only")
    started = time.monotonic()
    count = 80
    c = fault_cluster(workers=2)
    rng = random.Random(1)
    restarted = threading.Event()

    def restart_twice():
        for _ in range(2):
            time.sleep(3)
            server.restart(down_seconds=1.0)
        restarted.set()

    restarter = threading.Thread(target=restart_twice)
    restarter.start()
    expected = _submit_all(c, count, rng)
    restarter.join()
    jobs = c.wait_all(180)
    outcome = check(c, expected, jobs)
    unavailable = c.availability.stop()
    report(record_property, f"PostgreSQL restart x2 (1 s down), {count} jobs", name, outcome,
           unavailable, started)
    assert not outcome.problems, "\n".join(outcome.problems) + c.logs()
    assert outcome.max_attempts == 1
    assert unavailable >= 1.0  # the outage was real: /healthz saw it
    assert c.restarts == {"controller": 0, "w1": 0, "w2": 0}  # nothing died of it
    log = (c.root / "controller.log").read_text()
    assert "database unavailable" in log  # answered 503 meanwhile,
    assert "unhandled error" not in log  # never 500




class Partition:
    """A TCP relay between one worker and the controller that the test can cut: the
    worker then cannot reach the controller, while everyone else still can."""

    def __init__(self, target_port: int):
        self.target = ("127.0.0.1", target_port)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        self.cut = threading.Event()
        self.connections: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            client, _ = self.server.accept()
            if self.cut.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            self.connections += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def disconnect(self) -> None:
        self.cut.set()
        for conn in self.connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


def test_a_worker_cut_off_longer_than_the_lease_stops_its_job(fault_db, fault_cluster,
                                                              record_property):
    """The job's lease runs out while its worker cannot reach the controller, and the job
    starts again on another worker: its first run must have stopped before that."""
    if fault_db[0] != "sqlite":
        pytest.skip("the workers' side of the lease: one database is enough")
    started = time.monotonic()
    c = fault_cluster(workers=0, lease_seconds=4)
    c.tokens |= create_users(c.settings, ("w1", "worker"), ("w2", "worker"))
    partition = Partition(c.port)
    c.start_worker("w1", cpus=1, controller_url=partition.url)
    expected = {0: c.submit(0, 10)}
    deadline = time.monotonic() + 30
    while not (c.runs / "starts").exists():  # the job runs on w1
        assert time.monotonic() < deadline, c.logs()
        time.sleep(0.1)
    partition.disconnect()
    c.start_worker("w2", cpus=1)  # the job's next attempt runs here
    outcome = check(c, expected, c.wait_all(60))
    unavailable = c.availability.stop()
    report(record_property, "worker cut off 10 s, lease 4 s", fault_db[0], outcome, unavailable,
           started)
    assert not outcome.problems, "\n".join(outcome.problems) + c.logs()
    assert outcome.max_attempts == 2  # the cut-off attempt is lost, as it must be
    assert (c.runs / "starts").read_text().split() == ["0", "0"]
    assert "lease not renewed" in (c.root / "w1.log").read_text()
