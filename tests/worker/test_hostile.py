"""Hostile jobs, submitted through the public API like any user's, against a worker
that confines each job in a slot (worker_confinement). Every case checks from
outside the job that the attack failed (the host's files and processes, the
controller's access log, what the API hands out), and the worker stays healthy and
runs the next job normally."""

import errno
import io
import json
import os
import re
import tarfile
import time
import tomllib
import uuid
from urllib.parse import urlsplit

import pytest
import testinfra
import testinfra.utils.ansible_runner
from conftest import submit, wait, worker_state_dir
from jobqueue.states import FINISHED

INVENTORY = os.environ.get("MOLECULE_INVENTORY_FILE", "")


def inventory_workers() -> list[str]:
    return sorted(testinfra.utils.ansible_runner.AnsibleRunner(INVENTORY).get_hosts("workers"))


# The suite attacks one worker, the inventory's first, which needs two slots (one
# attack runs beside its victim); while it runs the scenario's other workers are
# stopped, so that every job lands on the worker under attack.
testinfra_hosts = [f"ansible://{inventory_workers()[0]}"] if INVENTORY else []
pytestmark = pytest.mark.hostile

TOKEN = "/etc/jobqueue/worker.token"
SLOTS = "/var/lib/jobqueue-slots"
NONCE = uuid.uuid4().hex  # marks what the attacks leave, to look for it outside

# Prints what it got for each attempt: "ok" means the attack worked.
PROBE = """
import json, os, sys
def attempt(what, action):
    try:
        action()
        return "ok"
    except BaseException as exc:
        return type(exc).__name__
"""


def jobs_processes(host, user: str) -> list:
    """The slot user's processes, but for its unit's own `run` while the unit waits for
    its next job (armed: activating, started ahead of the job)."""
    unit = f"jobqueue-job@{user.removeprefix('jq-slot')}.service"
    shown = dict(line.split("=", 1) for line in host.check_output(
        "systemctl show -p ActiveState -p MainPID %s", unit).splitlines())
    waiting = int(shown["MainPID"]) if shown["ActiveState"] == "activating" else 0
    if waiting:
        assert "jobqueue.worker.slot armed" in host.process.get(pid=waiting).args
    return [p for p in host.process.filter(user=user) if p.pid != waiting]


def run_job(admin, code: str, **spec) -> tuple[dict, dict]:
    """Submit `code` as main.py, wait for it; the job and its log."""
    job_id = submit(admin, {"name": "hostile", "entry": "main.py", "args": [],
                            "walltime": 120} | spec, [("main.py", code.encode())])
    job = wait(admin, job_id)
    log = admin.get(f"{admin.base}/jobs/{job_id}/log", timeout=30).json()
    return job, log


def probe_results(log: dict) -> dict:
    lines = [line for line in log["stdout"].splitlines() if line.startswith("{")]
    assert lines, f"the job printed no findings; stderr:\n{log['stderr']}"
    return json.loads(lines[-1])


def results_archive(admin, job_id) -> dict[str, bytes]:
    response = admin.get(f"{admin.base}/jobs/{job_id}/results", timeout=60)
    assert response.status_code == 200
    with tarfile.open(fileobj=io.BytesIO(response.content), mode="r:gz") as tar:
        return {m.name: (tar.extractfile(m).read() if m.isfile() else b"<" + m.type + b">")
                for m in tar.getmembers()}


def inventory_host(name: str):
    return testinfra.get_host(f"ansible://{name}?ansible_inventory={INVENTORY}")


def controller_host():
    runner = testinfra.utils.ansible_runner.AnsibleRunner(INVENTORY)
    return inventory_host(min(runner.get_hosts("controllers")))


@pytest.fixture(scope="module", autouse=True)
def only_the_attacked_worker_claims(host):
    slot_users = host.run("getent passwd jq-slot1 jq-slot2").stdout.splitlines()
    assert len(slot_users) == 2, "the worker under attack needs two job slots"
    others = [inventory_host(name) for name in inventory_workers()
              if name != host.backend.get_hostname()]
    for other in others:
        with other.sudo():
            other.check_output("systemctl stop jobqueue-worker")
    yield
    for other in others:
        with other.sudo():
            other.check_output("systemctl start jobqueue-worker")


@pytest.fixture(scope="module")
def worker_pid(host):
    pid = int(host.run("systemctl show -p MainPID --value jobqueue-worker").stdout)
    assert pid > 0
    return pid


def test_the_profiles_are_enforced_and_the_units_hardened(host):
    with host.sudo():
        status = json.loads(host.check_output("aa-status --json"))
    assert status["profiles"]["jobqueue-worker"] == "enforce"
    assert status["profiles"]["jobqueue-job-1"] == "enforce"
    assert "jobqueue-worker" in {p for procs in status["processes"].values()
                                 for p in [x["profile"] for x in procs]}
    for unit in ("jobqueue-worker.service", "jobqueue-job@1.service"):
        out = host.run(f"systemd-analyze security --no-pager {unit}").stdout
        score = float(out.rsplit("Overall exposure level for", 1)[1].split(":")[1].split()[0])
        assert score <= 2.0, f"{unit}: exposure {score}\n{out}"


