"""End to end: a real controller server process, real worker processes, real jobs.

Runs on SQLite and on PostgreSQL (the `database_url` fixture)."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from conftest import Cluster
from jobqueue.worker.attempt import Attempts
from jobqueue.worker.daemon import Worker
from jobqueue.worker.runner import LocalRunner
from jobqueue.worker.settings import WorkerSettings
from jobqueue.worker.systemd_bus import SystemdError

pytestmark = pytest.mark.e2e

MAPPER_JOB = """\
import json, os
from jobqueue import mapper

def square(x):
    return x * x, os.getpid()

pairs = mapper.map(square, range(40))
os.makedirs("out", exist_ok=True)
with open("out/squares.json", "w") as fh:
    json.dump([value for value, _ in pairs], fh)
print("cpus", mapper.cpus(), "processes", len({pid for _, pid in pairs}))
"""

SLOW_JOB = """\
import sys, time
time.sleep(float(sys.argv[1]))
with open("done.txt", "w") as fh:
    fh.write("done")
print("finished")
"""


def test_mapper_job_runs_on_all_its_cpus(cluster, tmp_path):
    c = cluster()
    c.start_worker("w1", cpus=2)
    job_id = c.submit(MAPPER_JOB, cpus=2)
    job = c.client.wait(job_id, timeout=120, interval=0.2)
    assert job["state"] == "succeeded", c.logs() + json.dumps(c.client.log(job_id))
    assert job["worker"] == "w1" and job["exit_code"] == 0
    results = c.client.download_results(job_id, tmp_path / "results")
    squares = json.loads((results / "out" / "squares.json").read_text())
    assert squares == [x * x for x in range(40)]
    assert c.client.log(job_id)["stdout"].strip() == "cpus 2 processes 2"
    # The job's directories were removed; only the worker's next claim id is kept.
    assert [p.name for p in (tmp_path / "work-w1").iterdir()] == ["claim-id"]


def test_a_job_starts_as_soon_as_the_cpus_it_needs_free_up(cluster):
    """A worker's waiting claim is not stuck with the free CPUs it had when it was sent:
    a 2-CPU job queued behind a running 1-CPU job on a 2-CPU worker starts within a
    second of that job's end, not when the claim's long poll runs out."""
    c = cluster(claim_wait_seconds=30)
    c.start_worker("w1", cpus=2, claim_wait_seconds=30)
    first = c.submit(SLOW_JOB, args=["2"], cpus=1)
    c.wait_for(first, lambda j: j["state"] == "running")
    time.sleep(0.5)  # the worker's next claim (one CPU free) is waiting now
    second = c.submit(SLOW_JOB, args=["0"], cpus=2)
    done_first = c.client.wait(first, timeout=60, interval=0.1)
    done_second = c.client.wait(second, timeout=60, interval=0.1)
    assert done_first["state"] == done_second["state"] == "succeeded", c.logs()
    gap = (dt.datetime.fromisoformat(done_second["started_at"])
           - dt.datetime.fromisoformat(done_first["finished_at"])).total_seconds()
    assert gap < 1.0, f"the 2-CPU job started {gap:.1f} s after the CPUs freed up"


def jobqueue(c: Cluster, *argv: str, stdin: str = "", **env: str):
    """The `jobqueue` command as alice (unless `env` says otherwise)."""
    env = dict(os.environ, JOBQUEUE_URL=c.url, JOBQUEUE_TOKEN=c.tokens["alice"]) | env
    return subprocess.run([sys.executable, "-m", "jobqueue.client.cli", *argv], env=env,
                          input=stdin, capture_output=True, text=True, timeout=120)


def fetch(c: Cluster, *argv: str) -> tuple[int, str]:
    """`jobqueue fetch ARGV` as alice; exit status and stderr."""
    result = jobqueue(c, "fetch", *argv)
    return result.returncode, result.stderr


def test_cli_takes_several_ids_prefixes_and_filters(cluster):
    c = cluster()
    sweep = [c.client.submit({"main.py": b"pass\n"}, {"entry": "main.py", "name": f"sweep-{n}"})
             ["id"] for n in range(3)]
    other = c.submit("pass\n", name="other")
    shown = jobqueue(c, "status", sweep[0][:8], sweep[1][:8])
    assert shown.returncode == 0 and shown.stdout.count("state:") == 2, shown.stderr
    assert sweep[0] in shown.stdout and sweep[1] in shown.stdout
    listed = jobqueue(c, "list", "--name", "SWEEP").stdout.splitlines()
    assert listed[0].split() == ["ID", "NAME", "STATE", "CPUS", "CREATED", "RUNTIME",
                                 "WORKER", "REASON"]
    assert sorted(line.split()[0] for line in listed[1:]) == sorted(sweep)
    # No worker yet: each queued job says why it waits.
    assert all(line.endswith("no worker has asked for jobs yet") for line in listed[1:]), listed
    cancelled = jobqueue(c, "cancel", "--name", "sweep-*")
    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout.count("cancelled") == 3
    assert [c.client.get(i)["state"] for i in sweep] == ["cancelled"] * 3
    assert c.client.get(other)["state"] == "queued"
    assert jobqueue(c, "cancel").returncode == 1  # nothing named: nothing done
    deleted = jobqueue(c, "delete", "--state", "cancelled", "--json")
    assert sorted(j["id"] for j in json.loads(deleted.stdout)) == sorted(sweep)
    bad = jobqueue(c, "delete", other[:8], "0000ffff")
    assert bad.returncode == 1 and "queued" in bad.stderr and "0000ffff" in bad.stderr


def test_login_checks_the_token_and_keeps_it_private(cluster, tmp_path):
    c = cluster()
    config = tmp_path / "conf" / "client.toml"
    wrong = jobqueue(c, "login", c.url, "--config", str(config), stdin="jq_wrong\n",
                     JOBQUEUE_TOKEN="")
    assert wrong.returncode == 1 and not config.exists()
    right = jobqueue(c, "login", c.url, "--config", str(config),
                     stdin=c.tokens["alice"] + "\n", JOBQUEUE_TOKEN="")
    assert right.returncode == 0 and "as alice (user)" in right.stdout, right.stderr
    assert config.stat().st_mode & 0o777 == 0o600
    listed = jobqueue(c, "list", JOBQUEUE_URL="", JOBQUEUE_TOKEN="",
                      JOBQUEUE_CLIENT_CONFIG=str(config))
    assert listed.returncode == 0, listed.stderr


def test_fetch_takes_finished_jobs_only_and_leaves_nothing_behind(cluster, tmp_path):
    c = cluster()
    job_id = c.submit(SLOW_JOB, args=["30"])
    code, err = fetch(c, job_id, "-o", str(tmp_path / "early"))
    assert code == 1 and "is queued" in err and "--partial" in err
    assert not (tmp_path / "early").exists()
    code, _ = fetch(c, job_id, "-o", str(tmp_path / "partial"), "--partial")
    assert code == 0 and sorted(os.listdir(tmp_path / "partial")) == ["main.py"]
    code, err = fetch(c, "0" * 32, "-o", str(tmp_path / "missing"), "--partial")
    assert code == 1 and "Traceback" not in err
    assert not (tmp_path / "missing").exists()
    c.client.cancel(job_id)

    c.start_worker("w1")
    done = c.client.wait(c.submit(SLOW_JOB, args=["0"]), timeout=60, interval=0.2)
    code, _ = fetch(c, done["id"], "-o", str(tmp_path / "all"))
    assert code == 0 and sorted(os.listdir(tmp_path / "all")) == ["done.txt", "main.py"]
    code, _ = fetch(c, done["id"], "-o", str(tmp_path / "outputs"), "--no-inputs")
    assert code == 0 and sorted(os.listdir(tmp_path / "outputs")) == ["done.txt"]


def test_killed_worker_job_is_requeued_and_finished_once(cluster, tmp_path):
    c = cluster(lease_seconds=2)
    c.start_worker("w1")
    c.start_worker("w2")
    job_id = c.submit(SLOW_JOB, args=["3"])
    first = c.wait_for(job_id, lambda j: j["state"] == "running")
    victim = c.workers[first["worker"]]
    children = subprocess.run(["pgrep", "-P", str(victim.pid)], capture_output=True,
                              text=True).stdout.split()
    victim.send_signal(signal.SIGKILL)  # the worker dies mid-job, taking its job with it
    for pid in children:
        with contextlib.suppress(ProcessLookupError):  # it may have ended on its own
            os.killpg(int(pid), signal.SIGKILL)
    victim.wait()
    done = c.client.wait(job_id, timeout=60, interval=0.2)
    assert done["state"] == "succeeded", c.logs()
    assert done["attempts"] == 2 and done["worker"] != first["worker"]
    files = [f["path"] for f in c.client.files(job_id)]
    assert files == ["done.txt", "main.py"]
    assert c.client.log(job_id)["stdout"] == "finished\n"
    job_dir = Path(c.settings.data_dir) / "jobs" / job_id
    assert sorted(p.name for p in job_dir.iterdir()) == ["input", "result"]  # one result


def test_sigterm_hands_running_jobs_back(cluster):
    c = cluster()
    w1 = c.start_worker("w1")
    job_id = c.submit(SLOW_JOB, args=["2"])
    c.wait_for(job_id, lambda j: j["state"] == "running")
    w1.send_signal(signal.SIGTERM)
    assert w1.wait(30) == 0
    back = c.wait_for(job_id, lambda j: j["state"] == "queued")
    assert back["attempts"] == 0
    c.start_worker("w2")
    done = c.client.wait(job_id, timeout=60, interval=0.2)
    assert done["state"] == "succeeded" and done["worker"] == "w2"


def serve_until_it_stops(worker: Worker) -> None:
    thread = threading.Thread(target=worker.serve)
    thread.start()
    thread.join(60)
    assert not thread.is_alive()


class StoppedAsItClaims(Attempts):
    """SIGTERM lands just as a claim returns a job: the shutdown's hand-back is given up
    to 2 s to run before the job is started."""

    def __init__(self, worker: Worker):
        super().__init__(worker.settings, worker.api, worker.runner, worker.stopping)
        self.stop_worker = worker.stop
        self.handed_back = threading.Event()

    def start(self, job):
        self.stop_worker()
        self.handed_back.wait(2)
        return super().start(job)

    def hand_back_all(self, why, budget):
        super().hand_back_all(why, budget)
        self.handed_back.set()


def test_a_job_claimed_as_the_worker_stops_is_handed_back(cluster):
    c = cluster()
    settings = WorkerSettings(controller_url=c.url, token=c.tokens["w1"], name="w1",
                              work_dir=str(c.root / "work-stopping"), claim_wait_seconds=1)
    worker = Worker(settings, runner=LocalRunner(Path(settings.work_dir)))
    worker.attempts = StoppedAsItClaims(worker)
    job_id = c.submit(SLOW_JOB, args=["30"])
    serve_until_it_stops(worker)
    job = c.client.get(job_id)
    assert (job["state"], job["attempts"]) == ("queued", 0), job


class SlotsRefuseOnceStopping(LocalRunner):
    """As the slot units bound to a stopping worker's unit refuse to start: the worker
    is told to stop as its job starts, and the start fails."""

    stop_worker = staticmethod(lambda: None)

    def workspace(self, name):
        workspace = super().workspace(name)

        def refuse(request):
            self.stop_worker()
            raise SystemdError("StartUnit jobqueue-job@1.service: Transaction is destructive")

        workspace.start = refuse
        return workspace


class HandsBackLate(Attempts):
    """The shutdown's hand-back comes after the attempt has ended on its own."""

    def hand_back_all(self, why, budget):
        self.join()
        super().hand_back_all(why, budget)


