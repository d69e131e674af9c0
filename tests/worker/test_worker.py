"""A deployed worker: running, hardened, and doing real work through the public
API (a mapper job finishes on a worker with the expected output) while leaving
alone a job it cannot take, and stopping a job its owner requeues."""

import io
import json
import os
import re
import tarfile
import time
import tomllib
from pathlib import Path

import pytest
import testinfra
import testinfra.utils.ansible_runner
from conftest import submit, wait, worker_state_dir

testinfra_hosts = ["ansible://workers"]

EXPERIMENT = Path(__file__).resolve().parents[2] / "playbooks" / "files" / "experiment.py"


def test_worker_service_enabled_and_running(host):
    service = host.service("jobqueue-worker")
    assert service.is_enabled
    assert service.is_running


def test_worker_runs_as_its_own_user(host):
    assert host.process.filter(user="jobqueue-worker"), "jobqueue-worker runs no process"


def test_worker_unit_is_hardened(host):
    state = worker_state_dir(host)
    props = host.run(
        "systemctl show jobqueue-worker -p NoNewPrivileges -p ProtectSystem -p ProtectHome"
        " -p PrivateTmp -p KillMode -p Restart -p User -p ReadWritePaths").stdout
    for expected in ("NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes",
                     "PrivateTmp=yes", "KillMode=mixed", "Restart=on-failure",
                     "User=jobqueue-worker", f"ReadWritePaths={state} "):
        assert expected in props


def test_job_slots_share_a_slice_that_leaves_the_host_a_reserve(host):
    """All slots' units in jobqueue-jobs.slice, whose MemoryMax is the host's memory less
    the role's default reserve (worker_jobs_memory_reserve_mb: 384 MiB), the figure the
    worker's `memory` setting has too."""
    meminfo = host.file("/proc/meminfo").content_string
    total_mib = int(re.search(r"MemTotal:\s+(\d+) kB", meminfo).group(1)) // 1024
    limit = host.run("systemctl show -p MemoryMax --value jobqueue-jobs.slice").stdout.strip()
    jobs_mib = max(256, total_mib - 384)
    assert limit == str(jobs_mib << 20), limit
    with host.sudo():
        config = tomllib.loads(host.file("/etc/jobqueue/worker.toml").content_string)
    assert config["memory"] == jobs_mib, config
    slots = host.run("find /var/lib/jobqueue-slots -mindepth 1 -maxdepth 1 -name '[0-9]*' "
                     "-printf '%f\\n'").stdout.split()
    assert slots
    for slot in slots:
        unit = f"jobqueue-job@{slot}.service"
        shown = host.run("systemctl show -p Slice -p ExecStartPre -p ExecStartPost "
                         "-p ExecStopPost %s", unit)
        assert "Slice=jobqueue-jobs.slice" in shown.stdout, shown.stdout
        # Root wipes the slot before a start and after a stop, and sets the job's quota
        # at the worker's go.
        for phase in ("start", "go", "stop"):
            assert f"argv[]=/usr/local/sbin/jobqueue-slot-wipe {phase} {slot} " in shown.stdout


def test_worker_token_is_private(host):
    with host.sudo():
        token = host.file("/etc/jobqueue/worker.token")
        assert token.mode == 0o640
        assert token.group == "jobqueue-worker"
        assert len(token.content_string.strip()) > 20


def test_the_deploys_check_of_worker_toml_passes_it_and_names_an_unknown_key(host):
    """The role's validate: of worker.toml, on the deployed host: the file it wrote
    passes, the same with a key the worker does not know fails naming the key."""
    check = "/opt/jobqueue/venv/bin/python -I -m jobqueue.check_config worker"
    with host.sudo():
        deployed = host.run(f"{check} /etc/jobqueue/worker.toml")
        typo = host.run("f=$(mktemp) && cat /etc/jobqueue/worker.toml >$f && "
                        f"echo 'heartbeat_secnds = 5' >>$f && {check} $f; s=$?; rm -f $f; exit $s")
    assert deployed.rc == 0, deployed.stderr
    assert typo.rc == 1 and "unknown setting(s): heartbeat_secnds" in typo.stderr, typo.stderr


def test_job_runs_on_a_worker_with_expected_output(admin, worker_names):
    job_id = submit(admin, {"name": "verify-mapper", "entry": "experiment.py", "args": [],
                            "cpus": 1, "walltime": 600},
                    [("experiment.py", EXPERIMENT.read_bytes())])
    job = wait(admin, job_id)
    if job["state"] != "succeeded":
        log = admin.get(f"{admin.base}/jobs/{job_id}/log", timeout=30).json()
        pytest.fail(f"job {job_id} {job['state']}: {job.get('message')}\n"
                    f"stdout:\n{log.get('stdout')}\nstderr:\n{log.get('stderr')}")
    assert job["worker"] in worker_names
    results = admin.get(f"{admin.base}/jobs/{job_id}/results", timeout=60)
    assert results.status_code == 200
    with tarfile.open(fileobj=io.BytesIO(results.content), mode="r:gz") as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("result.json"))
        result = json.load(tar.extractfile(member))
    assert result["n"] == 1000
    assert result["sum"] == sum(x * x for x in range(1000))