def test_a_job_cannot_read_the_workers_secrets_or_state(admin, host):
    state = worker_state_dir(host)
    secrets = [TOKEN, "/etc/jobqueue/worker.toml", "/etc/jobqueue/ca.crt", f"{state}/claim-id",
               "/etc/ssh/ssh_host_ed25519_key", "/etc/shadow"]
    with host.sudo():  # there to be read: a refusal is the confinement, not a missing file
        assert all(host.file(path).is_file for path in secrets), secrets
    job, log = run_job(admin, PROBE + f"""
found = {{}}
others = [f"{SLOTS}/{{n}}/request.json" for n in (1, 2)
          if not os.getcwd().startswith(f"{SLOTS}/{{n}}/")]
for path in [*{secrets!r}, *others]:
    found[path] = attempt(path, lambda: open(path).read())
found["list worker state"] = attempt("ls", lambda: os.listdir({state!r}))
print(json.dumps(found))
""")
    assert job["state"] == "succeeded", job
    found = probe_results(log)
    assert all(outcome != "ok" for outcome in found.values()), found
    with host.sudo():
        token = host.file(TOKEN).content_string.strip()
    assert token and token not in log["stdout"] + log["stderr"]


def test_programs_a_job_brings_run_as_confined_as_the_job(admin, host):
    """A #! script as the entry, and a binary the job copies into its directory: both
    run, and neither reads what the job may not."""
    script = f"""#!/bin/sh
cp /usr/bin/cat ./own-cat
for path in {TOKEN} /etc/jobqueue/worker.toml /etc/shadow; do
  if cat "$path" >/dev/null 2>&1; then echo "sh read $path"; fi
  if ./own-cat "$path" >/dev/null 2>&1; then echo "own-cat read $path"; fi
done
./own-cat /etc/hostname >/dev/null && echo "own-cat ran"
"""
    job_id = submit(admin, {"name": "hostile", "entry": "probe.sh", "walltime": 120},
                    [("probe.sh", script.encode())])
    job = wait(admin, job_id)
    log = admin.get(f"{admin.base}/jobs/{job_id}/log", timeout=30).json()
    assert job["state"] == "succeeded", (job, log)
    assert log["stdout"].splitlines() == ["own-cat ran"], log


# The cluster inventory's environment `analysis` lets its jobs alone read this
# (molecule/cluster/group_vars/all/this-lab.yml: read_paths).
ANALYSIS_DATA = "/opt/lab-analysis"
STACK_PROBE = PROBE + """
found = {"label": open("/proc/self/attr/current").read().split()[0].split("//&")}
found["lab data"] = attempt("read", lambda: open(sys.argv[1]).read())
found["analysis env"] = attempt("list", lambda: os.listdir("/opt/jobqueue/envs/analysis"))
def stack(profile):
    with open("/proc/self/attr/apparmor/exec", "w") as fh:
        fh.write("stack " + profile)
    os.execv("/usr/bin/cat", ["cat", sys.argv[1]])
for profile in ("jobqueue-env-analysis", "jobqueue-job-2"):
    found["stack " + profile] = attempt("stack", lambda: stack(profile))
print(json.dumps(found))
"""


def test_a_job_reads_only_its_own_environments_paths_and_cannot_leave_them(admin, host):
    """A job runs under its slot's profile with its environment's stacked on it: the
    environment's paths are for its jobs alone, and a job cannot stack another."""
    data = f"{ANALYSIS_DATA}/reference-{NONCE}.txt"
    with host.sudo():
        profiles = host.file("/etc/apparmor.d/jobqueue-jobs").content_string
        host.check_output(f"install -d -m 0755 {ANALYSIS_DATA} && echo {NONCE} > {data} "
                          f"&& chmod 0644 {data}")
        since = host.check_output("date +%s")
    assert f"{ANALYSIS_DATA}/** mr," in profiles  # the inventory's path reached the profile
    outcomes = {}
    for environment in (None, "analysis"):
        job, log = run_job(admin, STACK_PROBE, args=[data],
                           **({"environment": environment} if environment else {}))
        assert job["state"] == "succeeded", (job, log)
        outcomes[environment] = found = probe_results(log)
        assert NONCE not in log["stdout"], log  # nothing read by a stack
    plain, analysis = outcomes[None], outcomes["analysis"]
    assert sorted(p.rstrip("0123456789") for p in plain["label"]) == [
        "jobqueue-env", "jobqueue-job-"], plain
    assert sorted(p.rstrip("0123456789") for p in analysis["label"]) == [
        "jobqueue-env-analysis", "jobqueue-job-"], analysis
    assert plain["lab data"] == plain["analysis env"] == "PermissionError", plain
    assert analysis["lab data"] == analysis["analysis env"] == "ok", analysis
    for found in (plain, analysis):
        assert found["stack jobqueue-env-analysis"] != "ok"
        assert found["stack jobqueue-job-2"] != "ok"
    with host.sudo():
        kernel = host.run("journalctl -k --no-pager -o cat --since @%s", since.strip()).stdout
        host.check_output(f"rm -f {data}")
    denied = [line for line in kernel.splitlines() if 'apparmor="DENIED"' in line
              and f'name="{data}"' in line]
    assert denied and all('profile="jobqueue-env"' in line for line in denied), kernel[-3000:]


