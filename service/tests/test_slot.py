"""The program inside a job slot (`jobqueue.worker.slot`), run here as an unprivileged
uid of its own (setpriv), the way the slot's unit runs it; systemd, AppArmor and the
polkit rule around it are tested on the VMs (tests/worker)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import pytest

from jobqueue.worker import slot as slot_files
from jobqueue.worker.systemd_runner import job_exit_code, read_outbox_log

SLOT_UID = 64_321  # no account needed; nothing else on the machine runs as it
# The system's interpreter: a virtualenv may link into a home the slot cannot enter.
PYTHON = "/usr/bin/python3"
SOURCE = str(Path(slot_files.__file__).parents[2])  # the jobqueue package's parent

pytestmark = pytest.mark.skipif(os.getuid() != 0 or not shutil.which("setpriv")
                                or not os.access(PYTHON, os.X_OK),
                                reason="needs root and setpriv to act as a slot's user")


@pytest.fixture
def slot():
    """A slot laid out as the worker role makes it: the worker (root here) owns the
    directories, the slot's user writes into work/ and outbox/."""
    root = Path(tempfile.mkdtemp(prefix="slot-", dir="/tmp"))
    root.chmod(0o755)
    for part in ("work", "outbox"):
        (root / part).mkdir()
        os.chown(root / part, 0, SLOT_UID)
        (root / part).chmod(0o2770)
    (root / "work" / "input.txt").write_text("the worker's input\n")
    (root / "work" / "input.txt").chmod(0o644)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def as_slot_user(slot: Path, step: str, timeout: float = 60,
                 max_file_bytes: int | None = None) -> subprocess.CompletedProcess:
    limit = [] if max_file_bytes is None else ["prlimit", f"--fsize={max_file_bytes}"]
    return subprocess.run(
        [*limit, "setpriv", f"--reuid={SLOT_UID}", f"--regid={SLOT_UID}", "--clear-groups",
         PYTHON, "-m", "jobqueue.worker.slot", step, str(slot)],
        capture_output=True, text=True, timeout=timeout, check=False,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": SOURCE})


def request(slot: Path, code: str, output_limit: int = 1 << 20, kill_grace: float = 5,
            **more) -> None:
    (slot / "work" / "job.py").write_text(code)
    (slot / "work" / "job.py").chmod(0o644)
    (slot / slot_files.REQUEST).write_text(json.dumps({
        "argv": [PYTHON, "job.py"], "env": {"PATH": "/usr/bin:/bin"},
        "rlimits": {"cpu_seconds": 60}, "output_limit": output_limit,
        "kill_grace": kill_grace} | more))


def start_run(slot: Path) -> subprocess.Popen:
    """`run` in the background, as the slot's unit starts it."""
    return subprocess.Popen(
        ["setpriv", f"--reuid={SLOT_UID}", f"--regid={SLOT_UID}", "--clear-groups",
         PYTHON, "-m", "jobqueue.worker.slot", "run", str(slot)],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": SOURCE})


def start_armed(slot: Path) -> subprocess.Popen:
    """`armed` in the background, as the slot's unit starts it ahead of its job."""
    return subprocess.Popen(
        ["setpriv", f"--reuid={SLOT_UID}", f"--regid={SLOT_UID}", "--clear-groups",
         PYTHON, "-m", "jobqueue.worker.slot", "armed", str(slot)],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": SOURCE})


def wait_for_file(path: Path, run: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while not path.exists():
        assert time.monotonic() < deadline and run.poll() is None
        time.sleep(0.05)


def status(slot: Path) -> dict:
    return json.loads((slot / "outbox" / slot_files.STATUS).read_text())


def result_names(slot: Path) -> list[str]:
    with tarfile.open(slot / "outbox" / slot_files.RESULTS) as tar:
        return tar.getnames()


def assert_packed_own_files(slot: Path) -> None:
    # Not the worker's input, not the links; a file the job locked is still its result.
    assert sorted(result_names(slot)) == ["locked.txt", "sub/deeper/x.txt"]
    assert status(slot)["exit_code"] == 0
    assert status(slot)["packed"] is True
    assert status(slot)["results_bytes"] == len("mine") + len("x")
    # Its cgroup's peak memory where there is a cgroup v2 of its own (a slot unit's).
    peak = status(slot)["memory_peak"]
    assert peak is None or (isinstance(peak, int) and peak > 0)


def test_run_packs_only_the_jobs_own_regular_files_and_finish_packs_the_same(slot):
    request(slot, "import os\n"
                  "open('out.txt', 'w').write('result')\n"
                  "os.makedirs('sub/deeper')\n"
                  "open('sub/deeper/x.txt', 'w').write('x')\n"
                  "os.symlink('/etc/shadow', 'shadow-link')\n"
                  "os.link('out.txt', 'hard-link')\n"
                  "open('locked.txt', 'w').write('mine')\n"
                  "os.chmod('locked.txt', 0)\n"
                  "print('hello')\n")
    assert as_slot_user(slot, "run").returncode == 0
    assert_packed_own_files(slot)
    # The unit's root step runs `finish` after a killed `run`: it packs the same.
    assert as_slot_user(slot, "finish").returncode == 0
    assert_packed_own_files(slot)
    assert (slot / "outbox" / "stdout").read_text() == "hello\n"
    # `finish` removes the job's files: only the worker's own are left, for the worker.
    assert sorted(p.name for p in (slot / "work").iterdir()) == ["input.txt", "job.py"]


def test_run_that_cannot_pack_leaves_it_to_finish(slot):
    """Results that do not fit (on the VMs: the job's quota is full; here, a file size
    limit below the archive's): `run` reports the job's exit but marks nothing packed,
    so the unit's root step runs `finish`, once it has lifted the quota."""
    request(slot, "open('out.txt', 'w').write('result')\n")
    assert as_slot_user(slot, "run", max_file_bytes=100).returncode == 0
    assert status(slot) == {"exit_code": 0, "limit": None}
    assert as_slot_user(slot, "finish").returncode == 0
    assert result_names(slot) == ["out.txt"] and status(slot)["packed"] is True


def test_a_directory_the_job_left_at_status_json_is_moved_aside(slot):
    """A job that makes status.json a directory, and locks a part of it, still gets its
    own exit status reported and its results packed, by `run` and by `finish`, without
    a traceback (the unit's root step removes what was moved aside)."""
    request(slot, "import os\nos.makedirs('../outbox/status.json/locked/deeper')\n"
                  "os.chmod('../outbox/status.json/locked', 0)\n"
                  "open('out.txt', 'w').write('result')\nraise SystemExit(7)\n")
    for step, code in (("run", 7), ("finish", 0)):
        done = as_slot_user(slot, step)
        assert done.returncode == code and "Traceback" not in done.stderr, done.stderr
        assert status(slot)["exit_code"] == 7 and status(slot)["packed"] is True, step
        assert result_names(slot) == ["out.txt"], step


def test_a_daemonised_child_does_not_outlive_its_job(slot):
    request(slot, "import os, time\n"
                  "if os.fork() == 0:\n"
                  "    os.setsid()\n"
                  "    open('child.pid', 'w').write(str(os.getpid()))\n"
                  "    time.sleep(300)\n"
                  "time.sleep(1)\n")
    assert as_slot_user(slot, "run").returncode == 0
    child = int((slot / "work" / "child.pid").read_text())
    time.sleep(0.2)
    state = Path(f"/proc/{child}/status")
    assert not state.exists() or "\nState:\tZ" in state.read_text()


def test_output_over_the_limit_stops_the_job_while_it_runs(slot):
    request(slot, "import time\n"
                  "with open('fill', 'wb') as f:\n"
                  "    while True:\n"
                  "        f.write(b'x' * 65536)\n"
                  "        f.flush()\n"
                  "        time.sleep(0.001)\n",
            output_limit=2 << 20)
    started = time.monotonic()
    assert as_slot_user(slot, "run", timeout=60).returncode == 128 + 9
    assert time.monotonic() - started < 30
    assert status(slot)["limit"] == "output"
    assert status(slot)["exit_code"] == -9


def test_finish_keeps_nothing_a_job_planted_but_its_exit_code(slot):
    request(slot, "import json, os, signal\n"
                  "with open('../outbox/status.json', 'w') as f:\n"
                  "    json.dump({'exit_code': -9, 'limit': 'memory', 'results_bytes': 7,\n"
                  "               'memory_peak': 1}, f)\n"
                  "os.kill(os.getppid(), signal.SIGKILL)\n")
    as_slot_user(slot, "run")
    as_slot_user(slot, "finish")
    found = status(slot)
    assert (found["exit_code"], found["limit"], found["results_bytes"]) == (-9, None, 0), found
    assert found["memory_peak"] != 1


def test_run_and_finish_drop_results_over_the_limit(slot):
    request(slot, "open('big', 'wb').write(b'x' * 3000)\n", output_limit=2000)
    for step in ("run", "finish"):
        as_slot_user(slot, step)
        assert status(slot)["limit"] == "output", step
        assert not (slot / "outbox" / slot_files.RESULTS).exists()


def test_the_worker_reads_only_regular_files_of_the_slots_user(slot):
    outbox = slot / "outbox"
    (outbox / "link").symlink_to("/etc/hostname")
    os.mkfifo(outbox / "fifo")
    (outbox / "rootfile").write_text("not the slot's")
    for name in ("link", "fifo", "rootfile"):
        with pytest.raises(OSError):
            slot_files.open_regular(outbox / name, SLOT_UID)
    (outbox / "ok").write_text("fine")
    os.chown(outbox / "ok", SLOT_UID, SLOT_UID)
    with slot_files.open_regular(outbox / "ok", SLOT_UID) as fh:
        assert fh.read() == b"fine"


def test_run_refuses_root(slot):
    request(slot, "print('never')\n")
    result = subprocess.run([sys.executable, "-m", "jobqueue.worker.slot", "run", str(slot)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 2 and "root" in result.stderr


def test_the_worker_reads_a_running_jobs_log_from_the_slot_as_it_grows(slot):
    """What the worker streams while the job runs: the slot's outbox log, read only if it
    is a regular file of the slot's user (the job could put a link there meanwhile)."""
    request(slot, "import time\nprint('first', flush=True)\ntime.sleep(30)\n")
    run = start_run(slot)
    stdout = slot / "outbox" / "stdout"
    try:
        deadline = time.monotonic() + 30
        while read_outbox_log(stdout, SLOT_UID, 0, 100) != b"first\n":
            assert time.monotonic() < deadline and run.poll() is None
            time.sleep(0.1)
        assert read_outbox_log(stdout, SLOT_UID, 2, 100) == b"rst\n"
        assert read_outbox_log(stdout, SLOT_UID, 0, 3) == b"fir"
        assert read_outbox_log(slot / "outbox" / "stderr", SLOT_UID, 0, 100) == b""
        with pytest.raises(OSError):  # not the slot user's
            read_outbox_log(stdout, SLOT_UID + 1, 0, 100)
    finally:
        run.terminate()  # `run` passes it on to the job, then ends
        assert run.wait(30) == 128 + 15
    stdout.unlink()
    stdout.symlink_to("/etc/hostname")
    with pytest.raises(OSError):
        read_outbox_log(stdout, SLOT_UID, 0, 100)
    stdout.unlink()
    assert read_outbox_log(stdout, SLOT_UID, 0, 100) == b""  # not there (yet): nothing


def test_a_stopped_job_gets_sigterm_and_its_grace(slot):
    """Stopping a slot's unit sends SIGTERM: a job that handles it ends as it likes,
    within the grace; `run` then packs what it made and reports its exit."""
    request(slot, "import signal, sys, time\n"
                  "signal.signal(signal.SIGTERM, lambda *_: sys.exit(7))\n"
                  "open('ready', 'w').write('made')\n"
                  "time.sleep(60)\n", kill_grace=20)
    run = start_run(slot)
    wait_for_file(slot / "work" / "ready", run)
    run.terminate()
    assert run.wait(30) == 7
    assert status(slot)["exit_code"] == 7
    assert result_names(slot) == ["ready"] and status(slot)["packed"] is True


def test_a_job_that_ignores_sigterm_is_killed_after_the_grace(slot):
    """The grace is the slot's `run` to enforce, not the unit's stop timeout (which
    also bounds the packing of the results afterwards)."""
    request(slot, "import os, signal, time\n"
                  "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                  "if os.fork() == 0:\n"
                  "    os.setsid()\n"  # out of the job's process group too
                  "    open('child.pid', 'w').write(str(os.getpid()))\n"
                  "    time.sleep(300)\n"
                  "open('ready', 'w').close()\n"
                  "time.sleep(300)\n", kill_grace=2)
    run = start_run(slot)
    wait_for_file(slot / "work" / "ready", run)
    wait_for_file(slot / "work" / "child.pid", run)
    child = int((slot / "work" / "child.pid").read_text())
    stopped = time.monotonic()
    run.terminate()
    assert run.wait(30) == 128 + 9
    assert 1.5 <= time.monotonic() - stopped < 15
    assert status(slot)["exit_code"] == -9
    time.sleep(0.2)
    state = Path(f"/proc/{child}/status")
    assert not state.exists() or "\nState:\tZ" in state.read_text()


def test_finish_packs_and_clears_past_pythons_recursion_limit(slot):
    """A tree nested deeper than os.walk can recurse (~1000 levels): `finish` still packs
    and reports; what it cannot clear, the unit's root wipe removes."""
    request(slot, "import os\n"
                  "open('top.txt', 'w').write('top')\n"
                  "for _ in range(1200):\n"
                  "    os.mkdir('n')\n"
                  "    os.chdir('n')\n"
                  "open('deep.txt', 'w').write('deep')\n")
    try:
        assert as_slot_user(slot, "run").returncode == 0
        finished = as_slot_user(slot, "finish")
        assert finished.returncode == 0, finished.stderr
        assert sorted(result_names(slot)) == ["/".join(["n"] * 1200 + ["deep.txt"]),
                                              "top.txt"]
        assert status(slot)["results_bytes"] == len("top") + len("deep")
    finally:  # shutil.rmtree recurses too
        subprocess.run(["rm", "-rf", str(slot / "work" / "n")], check=False)


def test_a_job_that_kills_run_and_plants_success_is_a_failure(slot):
    """The job can write status.json and kill `run` (same uid), but the worker takes
    the exit code from how `run` ended, which systemd records: killed."""
    request(slot, "import json, os, signal\n"
                  "with open('../outbox/status.json', 'w') as f:\n"
                  "    json.dump({'exit_code': 0, 'limit': None}, f)\n"
                  "os.kill(os.getppid(), signal.SIGKILL)\n")
    run = as_slot_user(slot, "run")
    assert run.returncode == -9
    assert status(slot)["exit_code"] == 0  # what the job planted
    killed = {"ExecMainCode": "2", "ExecMainStatus": "9"}  # systemd's record of it
    assert job_exit_code(killed, status(slot)["exit_code"]) == -9


@pytest.mark.parametrize("state, reported, code", [
    ({"ExecMainCode": "1", "ExecMainStatus": "0"}, None, 0),
    ({"ExecMainCode": "1", "ExecMainStatus": "3"}, 0, 3),      # a planted 0 changes nothing
    ({"ExecMainCode": "1", "ExecMainStatus": "137"}, -9, -9),  # signal 9, as `run` saw it
    ({"ExecMainCode": "1", "ExecMainStatus": "137"}, 137, 137),
    ({"ExecMainCode": "1", "ExecMainStatus": "137"}, -15, 137),
    ({"ExecMainCode": "2", "ExecMainStatus": "9"}, 0, -9),
    ({"ExecMainCode": "0", "ExecMainStatus": "0"}, 0, -9),     # never seen to end
    ({}, 0, -9),
])
def test_the_exit_code_comes_from_systemds_record(state, reported, code):
    assert job_exit_code(state, reported) == code


def test_a_job_its_environments_profile_cannot_confine_never_starts(slot):
    """The profile to stack is one no kernel has loaded (on the VMs: one a lab removed),
    or the kernel has no AppArmor: the job does not run unconfined, and says why."""
    request(slot, "open('ran', 'w').write('unconfined')\n",
            apparmor_stack="jobqueue-env-never-loaded")
    assert as_slot_user(slot, "run").returncode == slot_files.CANNOT_START
    assert status(slot)["exit_code"] == slot_files.CANNOT_START
    assert not (slot / "work" / "ran").exists()
    stderr = (slot / "outbox" / "stderr").read_text()
    assert "cannot confine the job by jobqueue-env-never-loaded" in stderr
    assert "the job could not start" in stderr


def test_an_armed_slot_starts_its_job_only_once_the_root_step_has_set_its_quota(slot):
    request(slot, "open('ran', 'w').write('yes')\n")
    armed = start_armed(slot)
    time.sleep(1.5)
    armed.send_signal(slot_files.GO_SIGNAL)  # without the root step's mark: no go
    time.sleep(0.5)
    assert armed.poll() is None and not (slot / "work" / "ran").exists()
    (slot / slot_files.QUOTA_SET).touch()
    armed.send_signal(slot_files.GO_SIGNAL)
    assert armed.wait(30) == 0
    assert (slot / "work" / "ran").read_text() == "yes"
    assert status(slot)["exit_code"] == 0 and result_names(slot) == ["ran"]


def test_a_go_sent_before_the_slot_waits_is_not_lost(slot):
    """The root step may mark and signal while `armed` is still starting: the signal is
    ignored then, and the mark alone starts the job."""
    request(slot, "open('ran', 'w').write('yes')\n")
    (slot / slot_files.QUOTA_SET).touch()
    armed = start_armed(slot)
    armed.send_signal(slot_files.GO_SIGNAL)
    assert armed.wait(30) == 0
    assert (slot / "work" / "ran").exists() and status(slot)["exit_code"] == 0


def test_an_armed_slot_stopped_before_its_job_runs_nothing_and_leaves_nothing_to_pack(slot):
    request(slot, "open('ran', 'w').write('yes')\n")
    armed = start_armed(slot)
    time.sleep(1.5)  # past its start: a SIGTERM before it waits ends it as well
    armed.terminate()
    assert armed.wait(30) == 0
    assert not (slot / "work" / "ran").exists()
    assert not (slot / "outbox" / slot_files.STATUS).exists()
