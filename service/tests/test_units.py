"""Unit tests: settings, job states, archive safety, worker settings and runner, admin CLI."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import tar_bytes
from jobqueue.archive import UnsafeArchive, check_relative_path, pack_dir, safe_extract
from jobqueue.client.api import Client
from jobqueue.config import ConfigError
from jobqueue.controller import admin
from jobqueue.controller import settings as controller_settings
from jobqueue.states import FINISHED, TRANSITIONS, IllegalTransition, JobState, check_transition
from jobqueue.worker.attempt import fence, heartbeat_every
from jobqueue.worker.controller_api import ControllerApi
from jobqueue.worker.runner import Limits, LocalRunner, RunRequest
from jobqueue.worker.settings import ServiceWindow, WorkerSettings


# -- settings -----------------------------------------------------------------------------

def test_file_then_environment_then_defaults(tmp_path):
    path = tmp_path / "controller.toml"
    path.write_text('lease_seconds = 90\nmax_attempts = 5\ndata_dir = "/srv/jq"\n')
    settings = controller_settings.load(str(path))
    assert (settings.lease_seconds, settings.max_attempts) == (90, 5)
    assert settings.database_url == "sqlite:////srv/jq/jobqueue.db"
    os.environ["JOBQUEUE_LEASE_SECONDS"] = "30"
    os.environ["JOBQUEUE_ALLOW_ANONYMOUS"] = "yes"
    try:
        settings = controller_settings.load(str(path))
    finally:
        del os.environ["JOBQUEUE_LEASE_SECONDS"], os.environ["JOBQUEUE_ALLOW_ANONYMOUS"]
    assert settings.lease_seconds == 30 and settings.allow_anonymous is True
    assert settings.claim_wait_seconds == 30


@pytest.mark.parametrize("content, message", [
    ("colour = 1\n", "unknown setting(s): colour"),
    ('lease_seconds = "soon"\n', "'lease_seconds'"),
    ("lease_seconds = 0\n", "'lease_seconds' must be positive"),
    ('allow_anonymous = "maybe"\n', "'allow_anonymous'"),
    ("lease_seconds = \n", "not valid TOML"),
])
def test_bad_settings_name_the_key(tmp_path, content, message):
    path = tmp_path / "controller.toml"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        controller_settings.load(str(path))


# -- states -------------------------------------------------------------------------------

@pytest.mark.parametrize("current", list(JobState))
@pytest.mark.parametrize("target", list(JobState))
def test_only_listed_transitions_are_legal(current, target):
    if target in TRANSITIONS[current]:
        assert check_transition(current, target) is target
    else:
        with pytest.raises(IllegalTransition):
            check_transition(current, target)


def test_finished_states_are_final():
    assert all(not TRANSITIONS[state] for state in FINISHED)
    assert TRANSITIONS[JobState.QUEUED] == {JobState.RUNNING, JobState.CANCELLED,
                                            JobState.FAILED}


# -- archives -----------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["/etc/passwd", "../x", "a/../../x", "", "a\\b", "a\0b", "."])
def test_unsafe_relative_paths(name):
    with pytest.raises(UnsafeArchive):
        check_relative_path(name)


def test_relative_paths_are_normalised():
    assert str(check_relative_path("./a//b/./c.txt")) == "a/b/c.txt"


def test_safe_extract_limits_count_and_size(tmp_path):
    archive = tar_bytes({f"f{i}": b"x" * 10 for i in range(5)})
    with pytest.raises(UnsafeArchive, match="more than 3"):
        safe_extract(io.BytesIO(archive), tmp_path / "a", 10_000, 3)
    with pytest.raises(UnsafeArchive, match="exceeds 30 bytes"):
        safe_extract(io.BytesIO(archive), tmp_path / "b", 30, 100)
    assert len(safe_extract(io.BytesIO(archive), tmp_path / "c", 50, 5)) == 5


def test_pack_dir_keeps_links_as_links(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("a")
    (src / "secret").symlink_to("/etc/hostname")
    buf = io.BytesIO()
    assert pack_dir(src, buf) == 1
    buf.seek(0)
    with pytest.raises(UnsafeArchive):  # and such a link is refused when unpacked
        safe_extract(buf, tmp_path / "dest", 1000, 10)


# -- worker settings ----------------------------------------------------------------------

def test_worker_needs_a_token():
    with pytest.raises(ConfigError, match="'token'"):
        WorkerSettings()
    assert WorkerSettings(token="t").name  # host name by default


def test_worker_cpus_like_dispynode():
    available = len(os.sched_getaffinity(0))
    assert WorkerSettings(token="t", cpus=0).total_cpus == available
    assert WorkerSettings(token="t", cpus=1).total_cpus == 1
    assert WorkerSettings(token="t", cpus=-available).total_cpus == 1
    assert WorkerSettings(token="t", cpus=10_000).total_cpus == available


def test_at_the_default_settings_a_running_job_outlives_a_controller_reload():
    """An upgrade's Apache reload keeps the controller away while its WSGI processes load
    the app: 28 s on an idle 1-vCPU VM, about 65 s under a rolling upgrade's load. A
    worker that cannot renew a lease for that long must not stop the job (which would
    run a second time), at any moment of its heartbeat cycle."""
    worker = WorkerSettings(token="t")
    lease = controller_settings.ControllerSettings().lease_seconds
    stop_after, grace = fence(lease, worker.kill_grace_seconds)
    # The worst moment: the lease was renewed just before the controller went away.
    worst_case = stop_after - heartbeat_every(worker.heartbeat_seconds, lease)
    assert worst_case >= 120
    assert stop_after + grace < lease  # and the job is gone before the lease runs out


def test_worker_bad_settings():
    with pytest.raises(ConfigError, match="on_shutdown"):
        WorkerSettings(token="t", on_shutdown="panic")
    with pytest.raises(ConfigError, match="service_stop"):
        WorkerSettings(token="t", service_stop="25:99")


T = dt.time


@pytest.mark.parametrize("window, now, accepting, must_end", [
    (ServiceWindow(None, None, None), T(3), True, False),
    (ServiceWindow(T(18), T(7), T(8)), T(22), True, False),
    (ServiceWindow(T(18), T(7), T(8)), T(7, 30), False, False),
    (ServiceWindow(T(18), T(7), T(8)), T(12), False, True),
    (ServiceWindow(T(9), T(17), None), T(12), True, False),
    (ServiceWindow(T(9), T(17), None), T(18), False, False),
])
def test_service_window(window, now, accepting, must_end):
    assert window.accepting(now) is accepting
    assert window.must_end(now) is must_end


# -- runner -------------------------------------------------------------------------------

def run(tmp_path, code: str, limits: Limits | None = None, wait: float = 30):
    (tmp_path / "job.py").write_text(code)
    request = RunRequest("j", tmp_path, [sys.executable, "job.py"],
                         limits or Limits(walltime=30, cpu_seconds=30, memory_bytes=1 << 30),
                         tmp_path / "stdout", tmp_path / "stderr", {"PATH": "/usr/bin:/bin"})
    process = LocalRunner().start(request)
    return process, process.wait(wait)


def test_runner_runs_in_the_job_directory(tmp_path):
    _, code = run(tmp_path, "import os; print(os.getcwd())")
    assert code == 0 and (tmp_path / "stdout").read_text().strip() == str(tmp_path)


def test_runner_limits_file_size(tmp_path):
    limits = Limits(walltime=30, cpu_seconds=30, memory_bytes=1 << 30, max_file_size=1000)
    _, code = run(tmp_path, "with open('big', 'wb') as f:\n    f.write(b'x' * 5000)\n", limits)
    assert code != 0 and (tmp_path / "big").stat().st_size <= 1000


def test_runner_limits_memory(tmp_path):
    limits = Limits(walltime=30, cpu_seconds=30, memory_bytes=200 << 20)
    _, code = run(tmp_path, "x = bytearray(400 << 20)", limits)
    assert code != 0 and "MemoryError" in (tmp_path / "stderr").read_text()


def test_kill_stops_the_whole_process_group(tmp_path):
    code = ("import subprocess, sys, time\n"
            "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
            "open('child.pid', 'w').write(str(child.pid))\n"
            "time.sleep(60)\n")
    process, status = run(tmp_path, code, wait=0.1)
    assert status is None
    deadline = time.monotonic() + 10
    while not (tmp_path / "child.pid").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    child = int((tmp_path / "child.pid").read_text())
    process.kill(grace=1)
    assert process.wait(5) is not None
    time.sleep(0.2)
    status = Path(f"/proc/{child}/status")
    # Gone, or a zombie waiting for an init that may not reap (as here, without systemd).
    assert not status.exists() or "\nState:\tZ" in status.read_text()


def _gone(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    # Gone, or a zombie waiting for an init that may not reap (as here, without systemd).
    return not status.exists() or "\nState:\tZ" in status.read_text()


TETHERED_WORKER = """
import sys, time
from pathlib import Path
from jobqueue.worker.runner import Limits, LocalRunner, RunRequest
job_dir = Path(sys.argv[1])
request = RunRequest("j", job_dir, [sys.executable, "job.py"], Limits(30, 30, 1 << 30),
                     job_dir / "stdout", job_dir / "stderr", {"PATH": "/usr/bin:/bin"})