def test_a_job_has_no_network(admin, host):
    controller = controller_host()
    with host.sudo():  # the address the worker itself reaches the controller at
        config = tomllib.loads(host.file("/etc/jobqueue/worker.toml").content_string)
    address = urlsplit(config["controller_url"]).hostname
    job, log = run_job(admin, PROBE + f"""
import socket, urllib.request
found = {{}}
found["https to the controller"] = attempt("https", lambda: urllib.request.urlopen(
    "https://{address}/hostile-{NONCE}", timeout=5))
found["tcp to the controller"] = attempt("tcp", lambda: socket.create_connection(
    ("{address}", 443), timeout=5))
found["udp out"] = attempt("udp", lambda: socket.socket(socket.AF_INET,
    socket.SOCK_DGRAM).sendto(b"x", ("{address}", 53)))
found["netlink"] = attempt("netlink", lambda: socket.socket(socket.AF_NETLINK,
    socket.SOCK_RAW, 0))
found["system bus"] = attempt("dbus", lambda: socket.socket(socket.AF_UNIX).connect(
    "/run/dbus/system_bus_socket"))
print(json.dumps(found))
""")
    assert job["state"] == "succeeded", job
    found = probe_results(log)
    assert all(outcome != "ok" for outcome in found.values()), found
    with controller.sudo():
        access = controller.run("grep -rs hostile-%s /var/log/apache2/", NONCE)
    assert access.rc == 1, f"the controller saw the job's request: {access.stdout}"


def test_a_job_cannot_write_outside_its_directory(admin, host):
    targets = [worker_state_dir(host), "/etc/jobqueue", "/var/tmp", "/opt/jobqueue/venv",
               SLOTS, f"{SLOTS}/1", f"{SLOTS}/2/work"]
    job, log = run_job(admin, PROBE + f"""
found = {{}}
for directory in {targets!r}:
    path = os.path.join(directory, "hostile-{NONCE}")
    found[path] = attempt(path, lambda: open(path, "w").write("x"))
print(json.dumps(found))
""")
    assert job["state"] == "succeeded", job
    found = probe_results(log)
    own_slot_work = [p for p, outcome in found.items() if outcome == "ok"]
    # At most its own slot's work directory (slot 2's, if it ran there).
    assert own_slot_work in ([], [f"{SLOTS}/2/work/hostile-{NONCE}"]), found
    with host.sudo():
        leftovers = host.run("find / -xdev -name 'hostile-%s' -not -path '/proc/*'", NONCE)
    assert leftovers.stdout.strip() == "", leftovers.stdout


def test_links_in_results_never_carry_a_secret_out(admin, host):
    job, log = run_job(admin, PROBE + f"""
found = {{}}
found["symlink"] = attempt("symlink", lambda: os.symlink("{TOKEN}", "token-link"))
found["hardlink"] = attempt("hardlink", lambda: os.link("{TOKEN}", "token-hard"))
os.symlink("/etc", "etc-link")
os.symlink("../../..", "up-link")
open("real.txt", "w").write("mine")
print(json.dumps(found))
""")
    assert job["state"] == "succeeded", job
    assert probe_results(log)["hardlink"] != "ok"
    files = results_archive(admin, job["id"])
    assert set(files) == {"main.py", "real.txt"}, files  # the input, and its own file
    with host.sudo():
        token = host.file(TOKEN).content_string.strip().encode()
    assert all(token not in content for content in files.values())


def test_forged_archives_and_names_do_not_reach_the_controller(admin):
    job, _ = run_job(admin, f"""
import io, os, tarfile
def forged(path):
    with tarfile.open(path, "w:gz") as tar:
        for name in ("../../../tmp/escape-{NONCE}", "/tmp/absolute-{NONCE}"):
            info = tarfile.TarInfo(name)
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
forged("results.tar.gz")
for outbox in ("../outbox/results.tar.gz",):
    try:
        forged(outbox)
    except OSError as exc:
        print("outbox:", type(exc).__name__)
open("plain.txt", "w").write("ok")
""")
    assert job["state"] == "succeeded", job
    files = results_archive(admin, job["id"])
    assert "plain.txt" in files and "results.tar.gz" in files
    assert not any(NONCE in name for name in files), files
    controller = controller_host()
    with controller.sudo():
        found = controller.run("find / -xdev -name '*-%s' -not -path '/proc/*'", NONCE)
    assert found.stdout.strip() == "", found.stdout