def test_a_job_whose_start_the_workers_own_stop_refused_goes_back_uncounted(cluster):
    c = cluster()
    settings = WorkerSettings(controller_url=c.url, token=c.tokens["w1"], name="w1",
                              work_dir=str(c.root / "work-refused"), claim_wait_seconds=1)
    runner = SlotsRefuseOnceStopping(Path(settings.work_dir))
    worker = Worker(settings, runner=runner)
    runner.stop_worker = worker.stop
    worker.attempts = HandsBackLate(settings, worker.api, runner, worker.stopping)
    job_id = c.submit(SLOW_JOB, args=["1"])
    serve_until_it_stops(worker)
    job = c.client.get(job_id)
    assert (job["state"], job["attempts"]) == ("queued", 0), job


def test_cancel_and_walltime_stop_running_jobs(cluster):
    c = cluster()
    c.start_worker("w1", cpus=2)
    cancelled = c.submit(SLOW_JOB, args=["60"])
    timed = c.submit(SLOW_JOB, args=["60"], walltime=1)
    c.wait_for(cancelled, lambda j: j["state"] == "running")
    c.client.cancel(cancelled)
    assert c.client.wait(cancelled, timeout=30, interval=0.2)["state"] == "cancelled"
    job = c.client.wait(timed, timeout=30, interval=0.2)
    assert job["state"] == "timed_out" and "wall time" in job["message"]
    assert job["limit"] == "walltime"