print(LocalRunner().start(request).popen.pid, flush=True)
time.sleep(60)
"""


def test_a_job_dies_with_its_worker(tmp_path):
    """Even SIGKILL of the worker ends its job and the job's children at once, so the job
    never runs on unreported while its lease expires and it starts again elsewhere."""
    (tmp_path / "job.py").write_text(
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "open('child.pid', 'w').write(str(child.pid))\n"
        "time.sleep(60)\n")
    worker = subprocess.Popen([sys.executable, "-c", TETHERED_WORKER, str(tmp_path)],
                              stdout=subprocess.PIPE, text=True)
    job = int(worker.stdout.readline())
    deadline = time.monotonic() + 10
    while not (tmp_path / "child.pid").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    child = int((tmp_path / "child.pid").read_text())
    assert not _gone(job) and not _gone(child)
    worker.kill()
    worker.wait()
    deadline = time.monotonic() + 5
    while not (_gone(job) and _gone(child)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(job) and _gone(child)


def test_the_tether_is_not_the_jobs_child_nor_open_to_it(tmp_path):
    """A job that waits for all of its children ends (the watcher is not one of them),
    and it holds no end of the tether's pipe: its input is /dev/null, fd 9 is closed."""
    code = ("import os\n"
            "while True:\n"
            "    try:\n        os.wait()\n"
            "    except ChildProcessError:\n        break\n"
            "print(os.readlink('/proc/self/fd/0'), os.path.exists('/proc/self/fd/9'))\n")
    process, status = run(tmp_path, code, wait=10)
    assert status == 0, (tmp_path / "stderr").read_text()
    assert (tmp_path / "stdout").read_text().split() == ["/dev/null", "False"]
    assert process.usage().cpu_seconds > 0