def test_a_job_cannot_signal_or_trace_the_worker(admin, host, worker_pid):
    job, log = run_job(admin, PROBE + f"""
import ctypes, signal
found = {{}}
found["kill"] = attempt("kill", lambda: os.kill({worker_pid}, signal.SIGKILL))
found["see"] = attempt("see", lambda: open("/proc/{worker_pid}/status").read())
found["mem"] = attempt("mem", lambda: open("/proc/{worker_pid}/mem", "rb").read(1))
libc = ctypes.CDLL(None, use_errno=True)
def ptrace():
    if libc.ptrace(16, {worker_pid}, None, None) != 0:  # PTRACE_ATTACH
        raise OSError(ctypes.get_errno(), "ptrace")
found["ptrace"] = attempt("ptrace", ptrace)
found["kill init"] = attempt("kill 1", lambda: os.kill(1, signal.SIGTERM))
print(json.dumps(found))
""")
    assert job["state"] == "succeeded", job
    found = probe_results(log)
    assert all(outcome != "ok" for outcome in found.values()), found
    assert int(host.run("systemctl show -p MainPID --value jobqueue-worker").stdout) == worker_pid


def test_a_job_that_kills_what_it_can_and_plants_success_ends_failed(admin):
    """The outcome comes from systemd's record of the slot, not from a file the job can
    write: a job that writes a successful status.json, then kills every process of its
    user (the slot's `run` among them, if it can reach it), ends failed. What it made is
    still packed: by `finish`, which the unit's root step runs for a killed `run`, whatever
    the planted status.json says."""
    job, _ = run_job(admin, """
import json, os, signal
open("made.txt", "w").write("before the kill")
with open("../outbox/status.json", "w") as out:
    json.dump({"exit_code": 0, "limit": None, "results_bytes": 0, "packed": True}, out)
os.kill(os.getppid(), signal.SIGKILL)
os.kill(-1, signal.SIGKILL)
""")
    assert job["state"] == "failed" and job["exit_code"] != 0, job
    assert results_archive(admin, job["id"]).get("made.txt") == b"before the kill"


def test_a_running_job_cannot_reach_another_running_job(admin, host):
    """Two jobs at once on one worker (two slots): the second attacks the first."""
    victim = submit(admin, {"name": "victim", "entry": "main.py", "walltime": 300},
                    [("main.py", f"""
import os, time
open("secret.txt", "w").write("victim-{NONCE}")
os.chmod("secret.txt", 0o644)
time.sleep(90)
""".encode())])
    deadline = time.monotonic() + 180
    while admin.get(f"{admin.base}/jobs/{victim}", timeout=30).json()["state"] != "running":
        assert time.monotonic() < deadline, "the victim never started"
        time.sleep(2)
    while not (victim_pids := [int(p) for p in host.run(
            "pgrep -u jq-slot1,jq-slot2 -f 'python main.py'").stdout.split()]):
        assert time.monotonic() < deadline, "the victim runs no process"
        time.sleep(1)
    job, log = run_job(admin, PROBE + f"""
import glob, signal
found = {{}}
for slot in glob.glob("{SLOTS}/*/") or ["{SLOTS}/1/", "{SLOTS}/2/"]:
    if os.getcwd().startswith(slot):
        continue
    found["read " + slot] = attempt("read", lambda: open(slot + "work/secret.txt").read())
    found["list " + slot] = attempt("list", lambda: os.listdir(slot + "work"))
    found["write " + slot] = attempt("write", lambda: open(slot + "work/planted", "w").write("x"))
    found["remove " + slot] = attempt("rm", lambda: os.unlink(slot + "work/secret.txt"))
for pid in {victim_pids!r}:
    found[f"see {{pid}}"] = attempt("see", lambda: open(f"/proc/{{pid}}/environ").read())
    found[f"signal {{pid}}"] = attempt("kill", lambda: os.kill(pid, signal.SIGKILL))
print(json.dumps(found))
""")
    assert job["state"] == "succeeded", job
    found = probe_results(log)
    assert found and all(outcome != "ok" for outcome in found.values()), found
    assert f"victim-{NONCE}" not in log["stdout"]
    admin.post(f"{admin.base}/jobs/{victim}/cancel", timeout=30)
    victim_job = wait(admin, victim)
    assert victim_job["state"] == "cancelled" and victim_job["worker"] == job["worker"]
    with host.sudo():
        assert host.run("find %s -name planted", SLOTS).stdout.strip() == ""


def test_a_fork_bomb_stops_at_the_task_limit(admin, host):
    job, log = run_job(admin, """
import os, time
children = 0
try:
    while True:
        if os.fork() == 0:
            time.sleep(600)
            os._exit(0)
        children += 1
except OSError as exc:
    print("forks:", children, type(exc).__name__, flush=True)
""", walltime=300)
    assert job["state"] == "succeeded", job
    forks = int(log["stdout"].split("forks:")[1].split()[0])
    assert 10 < forks < 512, log["stdout"]
    # Its children died with it.
    assert not jobs_processes(host, "jq-slot1") and not jobs_processes(host, "jq-slot2")


