"""Slurm deployed by roles/slurm: one munge key everywhere, both nodes idle with
the figures slurmd finds, jobs held to the CPUs and memory they asked for, their
end states in sacct, and a node that stops answering going DOWN and coming back.

Runs on the controller host (`host`); the nodes are reached through `nodes`."""

from __future__ import annotations

import os
import re
import shlex
import time

import pytest
import testinfra
import testinfra.utils.ansible_runner

testinfra_hosts = ["ansible://controllers"]


@pytest.fixture(autouse=True)
def slurm_deployed(host):
    """Where roles/slurm ran (its scenario, the slurm one); the cluster scenario, which
    reads every test, has no Slurm."""
    if not host.file("/etc/slurm/slurm.conf").exists:
        pytest.skip("Slurm is not deployed on these hosts")


def _job_user() -> tuple[str, int]:
    """The first of the inventory's slurm_users: who jobs run as."""
    inventory = os.environ["MOLECULE_INVENTORY_FILE"]
    runner = testinfra.utils.ansible_runner.AnsibleRunner(inventory)
    controller = runner.get_hosts("controllers")[0]
    users = runner.get_variables(controller).get("slurm_users") or [{}]
    return users[0].get("name", ""), int(users[0].get("uid", -1))


JOB_USER, JOB_UID = _job_user()
MEMORY_RESERVE_MB = 384  # roles/slurm's default slurm_node_memory_reserve_mb
SLURMD_TIMEOUT = 20  # slurm_slurmd_timeout of the Vagrant inventory


def inventory_hosts(pattern: str) -> dict[str, testinfra.host.Host]:
    inventory = os.environ["MOLECULE_INVENTORY_FILE"]
    runner = testinfra.utils.ansible_runner.AnsibleRunner(inventory)
    return {name: testinfra.get_host(f"ansible://{name}", ansible_inventory=inventory)
            for name in runner.get_hosts(pattern)}


@pytest.fixture(scope="module")
def nodes() -> dict[str, testinfra.host.Host]:
    """The nodes by their Slurm name (their short host name)."""
    by_name = {node.check_output("hostname -s"): node
               for node in inventory_hosts("workers").values()}
    assert len(by_name) == 2, sorted(by_name)
    return by_name


@pytest.fixture(scope="module")
def all_hosts() -> dict[str, testinfra.host.Host]:
    hosts = inventory_hosts("all")
    assert len(hosts) == 3, sorted(hosts)
    return hosts


def fields(text: str) -> dict[str, str]:
    """Key=Value pairs of slurmd -C or scontrol output."""
    return dict(re.findall(r"(\w+)=(\S+)", text))


def node_states(host) -> dict[str, str]:
    out = host.check_output("sinfo --Node --noheader --format='%N %T'")
    return dict(line.split() for line in out.splitlines())


def wait_for(predicate, timeout: float, what: str, interval: float = 2):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout} s")
        time.sleep(interval)


def sbatch(host, options: str, script: str) -> tuple[int, str]:
    """Submit as the job user with --wait; (sbatch's exit status, job id)."""
    cmd = (f"cd /tmp && sudo -u {JOB_USER} sbatch --parsable --wait --output=/tmp/slurm-%j.out"
           f" {options} --wrap={shlex.quote(script)}")
    result = host.run(cmd)
    job_id = result.stdout.strip().splitlines()[0].split(";")[0] if result.stdout.strip() else ""
    assert job_id.isdigit(), f"no job id from sbatch: {result.stdout!r} {result.stderr!r}"
    return result.rc, job_id


def sacct(host, job_id: str, until: str, timeout: float = 90) -> dict[str, str]:
    """The job's accounting record once its state is `until` (states reach slurmdbd late)."""
    last = {}

    def record():
        nonlocal last
        out = host.check_output(
            f"sacct --jobs {job_id} --allocations --noheader --parsable2"
            " --format=State,NodeList,AllocCPUS,ExitCode")
        if out.strip():
            state, nodelist, cpus, exit_code = out.splitlines()[0].split("|")
            last = {"state": state.split()[0], "nodes": nodelist, "cpus": cpus,
                    "exit_code": exit_code}
        return last if last.get("state") == until else None

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if record():
            return last
        time.sleep(3)
    pytest.fail(f"sacct: job {job_id} is {last or 'unknown'}, not {until}, after {timeout} s")


# munge

def test_munge_keys_are_one_key_readable_by_munge_alone(all_hosts):
    sums = {}
    for name, h in all_hosts.items():
        with h.sudo():
            key = h.file("/etc/munge/munge.key")
            assert (key.user, key.group, key.mode) == ("munge", "munge", 0o400), name
            sums[name] = h.check_output("sha256sum /etc/munge/munge.key").split()[0]
        assert h.service("munge").is_running, name
    assert len(set(sums.values())) == 1, f"munge keys differ: {sorted(sums)} -> {len(set(sums.values()))} keys"


def test_munge_credential_from_one_host_decodes_on_every_other(all_hosts):
    names = sorted(all_hosts)
    for i, origin in enumerate(names):
        target = names[(i + 1) % len(names)]
        credential = all_hosts[origin].check_output("munge -n")
        result = all_hosts[target].run(f"printf '%s' {shlex.quote(credential)} | unmunge")
        assert result.rc == 0 and "Success" in result.stdout, (
            f"credential from {origin} refused on {target}: {result.stdout} {result.stderr}")


# Configuration and daemons

def test_daemons_run_where_they_belong(host, nodes):
    for service in ("mariadb", "slurmdbd", "slurmctld"):
        assert host.service(service).is_running, service
        assert host.service(service).is_enabled, service
    for name, node in nodes.items():
        assert node.service("slurmd").is_running, name
        assert node.service("slurmd").is_enabled, name
        assert not node.service("slurmctld").is_running, name