ACCOUNTED = b"""import time
end = time.monotonic() + 1
while time.monotonic() < end:
    pass
held = b"x" * (64 << 20)
time.sleep(2)
"""


def test_a_jobs_accounting_is_the_systems_record_of_it(admin):
    # A second of CPU, 64 MiB, two seconds asleep: what the controller records comes
    # from systemd and the slot's cgroup, also once systemd has unloaded the unit.
    job_id = submit(admin, {"name": "verify-accounting", "entry": "run.py", "args": [],
                            "walltime": 300, "memory": 256}, [("run.py", ACCOUNTED)])
    job = wait(admin, job_id)
    assert job["state"] == "succeeded", job
    used = job["accounting"]
    assert used["wall_seconds"] is not None and 3 <= used["wall_seconds"] < 120, used
    assert used["cpu_seconds"] is not None and used["cpu_seconds"] >= 0.5, used
    assert used["peak_memory"] is not None and used["peak_memory"] >= 64 << 20, used


def test_a_job_no_worker_can_take_is_refused_naming_the_largest(admin):
    # No worker VM has more than two CPUs, as their claims told the controller.
    spec = {"name": "verify-too-big", "entry": "run.py", "args": [], "cpus": 4, "walltime": 60}
    response = admin.post(f"{admin.base}/jobs", data={"spec": json.dumps(spec)},
                          files=[("files", ("run.py", b"print('should never run')\n"))],
                          timeout=60)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"] == "too_big" and ") has 2" in body["message"], body
    queued = admin.get(f"{admin.base}/jobs", params={"state": "queued"}, timeout=30).json()
    assert all(job["name"] != "verify-too-big" for job in queued["jobs"])


def running_slots() -> dict[str, list[str]]:
    """Each worker's active slot units."""
    inventory = os.environ["MOLECULE_INVENTORY_FILE"]
    names = testinfra.utils.ansible_runner.AnsibleRunner(inventory).get_hosts("workers")
    return {name: testinfra.get_host(f"ansible://{name}?ansible_inventory={inventory}").run(
                "systemctl list-units --plain --no-legend --state=active 'jobqueue-job@*'"
            ).stdout.splitlines() for name in names}


def test_a_requeued_job_stops_in_its_slot_and_runs_again(admin):
    job_id = submit(admin, {"name": "verify-requeue", "entry": "run.py", "args": [],
                            "walltime": 600},
                    [("run.py", b"import time\nprint('started', flush=True)\ntime.sleep(600)\n")])
    deadline = time.monotonic() + 300

    def running() -> dict:
        while time.monotonic() < deadline:
            job = admin.get(f"{admin.base}/jobs/{job_id}", timeout=30).json()
            if job["state"] == "running":
                return job
            time.sleep(2)
        pytest.fail(f"job {job_id} never ran: {job}")

    first = running()
    response = admin.post(f"{admin.base}/jobs/{job_id}/requeue", json={}, timeout=30)
    assert response.status_code == 200 and response.json()["state"] == "queued", response.text
    second = running()
    assert second["attempts"] == first["attempts"] == 1
    # One slot runs it: the first attempt's stopped on its worker.
    while sum(len(units) for units in running_slots().values()) != 1:
        assert time.monotonic() < deadline, running_slots()
        time.sleep(3)
    admin.post(f"{admin.base}/jobs/{job_id}/cancel", timeout=30)
    assert wait(admin, job_id)["state"] == "cancelled"


def test_nothing_left_running(admin):
    running = admin.get(f"{admin.base}/jobs", params={"state": "running"}, timeout=30).json()
    assert running["jobs"] == []


def test_slots_are_on_a_file_system_of_their_own_with_project_quotas(host):
    """Each job's files, /tmp, /var/tmp and /dev/shm are on the slots' ext4 file system,
    mounted with project quotas enforced (the hostile suite fills one)."""
    mount = host.check_output("findmnt -n -o FSTYPE,OPTIONS /var/lib/jobqueue-slots")
    assert mount.startswith("ext4 ") and "prjquota" in mount, mount
    binds = host.check_output("systemctl show -p BindPaths -p PrivateTmp jobqueue-job@1.service")
    for target in ("/tmp", "/var/tmp", "/dev/shm"):
        assert f":{target}:" in binds, binds