def test_a_memory_bomb_is_killed_at_the_jobs_memory_limit(admin):
    job, _ = run_job(admin, """
blocks = []
while True:
    blocks.append(bytearray(16 << 20))
""", memory=128)
    assert job["state"] == "failed" and "memory limit" in job["message"], job


def test_each_job_is_held_to_its_own_memory_limit_whatever_its_slot_ran_before(admin):
    """A slot's limits are set only where they differ from what its unit has: jobs that
    ask alike keep them, and the next job that asks otherwise gets its own, lower or
    higher. One after another, so that they run in the same slot."""
    code = """
held = b"x" * (160 << 20)
print("held", len(held) >> 20)
"""
    jobs = [run_job(admin, code, memory=memory)[0] for memory in (96, 320, 320, 96)]
    assert [job["state"] for job in jobs] == ["failed", "succeeded", "succeeded", "failed"], jobs
    assert all("memory limit" in jobs[n]["message"] for n in (0, 3)), jobs


def test_jobs_whose_asks_together_exceed_the_worker_never_wake_the_hosts_oom_killer(
        admin, host):
    """Three jobs, each asking 60 % of the memory the worker offers its jobs and
    touching almost all of it: the worker runs them one at a time (two would not fit
    in the slots' slice), all three succeed, and the kernel logs no OOM kill, neither
    the host's nor a slot's."""
    with host.sudo():
        offered = tomllib.loads(host.file("/etc/jobqueue/worker.toml").content_string)["memory"]
    ask = offered * 6 // 10
    since = host.check_output("date +%s")
    code = f"""
import time
held = b"x" * ({ask} - 48 << 20)
time.sleep(3)
print(len(held) >> 20)
"""
    ids = [submit(admin, {"name": "sixty-percent", "entry": "main.py", "args": [],
                          "walltime": 300, "memory": ask}, [("main.py", code.encode())])
           for _ in range(3)]
    for job_id in ids:
        job = wait(admin, job_id)
        assert job["state"] == "succeeded", job
    with host.sudo():
        kernel = host.run("journalctl -k --no-pager -o cat --since @%s", since.strip()).stdout
    assert "Out of memory" not in kernel and "oom-kill" not in kernel, kernel[-2000:]


def slot_use_logged(host, since: str) -> tuple[int, int, int, int]:
    """KiB used, KiB limit, files, files limit of the last job ended since `since`, as
    its unit's root step measured them."""
    with host.sudo():
        measured = host.check_output(
            "journalctl --no-pager -o cat --since @%s -u 'jobqueue-job@*' "
            "| grep \"the job's files took\" | tail -n 1", since.strip())
    found = re.search(r"took (\d+) KiB of (\d+) and (\d+) files of (\d+)", measured)
    assert found, f"the unit's root step logged no use: {measured!r}"
    return tuple(int(n) for n in found.groups())


def test_the_kernel_holds_a_jobs_files_to_its_output_limit(admin, host):
    """dd into the job's /tmp (which the slot's disk use poll does not look at), then
    into its work directory: the kernel's quota refuses at the output limit plus its
    allowance, so it overshoots the limit by at most 1 MiB, inputs and directories
    included, as the unit's root step measured; the job ends failed at its output
    limit and leaves nothing."""
    since = host.check_output("date +%s")
    job, _ = run_job(admin, """
import subprocess
for target in ("/tmp/fill", "fill"):
    subprocess.run(["dd", "if=/dev/zero", "of=" + target, "bs=64k"])
""", output_limit=8)
    assert job["state"] == "failed" and "output limit" in job["message"], job
    with host.sudo():
        assert host.run("find %s -name fill", SLOTS).stdout.strip() == ""
    used_kib, limit_kib, _, _ = use = slot_use_logged(host, since)
    assert 8 << 10 <= used_kib <= limit_kib <= (9 << 10), use


def test_the_kernel_holds_a_jobs_file_count_to_its_quota(admin, host):
    """Empty files, which take no disk blocks, until the kernel refuses one: the
    project's inode quota (one file per 4 KiB of a 1 MiB output limit, plus 64, plus
    the inputs) stops the job there (EDQUOT), the job ends failed at its output limit,
    and the slot keeps none of the files."""
    since = host.check_output("date +%s")
    job, log = run_job(admin, """
import os
made = 0
try:
    while True:
        os.close(os.open(f"f{made}", os.O_CREAT | os.O_WRONLY, 0o600))
        made += 1
except OSError as exc:
    print(made, exc.errno)
""", output_limit=1)
    assert job["state"] == "failed" and "output limit" in job["message"], (job, log)
    made, errno_seen = (int(n) for n in log["stdout"].split())
    assert errno_seen == errno.EDQUOT, log
    with host.sudo():
        assert host.run("find %s -name f1", SLOTS).stdout.strip() == ""
    _, _, files, files_limit = use = slot_use_logged(host, since)
    assert made < files == files_limit <= 256 + 64 + 16, use