def test_the_tether_reports_how_the_job_ended(tmp_path):
    assert run(tmp_path, "import sys; sys.exit(7)")[1] == 7
    assert run(tmp_path, "import os, signal; os.kill(os.getpid(), signal.SIGTERM)")[1] == \
        -signal.SIGTERM
    # SIGKILL too (the memory limit's): its handler cannot be reset on the way.
    assert run(tmp_path, "import os, signal; os.kill(os.getpid(), signal.SIGKILL)")[1] == \
        -signal.SIGKILL
    process, status = run(tmp_path, "import signal, sys, time\n"
                          "signal.signal(signal.SIGTERM, lambda *a: sys.exit(3))\n"
                          "open('ready', 'w').close()\ntime.sleep(60)\n", wait=0.1)
    deadline = time.monotonic() + 10
    while not (tmp_path / "ready").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    process.kill(grace=5)  # the job handles SIGTERM itself: its own exit status comes back
    assert process.wait(1) == 3


# -- retries ------------------------------------------------------------------------------

def test_backoff_grows_to_its_cap_and_stops_at_its_budget():
    from jobqueue.backoff import Backoff

    backoff = Backoff(first=1.0, cap=4.0)
    delays = [backoff.delay() for _ in range(5)]
    assert 0.75 <= delays[0] <= 1.25 and all(3.0 <= d <= 5.0 for d in delays[2:])
    assert backoff.delay(hint=2.0) == 2.0 and backoff.delay(hint=60) == 4.0
    backoff.reset()
    assert backoff.delay() <= 1.25
    spent = Backoff(budget=0)
    assert spent.expired and spent.delay() == 0.0