def test_the_job_record_says_which_limit_ended_it(cluster):
    c = cluster()
    c.start_worker("w1", cpus=2)
    too_big = c.submit("open('big', 'wb').write(b'x' * (3 << 20))\n", output_limit=1)
    fine = c.submit("print('ok')\n")
    job = c.client.wait(too_big, timeout=30, interval=0.2)
    assert (job["state"], job["limit"]) == ("failed", "output"), job
    assert "output limit" in job["message"] or "exceeds" in job["message"]
    assert c.client.wait(fine, timeout=30, interval=0.2)["limit"] is None


def test_failing_job_reports_its_exit_code_and_stderr(cluster):
    c = cluster()
    c.start_worker("w1")
    job_id = c.submit("import sys\nprint('bad input', file=sys.stderr)\nsys.exit(3)\n")
    job = c.client.wait(job_id, timeout=60, interval=0.2)
    assert (job["state"], job["exit_code"]) == ("failed", 3)
    assert c.client.log(job_id)["stderr"] == "bad input\n"


class BrokenRunner(LocalRunner):
    """Fails every start, and is slow to clean up an attempt: long enough for a job
    handed back too early to come back to the same worker before the clean-up ends."""

    def __init__(self, work_dir: Path):
        super().__init__(work_dir)
        self.events: list[str] = []

    def workspace(self, name: str):
        workspace = super().workspace(name)
        close = workspace.close

        def slow_close():
            time.sleep(0.5)
            close()
            self.events.append("closed")

        workspace.close = slow_close
        return workspace

    def start(self, request):
        self.events.append("started")
        raise RuntimeError("the runner is broken")