def test_a_job_cannot_move_its_files_out_of_the_slots_quota(admin, host):
    """The owner of a file may change its quota project (FS_IOC_FSSETXATTR) or a
    directory's inheritance of it (also FS_IOC_SETFLAGS): a file moved out of the slot's
    project would no longer count. The job tries both on a file and a directory, then
    writes 32 MiB into them with an 8 MiB output limit; from outside, the slots' file
    system grows by at most the limit and 1 MiB while it runs."""
    def used_kib() -> int:
        return int(host.check_output("df --output=used -k %s | tail -n 1", SLOTS))

    before = used_kib()
    job_id = submit(admin, {"name": "hostile", "entry": "main.py", "walltime": 120,
                            "output_limit": 8}, [("main.py", (PROBE + """
import fcntl, struct, subprocess, time
def move_out(path, request):
    fd = os.open(path, os.O_RDONLY)
    attrs = bytearray(28)
    fcntl.ioctl(fd, 0x801C581F, attrs)  # FS_IOC_FSGETXATTR
    struct.pack_into("I", attrs, 0, struct.unpack_from("I", attrs)[0] & ~0x200)
    struct.pack_into("I", attrs, 12, 0)  # project 0, no inheritance
    flags = struct.pack("l", 0)  # FS_IOC_SETFLAGS: the inheritance flag off too
    return attempt(path, lambda: fcntl.ioctl(fd, request, attrs if request == 0x401C5820
                                                   else flags))
os.mkdir("escaped")
open("escaped-file", "w").close()
found = {f"{path} {request:#x}": move_out(path, request) for path in ("escaped", "escaped-file")
         for request in (0x401C5820, 0x40086602)}
print(json.dumps(found), flush=True)
subprocess.run(["dd", "if=/dev/zero", "of=escaped/fill", "bs=1M", "count=32"])
subprocess.run(["dd", "if=/dev/zero", "of=escaped-file", "bs=1M", "count=32"])
time.sleep(10)
""").encode())])
    grown = 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        grown = max(grown, used_kib() - before)
        if admin.get(f"{admin.base}/jobs/{job_id}", timeout=30).json()["state"] in FINISHED:
            break
        time.sleep(1)
    job = wait(admin, job_id)
    log = admin.get(f"{admin.base}/jobs/{job_id}/log", timeout=30).json()
    assert set(probe_results(log).values()) == {"PermissionError"}, log
    assert job["state"] == "failed" and "output limit" in job["message"], job
    assert grown <= (9 << 10), f"the slots' file system grew by {grown} KiB"


def test_huge_stdout_stops_at_the_output_limit(admin):
    job, _ = run_job(admin, """
import sys
line = "y" * 1023 + "\\n"
while True:
    sys.stdout.write(line)
""", output_limit=4)
    assert job["state"] == "failed" and "output limit" in job["message"], job


def test_an_endless_loop_ends_at_its_wall_time(admin):
    job, _ = run_job(admin, "while True:\n    pass\n", walltime=15)
    assert job["state"] == "timed_out", job


def test_a_daemonised_child_does_not_outlive_its_job(admin, host):
    job, _ = run_job(admin, f"""
import os, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        while True:
            open("/tmp/alive-{NONCE}", "w").write(str(os.getpid()))
            time.sleep(1)
    os._exit(0)
time.sleep(2)
""")
    assert job["state"] == "succeeded", job
    time.sleep(3)
    for user in ("jq-slot1", "jq-slot2"):
        assert not jobs_processes(host, user), f"{user} still runs a process"



# The kernel's keyring calls by number (x86_64, as the VMs): no keyutils in a job.
KEYRINGS = """
import ctypes, errno, json
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
ADD_KEY, KEYCTL = 248, 250
SESSION, USER = -3, -4  # KEY_SPEC_SESSION_KEYRING, KEY_SPEC_USER_KEYRING
SETPERM, LINK, SEARCH, READ = 5, 8, 10, 11
def outcome(result):
    return "ok" if result >= 0 else errno.errorcode[ctypes.get_errno()]
"""


def key_users(host, user: str) -> str:
    """The kernel's count of `user`'s keys (its line of /proc/key-users), or ""."""
    uid = host.user(user).uid
    lines = host.file("/proc/key-users").content_string.splitlines()
    return next((line for line in lines if line.split(":")[0].strip() == str(uid)), "")