def test_both_nodes_idle(host, nodes):
    wait_for(lambda: all(state == "idle" for state in node_states(host).values())
             and set(node_states(host)) == set(nodes),
             120, f"nodes {sorted(nodes)} idle ({node_states(host)})")


def test_node_lines_match_what_slurmd_finds(host, nodes):
    for name, node in nodes.items():
        found = fields(node.check_output("/usr/sbin/slurmd -C").splitlines()[0])
        configured = fields(host.check_output(f"scontrol show node {name}"))
        assert configured["CPUTot"] == found["CPUs"], name
        assert int(configured["Sockets"]) == int(found["Boards"]) * int(found["SocketsPerBoard"]), name
        assert configured["CoresPerSocket"] == found["CoresPerSocket"], name
        assert configured["ThreadsPerCore"] == found["ThreadsPerCore"], name
        assert int(configured["RealMemory"]) == int(found["RealMemory"]) - MEMORY_RESERVE_MB, name
        assert configured["NodeAddr"] != name, f"{name} has no NodeAddr"


def test_state_and_spool_directories_differ(host, nodes):
    config = dict(re.findall(r"^(\w+)\s*=\s*(.*?)\s*$", host.check_output("scontrol show config"),
                             re.MULTILINE))
    state, spool = config["StateSaveLocation"], config["SlurmdSpoolDir"]
    assert state != spool
    assert host.file(state).is_directory and host.file(state).user == "slurm"
    for name, node in nodes.items():
        assert node.file(spool).is_directory, name
    for key, value in {"ProctrackType": "proctrack/cgroup", "SelectType": "select/cons_tres",
                       "SelectTypeParameters": "CR_CORE_MEMORY",
                       "AccountingStorageType": "accounting_storage/slurmdbd",
                       "ReturnToService": "2", "SlurmdTimeout": f"{SLURMD_TIMEOUT} sec"}.items():
        assert config[key] == value, (key, config[key])
    assert set(config["TaskPlugin"].split(",")) == {"task/cgroup", "task/affinity"}


def test_cluster_is_registered_in_accounting(host):
    clusters = host.check_output("sacctmgr --noheader --parsable2 list cluster format=Cluster")
    assert clusters.split() == ["jobqueue"]


# Jobs

JOB_REPORT = (
    'cg=$(sed -n "s/^0:://p" /proc/self/cgroup); d=/sys/fs/cgroup$cg; job=${d%%/step_*};'
    ' echo "cgroup=$cg"; echo "cpuset=$(cat $job/cpuset.cpus)";'
    ' echo "effective=$(cat $d/cpuset.cpus.effective)"; echo "nproc=$(nproc)";'
    ' echo "memory_max=$(cat $job/memory.max)"; echo "uid=$(id -u)"; echo "host=$(hostname -s)"'
)


def cpu_count(cpulist: str) -> int:
    """Number of CPUs in a cpuset list such as 0-1,3."""
    total = 0
    for part in cpulist.split(","):
        low, _, high = part.partition("-")
        total += int(high or low) - int(low) + 1
    return total


def run_report_job(host, nodes, cpus: int) -> dict[str, str]:
    rc, job_id = sbatch(host, f"--cpus-per-task={cpus} --mem=100M", JOB_REPORT)
    assert rc == 0, f"job {job_id} failed ({rc})"
    record = sacct(host, job_id, "COMPLETED")
    assert record["cpus"] == str(cpus)
    assert record["nodes"] in nodes, record
    node = nodes[record["nodes"]]
    report = fields(node.check_output(f"cat /tmp/slurm-{job_id}.out"))
    assert report["host"] == record["nodes"]
    assert f"/job_{job_id}/" in report["cgroup"], f"job {job_id} not in its cgroup: {report}"
    return report


def test_two_cpu_job_runs_on_two_cpus_of_a_node_as_the_job_user(host, nodes):
    report = run_report_job(host, nodes, 2)
    assert cpu_count(report["cpuset"]) == 2, report
    assert cpu_count(report["effective"]) == 2 and report["nproc"] == "2", report
    assert report["memory_max"] == str(100 * 1024 * 1024), report
    assert report["uid"] == str(JOB_UID), report


def test_one_cpu_job_is_held_to_one_cpu(host, nodes):
    # The nodes have two CPUs: only the job's cgroup (and affinity) hides one.
    report = run_report_job(host, nodes, 1)
    assert cpu_count(report["cpuset"]) == 1 and report["nproc"] == "1", report


def test_job_over_its_memory_ends_out_of_memory(host):
    rc, job_id = sbatch(host, "--mem=50M",
                        "python3 -c 'import time; x = b\"x\" * (300 * 2**20); time.sleep(5)'")
    assert rc != 0, f"job {job_id} used 300 MiB within --mem=50M"
    record = sacct(host, job_id, "OUT_OF_MEMORY")
    assert record["state"] == "OUT_OF_MEMORY"


def test_a_node_that_stops_answering_goes_down_and_comes_back(host, nodes):
    name = max(nodes)
    node = nodes[name]
    try:
        with node.sudo():
            node.check_output("systemctl stop slurmd")
        wait_for(lambda: node_states(host)[name].startswith("down"),
                 SLURMD_TIMEOUT * 4 + 30, f"{name} DOWN after slurmd stopped")
    finally:
        with node.sudo():
            node.check_output("systemctl start slurmd")
    # ReturnToService=2: back in service once its slurmd registers, no admin needed.
    wait_for(lambda: node_states(host)[name] == "idle", 120, f"{name} idle again")