class _Answering:
    """A stand-in for ControllerApi whose other calls get an answer when told to."""

    last_answer = 0.0


def test_a_claim_backing_off_goes_at_once_when_the_controller_answers_again(tmp_path):
    from jobqueue.worker.daemon import Worker

    api = _Answering()
    worker = Worker(WorkerSettings(token="t", work_dir=str(tmp_path)), api=api)
    threading.Timer(0.3, lambda: setattr(api, "last_answer", time.monotonic())).start()
    started = time.monotonic()
    worker._wait_for_controller(10.0, outage=True)  # a heartbeat got through meanwhile
    assert time.monotonic() - started < 2
    started = time.monotonic()
    worker._wait_for_controller(0.3, outage=True)  # nothing got through: the full wait
    assert time.monotonic() - started >= 0.3


# -- admin CLI ----------------------------------------------------------------------------

def test_admin_cli_users_and_tokens(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("JOBQUEUE_DATA_DIR", str(tmp_path))
    args = ["--config", str(tmp_path / "missing.toml")]
    assert admin.main(args + ["migrate"]) == 0
    assert json.loads(capsys.readouterr().out)["changed"] is True
    assert admin.main(args + ["migrate"]) == 0
    assert json.loads(capsys.readouterr().out)["changed"] is False
    assert admin.main(args + ["create-user", "ann", "--role", "admin"]) == 0
    assert json.loads(capsys.readouterr().out)["created"] is True
    assert admin.main(args + ["create-user", "ann", "--role", "admin"]) == 0
    assert json.loads(capsys.readouterr().out)["created"] is False
    assert admin.main(args + ["create-user", "ann", "--role", "worker"]) == 2
    assert "exists with role 'admin'" in capsys.readouterr().err
    assert admin.main(args + ["issue-token", "ann"]) == 0
    token = capsys.readouterr().out.strip()
    assert token.startswith("jq_") and len(token) > 40
    monkeypatch.setattr("sys.stdin", io.StringIO(token + "\n"))
    assert admin.main(args + ["check-token", "ann"]) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO("jq_other\n"))
    assert admin.main(args + ["check-token", "ann"]) == 1
    assert admin.main(args + ["issue-token", "nobody"]) == 2
    assert "no user named 'nobody'" in capsys.readouterr().err