def test_a_job_leaves_nothing_in_its_slot_users_keyrings(admin, host):
    """The kernel keeps a user's keyrings after its processes end. A job puts a secret
    in a key and links it into the slot user's keyring, readable by that user; the
    next job in the slot looks for it. Without the slot's filter of keyring calls the
    second job read it."""
    before = [key_users(host, user) for user in ("jq-slot1", "jq-slot2")]
    job, log = run_job(admin, KEYRINGS + f"""
secret = b"{NONCE}"
key = libc.syscall(ADD_KEY, b"user", b"jobqueue-{NONCE}", secret, len(secret), SESSION)
found = {{"add_key": outcome(key)}}
if key >= 0:
    found["setperm"] = outcome(libc.syscall(KEYCTL, SETPERM, key, 0x3f3f0000))
    found["link"] = outcome(libc.syscall(KEYCTL, LINK, key, USER))
print(json.dumps(found))
""")
    assert job["state"] == "succeeded", job
    assert probe_results(log) == {"add_key": "EPERM"}
    job, log = run_job(admin, KEYRINGS + f"""
key = libc.syscall(KEYCTL, SEARCH, USER, b"user", b"jobqueue-{NONCE}", 0)
found = {{"search": outcome(key)}}
if key >= 0:
    value = ctypes.create_string_buffer(256)
    size = libc.syscall(KEYCTL, READ, key, value, 256)
    found["read"] = value.raw[:size].decode() if size >= 0 else outcome(size)
print(json.dumps(found))
""")
    assert job["state"] == "succeeded", job
    assert probe_results(log) == {"search": "EPERM"}
    assert NONCE not in log["stdout"]
    assert [key_users(host, user) for user in ("jq-slot1", "jq-slot2")] == before

def slot_leftovers(host) -> str:
    """Whatever the slot directories hold beyond each slot's empty work/, outbox/ and
    temporary directories, and the worker's FIFO."""
    with host.sudo():
        return host.check_output(
            "find %s -mindepth 2 -regextype posix-extended "
            "! -regex '%s/[0-9]+/(work|outbox|tmp|var-tmp|shm)' "
            "! \\( -regex '%s/[0-9]+/go' -type p -user jobqueue-worker \\) "
            "-printf '%%P\\n' | head -n 20", SLOTS, SLOTS, SLOTS)


def test_a_slot_comes_back_clean_whatever_the_job_left(admin, host, worker_pid):
    """A tree deeper than PATH_MAX (and than Python's recursion limit), a locked
    directory, a FIFO, a hard link, links out of the slot, outbox/status.json made a
    directory, a file in /dev/shm: the slot is empty once the job has ended, nothing
    outside it was touched, and the next ten jobs run normally."""
    tag = uuid.uuid4().hex
    state = worker_state_dir(host)
    since = host.check_output("date +%s")
    job, _ = run_job(admin, f"""
import os
base = os.getcwd()
name = "{tag}" + "d" * 218
for _ in range(17):  # 17 * 251 characters: past PATH_MAX
    os.mkdir(name)
    os.chdir(name)
open("bottom", "w").write("x")
os.chdir(base)
os.mkdir("nest-{tag}")
os.chdir("nest-{tag}")
for _ in range(1200):  # past os.walk's recursion
    os.mkdir("n")
    os.chdir("n")
os.chdir(base)
os.makedirs("locked-{tag}/inner")
open("locked-{tag}/inner/file", "w").write("x")
os.chmod("locked-{tag}/inner", 0)
os.chmod("locked-{tag}", 0)
os.mkfifo("fifo-{tag}")
open("file-{tag}", "w").write("x")
os.link("file-{tag}", "hard-{tag}")
os.symlink("{state}", "worker-{tag}")
os.symlink("/etc/jobqueue", "../outbox/config-{tag}")
os.makedirs("../outbox/status.json/{tag}/deeper")
os.chmod("../outbox/status.json/{tag}", 0)
os.mkfifo("../outbox/fifo-{tag}")
open("/dev/shm/shm-{tag}", "w").write("x")
print("planted")
""")
    assert job["state"] in ("succeeded", "failed"), job
    deadline = time.monotonic() + 60  # the worker empties the outbox after its upload
    while (left := slot_leftovers(host)) and time.monotonic() < deadline:
        time.sleep(2)
    assert left == "", f"the slots still hold:\n{left}"
    with host.sudo():
        found = host.run("find / /dev/shm -xdev -name '*%s*' -not -path '/proc/*'", tag)
        assert found.stdout.strip() == "", found.stdout
        # The links led nowhere: the worker's state and config are whole.
        assert host.file(TOKEN).size > 0
        assert host.file("/etc/jobqueue/worker.toml").size > 0
        assert host.file(state).is_directory
        failed = host.run("journalctl --no-pager -o cat --since @%s -u 'jobqueue-job@*'",
                          since.strip())
    assert "not clean" not in failed.stdout, failed.stdout
    assert "Traceback" not in failed.stdout, failed.stdout  # the slot's own steps coped
    ids = [submit(admin, {"name": f"after-{n}", "entry": "main.py", "walltime": 120},
                  [("main.py", f"print({n} * 2)\n".encode())]) for n in range(10)]
    for n, job_id in enumerate(ids):
        job = wait(admin, job_id)
        log = admin.get(f"{admin.base}/jobs/{job_id}/log", timeout=30).json()
        assert job["state"] == "succeeded" and log["stdout"] == f"{n * 2}\n", (job, log)
        assert job["worker"] == host.backend.get_hostname()
    assert int(host.run("systemctl show -p MainPID --value jobqueue-worker").stdout) == worker_pid