def test_a_worker_error_uses_up_the_attempt_and_ends_the_job_failed(cluster):
    """The same error on every attempt ends the job with its reason, not a loop; each
    attempt is cleaned up before the job is handed back (it may come back here)."""
    c = cluster()
    settings = WorkerSettings(controller_url=c.url, token=c.tokens["w1"], name="w1",
                              work_dir=str(c.root / "work-broken"), claim_wait_seconds=1)
    runner = BrokenRunner(Path(settings.work_dir))
    worker = Worker(settings, runner=runner)
    thread = threading.Thread(target=worker.serve)
    thread.start()
    try:
        job_id = c.submit(SLOW_JOB, args=["0"])
        job = c.client.wait(job_id, timeout=60, interval=0.2)
    finally:
        worker.stop()
        thread.join(30)
    assert (job["state"], job["attempts"]) == ("failed", 3)
    assert "RuntimeError: the runner is broken" in job["message"]
    assert runner.events == ["started", "closed"] * 3


class SlowPackingRunner(LocalRunner):
    """Takes `seconds` to collect each attempt's results, as a slot packing a job's
    many files does."""

    def __init__(self, work_dir: Path, seconds: float):
        super().__init__(work_dir)
        self.seconds = seconds

    def workspace(self, name: str):
        workspace = super().workspace(name)
        collect = workspace.collect

        def slow_collect(request, results):
            time.sleep(self.seconds)
            return collect(request, results)

        workspace.collect = slow_collect
        return workspace


