"""The generated profiles, attacked directly: processes started under a job slot's
profile with aa-exec, as root and with every file world-readable and -writable, so
that AppArmor alone stands between them and what they try."""

import json
import os
import subprocess
from pathlib import Path

import pytest

testinfra_hosts = ["ansible://confined"]

JOB = "aa-exec -p jobqueue-job-1 --"
ROLES = Path(__file__).resolve().parents[2] / "roles"


@pytest.fixture()
def root(host):
    with host.sudo():
        yield host


def test_every_profile_is_loaded_in_enforce_mode(root):
    profiles = json.loads(root.check_output("aa-status --json"))["profiles"]
    for name in ("jobqueue-worker", "jobqueue-job-1", "jobqueue-job-2"):
        assert profiles.get(name) == "enforce", name


def test_the_installed_profiles_parse(root):
    # Where AppArmor loads profiles from at boot.
    assert root.run("apparmor_parser --skip-kernel-load --quiet "
                    "/etc/apparmor.d/jobqueue-jobs /etc/apparmor.d/jobqueue-worker").rc == 0


@pytest.mark.parametrize("path", ["/etc/jobqueue/worker.token", "/var/lib/jobqueue-worker/state",
                                  "/var/lib/jobqueue-slots/2/work/other-job.txt"])
def test_a_job_cannot_read_the_workers_files_or_another_slots(root, path):
    assert root.file(path).content_string  # readable without the profile
    denied = root.run(f"{JOB} cat {path}")
    assert denied.rc != 0 and "Permission denied" in denied.stderr


@pytest.mark.parametrize("path", ["/var/lib/jobqueue-slots/2/work/planted",
                                  "/var/lib/jobqueue-worker/planted", "/etc/planted",
                                  "/var/lib/jobqueue-slots/1/planted"])
def test_a_job_cannot_write_outside_its_slot(root, path):
    denied = root.run(f"{JOB} sh -c 'echo x > {path}'")
    assert denied.rc != 0
    assert not root.file(path).exists


def test_a_job_writes_its_own_slot(root):
    path = "/var/lib/jobqueue-slots/1/work/mine.txt"
    result = root.run(f"{JOB} sh -c 'echo mine > {path}'")
    assert result.rc == 0, result.stderr
    assert root.file(path).content_string == "mine\n"


@pytest.mark.parametrize("family", ["AF_INET", "AF_INET6", "AF_NETLINK"])
def test_a_job_cannot_open_a_network_socket(root, family):
    kind = "SOCK_RAW" if family == "AF_NETLINK" else "SOCK_STREAM"
    code = f"import socket; socket.socket(socket.{family}, socket.{kind})"
    denied = root.run(f"{JOB} python3 -c '{code}'")
    assert denied.rc != 0 and "PermissionError" in denied.stderr
    allowed = root.run(f"python3 -c '{code}'")
    assert allowed.rc == 0, allowed.stderr


def test_a_job_may_use_unix_sockets_among_its_processes(root):
    result = root.run(f"{JOB} python3 -c 'import socket; a, b = socket.socketpair(); "
                      "a.send(b\"x\"); print(b.recv(1))'")
    assert result.rc == 0 and "b'x'" in result.stdout


def test_a_job_cannot_signal_or_trace_outside_its_profile(root):
    target = root.run("sh -c 'sleep 300 >/dev/null 2>&1 & echo $!'").stdout.strip()
    try:
        kill = root.run(f"{JOB} kill -TERM {target}")
        assert kill.rc != 0
        trace = root.run(f"{JOB} cat /proc/{target}/environ")
        assert trace.rc != 0
        assert root.run(f"kill -0 {target}").rc == 0  # still alive
    finally:
        root.run(f"kill {target}")


def test_denials_reach_the_kernel_log(root):
    root.run(f"{JOB} cat /etc/jobqueue/worker.token")
    log = root.run("journalctl -k --no-pager -n 200").stdout
    assert 'apparmor="DENIED"' in log and 'profile="jobqueue-job-1"' in log


@pytest.mark.parametrize("override", ["apparmor_mode=audit", "apparmor_slot_count=many"])
def test_a_wrong_variable_fails_the_play_naming_it(override, tmp_path):
    """Before any task runs: the role's argument specs reject it. The play targets every
    host of the scenario's inventory, whatever its groups are called there."""
    playbook = tmp_path / "play.yml"
    playbook.write_text("- hosts: all\n  gather_facts: false\n  roles: [apparmor]\n")
    env = dict(os.environ, ANSIBLE_ROLES_PATH=str(ROLES))
    result = subprocess.run(
        ["ansible-playbook", "-i", os.environ["MOLECULE_INVENTORY_FILE"], str(playbook),
         "--check", "-e", override], capture_output=True, text=True, env=env, check=False)
    assert result.returncode != 0
    assert override.split("=")[0] in result.stdout + result.stderr
    assert "Validating arguments against arg spec" in result.stdout
