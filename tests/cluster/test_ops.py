"""The admin's Fabric tasks (fabfile/) against the scenario's VMs, run as the README
says (`fab TASK`, hosts from the Ansible inventory), checked from outside: the API,
the hosts' files."""

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import pytest
import testinfra
import testinfra.utils.ansible_runner
from conftest import build_dir, submit, wait

# Run last (tests/conftest.py): they drain, stop, upgrade and restore the cluster.
pytestmark = pytest.mark.ops
testinfra_hosts = ["ansible://controllers"]
ROOT = Path(__file__).resolve().parents[2]
TOKEN = "/etc/jobqueue/worker.token"  # roles/worker's worker_token_path
TIMINGS = ROOT / "build" / "molecule" / "ops-timings.txt"
SLEEP = b"import sys, time\ntime.sleep(float(sys.argv[1]))\nprint('slept', sys.argv[1])\n"


def fab(*args: str, timeout: float = 900) -> str:
    """`fab ARGS` as the README says; how long it took lands in
    build/molecule/ops-timings.txt (the figures of the README's "Operating the cluster")."""
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "fabric", *args], check=False, cwd=ROOT, capture_output=True,
        text=True,
        timeout=timeout, env=os.environ | {"JOBQUEUE_INVENTORY":
                                            os.environ["MOLECULE_INVENTORY_FILE"]})
    TIMINGS.parent.mkdir(parents=True, exist_ok=True)
    with open(TIMINGS, "a") as timings:
        timings.write(f"fab {args[0]}: {time.monotonic() - started:.0f} s\n")
    assert result.returncode == 0, f"fab {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def play(playbook: str, *args: str) -> str:
    """A playbook of playbooks/ on the scenario's hosts, as its provision step runs it."""
    result = subprocess.run(
        [str(Path(sys.executable).with_name("ansible-playbook")), f"playbooks/{playbook}",
         "-i", os.environ["MOLECULE_INVENTORY_FILE"], *args],
        check=False, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{playbook}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def sleeper(admin, seconds: float, name: str = "ops") -> str:
    return submit(admin, {"name": name, "entry": "s.py", "args": [str(seconds)],
                          "walltime": 600}, [("s.py", SLEEP)])


def job(admin, job_id: str) -> dict:
    return admin.get(f"{admin.base}/jobs/{job_id}", timeout=30).json()


def test_status_shows_every_host_and_worker(worker_names):
    report = json.loads(fab("status", "--json"))
    hosts = {h["host"]: h for h in report["hosts"]}
    assert set(worker_names) < set(hosts), hosts
    for host in hosts.values():
        assert "error" not in host and host["version"] not in (None, "-"), host
    assert all(hosts[w]["units"].get("jobqueue-worker") == "active" for w in worker_names)
    assert {w["worker"] for w in report["workers"]} == set(worker_names)
    assert report["queue"] == "dispatcher" and "queued" in report["jobs"]
    table = fab("status")
    assert "DRAINED" in table and all(w in table for w in worker_names)


def test_collect_logs_brings_every_hosts_journal_and_service_logs(worker_names, tmp_path):
    fab("collect-logs", "--dest", str(tmp_path))
    controllers = set(testinfra.utils.ansible_runner.AnsibleRunner(
        os.environ["MOLECULE_INVENTORY_FILE"]).get_hosts("controllers"))
    assert {p.name for p in tmp_path.iterdir()} == controllers | set(worker_names)
    for name in controllers:
        assert list((tmp_path / name / "apache2").glob("access.log*")), name
    for name in controllers | set(worker_names):
        journal = (tmp_path / name / "journal.txt").read_text()
        # Each host's own journal of this boot: the services this deploy runs there.
        unit = "apache2" if name in controllers else "jobqueue-worker"
        assert unit in journal, f"{name}: no {unit} in its journal"


def test_a_drained_worker_finishes_its_job_and_takes_no_new_one(admin, worker_names):
    running = sleeper(admin, 25)
    deadline = time.monotonic() + 300
    while (found := job(admin, running))["state"] != "running":
        assert time.monotonic() < deadline, found
        time.sleep(2)
    drained = found["worker"]
    other, = set(worker_names) - {drained}
    out = fab("drain", drained, "--timeout", "300")
    assert f"{drained}: drained, 0 job(s) running" in out, out
    assert wait(admin, running)["state"] == "succeeded"
    later = [sleeper(admin, 1, "after-drain") for _ in range(4)]
    for job_id in later:
        done = wait(admin, job_id)
        assert (done["state"], done["worker"]) == ("succeeded", other), done
    # As the provision step does (playbooks/ops.yml runs `fab resume`).
    out = play("ops.yml", "-e", "jobqueue_ops_task=resume", "-e", f"jobqueue_ops_worker={drained}")
    assert f"{drained}: taking jobs" in out, out
    status = json.loads(fab("status", "--json"))
    assert not any(w["drained"] for w in status["workers"]), status["workers"]


def worker_hosts(worker_names) -> dict:
    """The workers, by name, as testinfra hosts (root)."""
    inventory = os.environ["MOLECULE_INVENTORY_FILE"]
    return {name: testinfra.get_host(f"ansible://{name}?ansible_inventory={inventory}",
                                     sudo=True) for name in sorted(worker_names)}


def test_down_then_up_brings_the_whole_service_back(admin, worker_names):
    workers = worker_hosts(worker_names)
    since = {name: w.check_output("date +%s") for name, w in workers.items()}
    play("down.yml")
    stopped = json.loads(fab("status", "--json"))
    assert not any(h["units"].get("jobqueue-worker") == "active" or
                   h["units"].get("apache2") == "active" for h in stopped["hosts"]), stopped
    # The worker's stop stops its slots' units, readied ahead of jobs that never came:
    # they end cleanly, with nothing to pack.
    for name, worker in workers.items():
        units = "'jobqueue-job@*'"
        assert worker.check_output(f"systemctl list-units --failed --plain --no-legend {units}") \
            == "", name
        journal = worker.check_output(
            f"journalctl --no-pager -o cat --since @{since[name]} -u {units}")
        assert "Stopped jobqueue-job@" in journal, (name, journal)
        assert "Traceback" not in journal, (name, journal)
    play("up.yml")
    started = {h["host"]: h["units"] for h in json.loads(fab("status", "--json"))["hosts"]}
    assert all(started[w].get("jobqueue-worker") == "active" for w in worker_names), started
    assert wait(admin, sleeper(admin, 1, "after-up"))["state"] == "succeeded"


def test_tokens_rotate_while_jobs_run_and_the_old_ones_stop_working(admin, worker_names):
    workers = worker_hosts(worker_names)
    old = {name: w.file(TOKEN).content_string.strip() for name, w in workers.items()}
    running = [sleeper(admin, 20, "during-rotation") for _ in range(3)]
    out = fab("rotate-tokens", "--timeout", "300")
    for name, worker in workers.items():
        new = worker.file(TOKEN).content_string.strip()
        assert new and new != old[name], name
        assert f"{name}: new token in {TOKEN}, 1 old one(s) revoked" in out, out
        assert whose(admin, old[name]) == 401
        assert whose(admin, new) == 200
    later = [sleeper(admin, 1, "after-rotation") for _ in range(4)]
    for job_id in running + later:
        done = wait(admin, job_id)
        assert (done["state"], done["attempts"]) == ("succeeded", 1), done


def whose(admin, token: str) -> int:
    """The controller's answer to `token` (200: live, 401: not)."""
    return admin.get(f"{admin.base}/me", headers={"Authorization": f"Bearer {token}"},
                     timeout=30).status_code


def bumped_wheelhouse(tmp_path: Path) -> tuple[Path, str]:
    """The scenario's wheelhouse with the service's wheel rebuilt at a later version."""
    source = tmp_path / "source"
    shutil.copytree(ROOT / "service" / "src", source / "src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / "service" / name, source / name)
    init = source / "src" / "jobqueue" / "__init__.py"
    current = re.search(r'__version__ = "([^"]+)"', init.read_text())[1]
    version = f"{current}.post1"
    init.write_text(init.read_text().replace(f'"{current}"', f'"{version}"'))
    with tarfile.open(ROOT / "build" / "wheelhouse.tar") as tar:  # the project's own
        tar.extractall(tmp_path)
    for old in (tmp_path / "wheelhouse").glob("jobqueue-*.whl"):
        old.unlink()
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--wheel-dir", str(tmp_path / "wheelhouse"), str(source)], check=True)
    archive = tmp_path / "wheelhouse.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(tmp_path / "wheelhouse", arcname="wheelhouse")
    return archive, version


def test_a_rolling_upgrade_loses_no_job(admin, tmp_path):
    wheelhouse, version = bumped_wheelhouse(tmp_path)
    submitted: list[str] = []
    done = threading.Event()

    # A job every 6 s while the hosts are upgraded (a submission takes seconds more while
    # the controller reloads): some run through every step. At one every 4 s the two
    # 1-vCPU workers fell behind, the backlog outlasted the upgrade by two minutes, and
    # the load doubled the controller's play (4 min against 1:55).
    def stream():
        while not done.wait(6):
            submitted.append(sleeper(admin, 3, "during-upgrade"))

    feeder = threading.Thread(target=stream)
    feeder.start()
    try:
        out = fab("rolling-upgrade", "--wheelhouse", str(wheelhouse), "--timeout", "300",
                  "--extra-vars", f"jobqueue_build_dir={build_dir()}", timeout=3600)
    finally:
        done.set()
        feeder.join()
    status = json.loads(fab("status", "--json"))
    assert {h["host"]: h.get("version") for h in status["hosts"]} == \
        {h["host"]: version for h in status["hosts"]}, out
    assert len(submitted) >= 5, submitted
    for job_id in submitted:
        finished = wait(admin, job_id)
        assert (finished["state"], finished["attempts"]) == ("succeeded", 1), finished


def everything(admin) -> dict:
    """Each job's record, logs and results' checksum, as users get them."""
    seen = {}
    listed = admin.get(f"{admin.base}/jobs?all=1&limit=500", timeout=60).json()["jobs"]
    for found in listed:
        path = f"{admin.base}/jobs/{found['id']}"
        results = admin.get(f"{path}/results?inputs=0", timeout=60)
        seen[found["id"]] = (found["state"], found.get("exit_code"),
                             admin.get(f"{path}/log", timeout=60).json(),
                             results.status_code,
                             hashlib.sha256(results.content).hexdigest()
                             if results.status_code != 200 else _members(results.content))
    return seen


def _members(archive: bytes) -> str:
    """A digest of an archive's files (the archive itself is made per request)."""
    digest = hashlib.sha256()
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        for member in sorted(tar.getmembers(), key=lambda m: m.name):
            if member.isfile():
                digest.update(member.name.encode() + tar.extractfile(member).read())
    return digest.hexdigest()


def test_backup_then_loss_then_restore_brings_every_job_back(admin, host, tmp_path):
    # Nothing running: what is backed up is final.
    for job_id in [sleeper(admin, 1, "before-backup") for _ in range(2)]:
        wait(admin, job_id)
    before = everything(admin)
    assert len(before) >= 3
    archive = tmp_path / "controller.tar"
    backed_up = re.search(r"(\d+) jobs and (\d+) files", fab("backup", "--dest", str(archive)))
    assert backed_up and int(backed_up[1]) >= len(before) and archive.stat().st_size > 0
    # The controller loses its database and storage, and is deployed afresh (an empty,
    # migrated database): not even the admin's token is known there.
    variables = host.ansible.get_variables()
    with host.sudo():
        where = json.loads(host.check_output("/usr/local/sbin/jobqueue-admin paths"))
        data = where["data_dir"]
        host.check_output("systemctl stop apache2")
        host.check_output("rm -rf %s/jobs %s/jobqueue.db %s/jobqueue.db-wal %s/jobqueue.db-shm",
                          data, data, data, data)
        if where["database"] == "postgresql":
            name, owner = variables["controller_db_name"], variables["controller_db_user"]
            host.check_output("runuser -u postgres -- dropdb --force %s", name)
            host.check_output("runuser -u postgres -- createdb --owner %s %s", owner, name)
        host.check_output("/usr/local/sbin/jobqueue-admin migrate")
        host.check_output("systemctl start apache2")
    assert admin.get(f"{admin.base}/jobs", timeout=60).status_code == 401
    restored = re.search(r"restored (\d+) jobs and (\d+) files", fab("restore", str(archive)))
    assert restored and restored.groups() == backed_up.groups()
    assert everything(admin) == before