def test_a_stopped_job_keeps_its_lease_while_its_results_are_packed(cluster):
    """Stopped at its wall time, a job whose results take longer than its lease to pack
    runs once: its worker renews the lease until the outcome is reported."""
    c = cluster(lease_seconds=4)
    settings = WorkerSettings(controller_url=c.url, token=c.tokens["w1"], name="w1",
                              work_dir=str(c.root / "work-slow"), claim_wait_seconds=1,
                              heartbeat_seconds=0.5)
    worker = Worker(settings, runner=SlowPackingRunner(Path(settings.work_dir), 10))
    thread = threading.Thread(target=worker.serve)
    thread.start()
    try:
        job = c.client.wait(c.submit(SLOW_JOB, args=["60"], walltime=1), timeout=60,
                            interval=0.2)
    finally:
        worker.stop()
        thread.join(30)
    assert (job["state"], job["attempts"]) == ("timed_out", 1), job


def test_results_the_controller_refuses_end_the_job_failed_with_the_reason(cluster):
    c = cluster()
    c.start_worker("w1")
    job_id = c.submit("open('a:b.txt', 'w').write('x')\n")
    job = c.client.wait(job_id, timeout=60, interval=0.2)
    assert (job["state"], job["attempts"]) == ("failed", 1)
    assert job["message"].startswith("results refused by the controller")


def test_sigterm_stops_the_controller_promptly_answering_waiting_claims(cluster):
    c = cluster(claim_wait_seconds=30)
    answers = []

    def long_poll():
        started = time.monotonic()
        response = requests.post(f"{c.url}/api/v1/worker/claim",
                                 json={"worker": "w1", "cpus": 1, "wait": 30},
                                 headers={"Authorization": f"Bearer {c.tokens['w1']}"})
        answers.append((response.status_code, time.monotonic() - started))

    poll = threading.Thread(target=long_poll)
    poll.start()
    time.sleep(1.0)  # the claim is waiting
    stopped = time.monotonic()
    c.controller.send_signal(signal.SIGTERM)
    assert c.controller.wait(10) == 0
    assert time.monotonic() - stopped < 5
    poll.join(5)
    assert answers and answers[0][0] == 204 and answers[0][1] < 5, answers


DEV = [sys.executable, "-c", "import sys; from jobqueue.client.cli import main; "
       "sys.exit(main(sys.argv[1:]))", "dev"]


def test_jobqueue_dev_stops_its_processes_on_sigterm(tmp_path):
    data, work = tmp_path / "data", tmp_path / "work"
    dev = subprocess.Popen(DEV + ["--data-dir", str(data), "--work-dir", str(work),
                                  "--port", "0", "--cpus", "1"], stdout=subprocess.PIPE, text=True)
    try:
        assert "jobqueue dev: controller" in dev.stdout.readline()
        # Whatever holds a token is its owner's alone; jobs run outside the data.
        for name in ("client.toml", "dev.token", "dev-worker.token"):
            assert (data / name).stat().st_mode & 0o777 == 0o600, name
        assert data.stat().st_mode & 0o777 == 0o700
        second = subprocess.run(DEV + ["--data-dir", str(data), "--work-dir", str(work),
                                       "--port", "0"], capture_output=True, text=True,
                                timeout=60)
        assert second.returncode == 2 and "another jobqueue dev runs on" in second.stderr
        deadline = time.monotonic() + 30
        while not (work / "claim-id").exists():
            assert time.monotonic() < deadline, "the worker never used its work directory"
            time.sleep(0.2)
        assert not list(data.glob("work-*"))
        children = subprocess.run(["pgrep", "-P", str(dev.pid)], capture_output=True,
                                  text=True).stdout.split()
        assert len(children) == 2  # the controller and the worker
        dev.send_signal(signal.SIGTERM)
        assert dev.wait(30) == 0
    finally:
        if dev.poll() is None:
            dev.kill()
    for pid in children:
        status = Path(f"/proc/{pid}/status")
        assert not status.exists() or "\nState:\tZ" in status.read_text(), pid


def test_jobqueue_dev_on_a_busy_port_says_so(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(DEV + ["--data-dir", str(tmp_path / "d"), "--port", str(port)],
                                capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert f"port {port} is in use" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "d").exists()


def test_jobqueue_dev_refuses_a_work_dir_inside_its_data(tmp_path):
    result = subprocess.run(DEV + ["--data-dir", str(tmp_path), "--work-dir",
                                   str(tmp_path / "work"), "--port", "0"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "must not hold one another" in result.stderr