MUNGE_LISTENER = """
import os, socket, sys
sock = socket.socket(socket.AF_UNIX)
sock.bind("/run/munge/munge.socket.2")
os.chmod("/run/munge/munge.socket.2", 0o777)
sock.listen(8)
while True:
    conn, _ = sock.accept()
    with open(sys.argv[1], "a") as log:
        log.write("connected\\n")
    conn.close()
"""


@pytest.fixture()
def munged_and_slurm_conf(host):
    """Something listening on munged's socket, and a Slurm configuration, where a
    Slurm node has them (a worker of the dispatcher has neither): what a job tries."""
    tag = uuid.uuid4().hex
    log = f"/run/hostile-munge-{tag}.log"
    unit = f"hostile-munge-{tag}"
    with host.sudo():
        made = [path for path in ("/run/munge", "/etc/slurm") if not host.file(path).exists]
        host.check_output("mkdir -p -m 0755 /run/munge /etc/slurm")
        if "/etc/slurm" in made:
            host.check_output("echo 'ClusterName=hostile-%s' > /etc/slurm/slurm.conf && "
                              "chmod 0644 /etc/slurm/slurm.conf", tag)
        if "/run/munge" in made:
            host.check_output("systemd-run --unit %s --service-type exec /usr/bin/python3 -c %s %s",
                              unit, MUNGE_LISTENER, log)
            for _ in range(60):
                if host.file("/run/munge/munge.socket.2").is_socket:
                    break
                time.sleep(0.5)
    yield log
    with host.sudo():
        host.run("systemctl stop %s", unit)
        for path in made:
            host.run("rm -rf %s", path)
        host.run("rm -f %s", log)


def test_a_job_reaches_neither_the_journal_nor_munged_nor_slurms_config(
        admin, host, munged_and_slurm_conf):
    mark = f"hostile-journal-{uuid.uuid4().hex}"
    since = host.check_output("date +%s")
    job, log = run_job(admin, PROBE + f"""
import socket, subprocess
MARK = {mark[::-1]!r}[::-1]  # the marker is nowhere in this code as such
def datagram(path, message):
    socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(message.encode(), path)
def stream(path, message):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    sock.sendall(message.encode())
def munge():
    made = subprocess.run(["munge", "-n"], capture_output=True, timeout=30)
    if made.returncode != 0 or not made.stdout:
        raise PermissionError(made.stderr.decode(errors="replace"))
found = {{}}
found["journal socket"] = attempt("native", lambda: datagram(
    "/run/systemd/journal/socket", f"MESSAGE={{MARK}}\\nSYSLOG_IDENTIFIER=sshd\\n"))
found["/dev/log"] = attempt("syslog", lambda: datagram("/dev/log", f"<13>sshd: {{MARK}}"))
found["journal stream"] = attempt("stream", lambda: stream(
    "/run/systemd/journal/stdout", f"sshd\\n\\n6\\n0\\n0\\n0\\n0\\n{{MARK}}\\n"))
found["munge -n"] = attempt("munge", munge)
found["munged socket"] = attempt("munged", lambda: socket.socket(socket.AF_UNIX).connect(
    "/run/munge/munge.socket.2"))
found["slurm.conf"] = attempt("slurm.conf", lambda: open("/etc/slurm/slurm.conf").read())
print(open("/proc/self/cgroup").read().strip(), flush=True)
print(json.dumps(found))
""")
    assert job["state"] == "succeeded", (job, log)
    found = probe_results(log)
    assert all(outcome != "ok" for outcome in found.values()), found
    # Its output went to its own log (the job's stdout still works), in the jobs' slice.
    assert "/jobqueue-jobs.slice/jobqueue-job@" in log["stdout"], log["stdout"]
    with host.sudo():
        assert "connected" not in host.run("cat %s", munged_and_slurm_conf).stdout
        # What the host logs now does reach the journal: the check below can see.
        control = f"hostile-control-{uuid.uuid4().hex}"
        host.check_output("logger -t hostile-test %s", control)
        deadline = time.monotonic() + 30
        while control not in (journal := host.run(
                "journalctl --no-pager -o cat --since @%s", since.strip()).stdout):
            assert time.monotonic() < deadline, "the host's own message never reached the journal"
            time.sleep(1)
    assert mark not in journal


def test_after_all_that_the_worker_is_the_same_and_runs_the_next_job(admin, host, worker_pid):
    assert host.service("jobqueue-worker").is_running
    assert int(host.run("systemctl show -p MainPID --value jobqueue-worker").stdout) == worker_pid
    job, log = run_job(admin, "print(sum(range(10)))\n")
    assert job["state"] == "succeeded" and log["stdout"] == "45\n", (job, log)