def test_admin_cli_creates_several_users_at_once(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("JOBQUEUE_DATA_DIR", str(tmp_path))
    args = ["--config", str(tmp_path / "missing.toml")]
    assert admin.main(args + ["migrate"]) == 0
    assert admin.main(args + ["create-user", "ann", "--role", "admin"]) == 0
    capsys.readouterr()
    assert admin.main(args + ["create-users", "ann:admin", "bo:user"]) == 0
    assert json.loads(capsys.readouterr().out) == {"users": ["ann", "bo"], "created": ["bo"]}
    assert admin.main(args + ["create-users", "ann:admin", "bo:user"]) == 0
    assert json.loads(capsys.readouterr().out)["created"] == []
    # A clash rolls the whole run back: cy is not created either.
    assert admin.main(args + ["create-users", "cy:user", "bo:admin"]) == 2
    assert "exists with role 'user'" in capsys.readouterr().err
    assert admin.main(args + ["list-users"]) == 0
    assert "cy" not in {row["user"] for row in json.loads(capsys.readouterr().out)}
    with pytest.raises(SystemExit):
        admin.main(args + ["create-users", "dee:root"])
    assert "unknown role 'root'" in capsys.readouterr().err


def test_admin_cli_issues_a_token_creating_the_user_in_one_run(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("JOBQUEUE_DATA_DIR", str(tmp_path))
    args = ["--config", str(tmp_path / "missing.toml")]
    assert admin.main(args + ["migrate"]) == 0
    capsys.readouterr()
    assert admin.main(args + ["issue-token", "w9", "--create", "worker"]) == 0
    assert capsys.readouterr().out.strip().startswith("jq_")
    assert admin.main(args + ["issue-token", "w9", "--create", "worker"]) == 0  # exists: kept
    assert capsys.readouterr().out.strip().startswith("jq_")
    assert admin.main(args + ["issue-token", "w9", "--create", "admin"]) == 2
    assert "exists with role 'worker'" in capsys.readouterr().err
    assert admin.main(args + ["list-users"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"user": "w9", "role": "worker", "tokens": 2}]
    # A fleet in one run: a token a line, in the names' order; a clash makes none.
    assert admin.main(args + ["issue-token", "w9", "w10", "--create", "worker"]) == 0
    tokens = capsys.readouterr().out.split()
    assert len(set(tokens)) == 2 and all(t.startswith("jq_") for t in tokens)
    monkeypatch.setattr("sys.stdin", io.StringIO(tokens[1] + "\n"))
    assert admin.main(args + ["check-token", "w10"]) == 0
    capsys.readouterr()
    assert admin.main(args + ["issue-token", "w11", "w9", "--create", "user"]) == 2
    assert admin.main(args + ["list-users"]) == 0
    assert "w11" not in {row["user"] for row in json.loads(capsys.readouterr().out)}


def test_admin_cli_without_settings_says_so_and_creates_nothing(tmp_path, capsys, monkeypatch):
    for key in ("JOBQUEUE_DATABASE_URL", "JOBQUEUE_DATA_DIR"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.chdir(tmp_path)
    assert admin.main(["--config", str(tmp_path / "none.toml"), "list-users"]) == 2
    err = capsys.readouterr().err
    assert "no settings" in err and "none.toml" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_admin_cli_before_migrate_says_to_migrate(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("JOBQUEUE_DATA_DIR", str(tmp_path / "data"))
    args = ["--config", str(tmp_path / "none.toml")]
    assert admin.main(args + ["create-user", "ann"]) == 2
    assert "run `jobqueue-admin migrate` first" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()  # no empty database left behind
    monkeypatch.setenv("JOBQUEUE_DATABASE_URL", f"sqlite:///{tmp_path}/empty.db")
    sqlite3.connect(tmp_path / "empty.db").close()  # a database with no schema
    assert admin.main(args + ["list-users"]) == 2
    assert "no schema yet" in capsys.readouterr().err


def test_admin_cli_reports_bad_database(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("JOBQUEUE_DATABASE_URL", "postgresql+psycopg://x:y@127.0.0.1:1/none")
    assert admin.main(["--config", str(tmp_path / "none.toml"), "migrate"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("jobqueue-admin: error:") and "Traceback" not in err
    assert Path(tmp_path).exists()


@pytest.mark.parametrize("variable", ["REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"])
def test_configured_ca_wins_over_the_environment(monkeypatch, variable):
    monkeypatch.setenv(variable, "/etc/ssl/certs/ca-certificates.crt")
    url = "https://controller.example/api/v1/jobs"

    def verify(http, per_request=None):
        return http.merge_environment_settings(url, {}, None, per_request, None)["verify"]

    for http in (Client(url, "token", ca_bundle="/deploy/ca.crt").session,
                 ControllerApi(url, "token", ca_bundle="/deploy/ca.crt").http):
        assert verify(http) == "/deploy/ca.crt"
        # An explicit per-request choice still wins.
        assert verify(http, per_request=False) is False
    # Without a configured CA the environment's applies, as requests does it.
    assert verify(Client(url, "token").session) == "/etc/ssl/certs/ca-certificates.crt"
