"""Per-attempt accounting: what a job used (CPU time, peak memory, wall time, the signal
that ended it), measured by its worker, checked and stored by the controller, shown in
the job's JSON and by `jobqueue status`."""

from __future__ import annotations

import io
import json
import signal

import pytest

from jobqueue.worker import cgroup
from jobqueue.worker.systemd_runner import slot_usage
from test_e2e import jobqueue

FIELDS = {"cpu_seconds", "peak_memory", "wall_seconds", "signal"}


def upload(stack, job_id: str, lease: str, accounting, state: str = "succeeded",
           exit_code: int = 0):
    status = {"lease": lease, "state": state, "exit_code": exit_code, "message": ""}
    if accounting is not None:
        status["accounting"] = accounting
    text = accounting if isinstance(accounting, str) else json.dumps(status)
    if isinstance(accounting, str):  # raw JSON text, for what json.dumps cannot write
        text = json.dumps(status | {"accounting": None}).replace('"accounting": null',
                                                                   f'"accounting": {accounting}')
    data = {"status": text, "stdout": (io.BytesIO(b""), "stdout"),
            "stderr": (io.BytesIO(b""), "stderr")}
    return stack.http.post(f"/api/v1/worker/jobs/{job_id}/result", data=data,
                           headers=stack.headers("w1"), content_type="multipart/form-data")


def test_the_workers_accounting_is_stored_and_shown(stack):
    job = stack.submit_ok()["id"]
    lease = stack.claim_ok()["lease"]
    assert stack.job(job)["accounting"] == dict.fromkeys(FIELDS)
    used = {"cpu_seconds": 1.25, "peak_memory": 104857600, "wall_seconds": 2.5, "signal": 9}
    response = upload(stack, job, lease, used, state="failed", exit_code=-9)
    assert response.status_code == 200, response.get_json()
    assert stack.job(job)["accounting"] == used
    listed = stack.jobs()[0]
    assert listed["id"] == job and listed["accounting"] == used


def test_a_result_without_accounting_has_nulls(stack):
    job = stack.submit_ok()["id"]
    lease = stack.claim_ok()["lease"]
    assert upload(stack, job, lease, None).status_code == 200
    assert stack.job(job)["accounting"] == dict.fromkeys(FIELDS)


@pytest.mark.parametrize("accounting", [
    "1e400",  # not an object
    '{"cpu_seconds": 1e400}',  # json.loads makes this infinity
    '{"cpu_seconds": -1}',
    '{"cpu_seconds": "1.5"}',
    '{"wall_seconds": true}',
    '{"wall_seconds": 1e20}',
    '{"peak_memory": 1.5}',
    '{"peak_memory": -1}',
    '{"peak_memory": 9223372036854775808}',
    '{"signal": 0}',
    '{"signal": 300}',
    '{"exit": 1}',  # an unknown field
    "[]",
])
def test_bad_accounting_is_400_and_changes_nothing(stack, accounting):
    job = stack.submit_ok()["id"]
    lease = stack.claim_ok()["lease"]
    response = upload(stack, job, lease, accounting)
    assert response.status_code == 400, response.get_data()
    body = response.get_json()
    assert body["error"] == "bad_request" and "accounting" in body["message"]
    assert stack.job(job)["state"] == "running"
    assert upload(stack, job, lease, {"cpu_seconds": 0.5}).status_code == 200


CPU_AND_MEMORY = """\
import time
block = b"x" * (100 << 20)  # written, so resident
start = time.process_time()
while time.process_time() - start < 1.0:
    pass
print(len(block))
"""


def test_a_real_job_reports_its_cpu_time_peak_memory_and_wall_time(cluster):
    c = cluster()
    c.start_worker("w1", cpus=2)
    busy = c.submit(CPU_AND_MEMORY)
    idle = c.submit("import time\ntime.sleep(1.5)\n")
    killed = c.submit("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n")
    job = c.client.wait(busy, timeout=60, interval=0.2)
    assert job["state"] == "succeeded", c.logs()
    used = job["accounting"]
    assert set(used) == FIELDS
    assert used["cpu_seconds"] >= 0.5 and used["peak_memory"] >= 80 << 20, used
    assert used["wall_seconds"] >= 0.5 and used["signal"] is None
    job = c.client.wait(idle, timeout=60, interval=0.2)
    used = job["accounting"]
    assert used["cpu_seconds"] < 0.5 and used["wall_seconds"] >= 1.5, used
    assert used["peak_memory"] < 80 << 20
    job = c.client.wait(killed, timeout=60, interval=0.2)
    assert (job["state"], job["exit_code"]) == ("failed", -9)
    assert job["accounting"]["signal"] == signal.SIGKILL

    shown = jobqueue(c, "status", busy)
    assert shown.returncode == 0, shown.stderr
    lines = dict(line.split(":", 1) for line in shown.stdout.splitlines())
    assert lines["cpu_time"].strip().endswith(" s") and float(lines["cpu_time"].split()[0]) >= 0.5
    assert lines["peak_memory"].strip().endswith("MiB")
    assert lines["wall_time"].strip().startswith("00:00:0")
    assert lines["exit_code"].strip() == "0" and lines["limit"].strip() == ""
    assert "9 (SIGKILL)" in jobqueue(c, "status", killed).stdout
    as_json = json.loads(jobqueue(c, "status", busy, "--json").stdout)
    assert as_json["accounting"]["cpu_seconds"] >= 0.5


# -- the systemd runner's sources, without systemd ---------------------------------------


def test_cpu_stat_and_proc_cgroup_are_parsed(tmp_path):
    text = "usage_usec 1523401\nuser_usec 1200000\nsystem_usec 323401\nnr_periods 0\n"
    assert cgroup.parse_cpu_stat(text) == 1523401
    assert cgroup.parse_cpu_stat("user_usec 5\n") is None
    assert cgroup.parse_cpu_stat(None) is None
    unit = tmp_path / "system.slice" / "jobqueue-job@1.service"
    unit.mkdir(parents=True)
    assert cgroup.own("0::/system.slice/jobqueue-job@1.service\n", tmp_path) == unit
    assert cgroup.own("4:memory:/x\n1:cpu:/\n", tmp_path) is None  # cgroup v1 only
    assert cgroup.path_of("", tmp_path) is None
    assert cgroup.path_of("/system.slice/../../etc", tmp_path) is None
    (unit / "cpu.stat").write_text(text)
    (unit / "memory.current").write_text("4096\n")
    assert cgroup.cpu_usec(unit) == 1523401
    assert cgroup.memory_peak(unit) == 4096  # no memory.peak (before Linux 5.19)
    (unit / "memory.peak").write_text("104857600\n")
    assert cgroup.memory_peak(unit) == 104857600
    assert cgroup.memory_peak(tmp_path / "gone") is None


# An ended unit's properties, as the worker reads them from systemd.
ENDED = {"ActiveState": "inactive", "Result": "success", "ExecMainCode": "1",
         "ExecMainStatus": "0", "ControlGroup": "", "CPUUsageNSec": "1523401000",
         "ActiveEnterTimestampMonotonic": "5000000",
         "ExecMainExitTimestampMonotonic": "7500000"}
NOT_SET = str((1 << 64) - 1)  # systemd's "unknown"


def test_a_slot_units_usage_comes_from_systemd_and_its_cgroup():
    state = ENDED
    usage = slot_usage(state, sampled_peak=50 << 20, sampled_cpu_usec=1_000_000,
                       reported_peak=100 << 20, memory_limit=1 << 30)
    assert (usage.cpu_seconds, usage.peak_memory, usage.wall_seconds) == \
        (1.523401, 100 << 20, 2.5)
    # No CPUUsageNSec (accounting off): the last cpu.stat read; a report over the
    # memory limit is capped at it, one below what the worker saw does not lower it.
    state = ENDED | {"CPUUsageNSec": NOT_SET}
    usage = slot_usage(state, 50 << 20, 1_000_000, 1 << 40, memory_limit=1 << 30)
    assert (usage.cpu_seconds, usage.peak_memory) == (1.0, 1 << 30)
    assert slot_usage(state, 50 << 20, None, 1 << 10, 1 << 30).peak_memory == 50 << 20
    # Nothing known: nulls, and a report that is not a number is ignored.
    state = {"ActiveState": "failed", "CPUUsageNSec": NOT_SET,
             "ActiveEnterTimestampMonotonic": "0"}
    usage = slot_usage(state, None, None, "lots", 1 << 30)
    assert (usage.cpu_seconds, usage.peak_memory, usage.wall_seconds) == (None, None, None)
