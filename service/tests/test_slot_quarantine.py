"""A slot whose unit fails before its job starts (its root wipe could not clean it) is
set aside for good: the job goes back, the worker claims for one job fewer, and the
start-up canary runs in another slot. systemd is played by a fake of the worker's bus
client here; the unit and its wipe are tested on the VMs (tests/worker)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from jobqueue.worker import systemd_runner
from jobqueue.worker.runner import Limits, RunRequest
from jobqueue.worker.settings import WorkerSettings
from jobqueue.worker.systemd_bus import JobCanceled
from jobqueue.worker.systemd_runner import SlotBroken, SystemdError, SystemdRunner


class FakeSystemd:
    """Units that start and end at once with the canary's findings, except those in
    `broken`, which fail as a failing ExecStartPre makes them fail."""

    def __init__(self, slots_dir: Path, broken: set[int], answers: bool = True):
        self.slots_dir, self.broken, self.answers = slots_dir, broken, answers
        self.begun: list[str] = []  # the unit of each start job
        self.started: list[int] = []  # the slot of each job that started
        self.failed: set[int] = set()
        self.output_limits: list[int] = []  # what each start's root step read
        self.quota_refuses = False  # the root step finds the job's quota reached
        self.stale: set[int] = set()  # slots whose next go finds their sandbox stale

    def slot(self, unit: str) -> int:
        return int(unit.split("@")[1].split(".")[0])

    def begin_start(self, unit: str, mode: str = "replace") -> str:
        if not self.answers:
            raise SystemdError("StartUnit: systemd's bus: timed out")
        self.begun.append(unit)
        return f"job-{len(self.begun)}"

    def wait_job(self, job: str, what: str) -> None:
        """The start's end: the job starts once the worker has said go."""
        unit = self.begun[int(job.split("-")[1]) - 1]
        slot = self.slot(unit)
        if slot in self.broken:
            self.failed.add(slot)
            raise SystemdError(f"{what}: failed")
        if slot in self.stale:  # a masked path made since the unit started: it fails once
            self.stale.discard(slot)
            self.failed.add(slot)
            (self.slots_dir / str(slot) / "sandbox-stale").touch()
            raise SystemdError(f"{what}: failed")
        self.failed.discard(slot)
        slot_dir = self.slots_dir / str(slot)
        go = os.open(slot_dir / "go", os.O_RDONLY | os.O_NONBLOCK)
        try:
            assert os.read(go, 16) == b"go\n", "the worker said no go"
        finally:
            os.close(go)
        self.started.append(slot)
        self.output_limits.append(int((slot_dir / "output-limit").read_text()))
        if self.quota_refuses:
            (slot_dir / "output-limit-reached").touch()
        (slot_dir / "outbox" / "stdout").write_text(
            json.dumps({"secret": "PermissionError", "network": "OSError"}))

    def set_limits(self, unit: str, memory_bytes: int, cpus: float) -> None:
        pass

    def stop(self, unit: str, wait: bool = True) -> None:
        pass

    def reset_failed(self, unit: str) -> None:
        self.failed.discard(self.slot(unit))

    def changes(self, unit: str) -> int:
        return 0

    def wait_change(self, unit: str, seen: int, timeout: float) -> None:
        raise AssertionError("the fake's units end at once: nothing to wait for")

    def state(self, unit: str, names: tuple[str, ...]) -> dict[str, str]:
        if self.slot(unit) in self.failed:
            state = {"ActiveState": "failed", "Result": "exit-code"}
        else:
            state = self.ended()
        return {name: state.get(name, "") for name in names}

    def ended(self) -> dict[str, str]:
        return {"ActiveState": "inactive", "Result": "success", "ExecMainCode": "1",
                "ExecMainStatus": "0"}


@pytest.fixture
def runner(tmp_path, monkeypatch):
    def make(broken: set[int], answers: bool = True) -> tuple[SystemdRunner, FakeSystemd]:
        for slot in (1, 2, 3):
            for part in ("work", "outbox"):
                (tmp_path / str(slot) / part).mkdir(parents=True, exist_ok=True)
        fake = FakeSystemd(tmp_path, broken, answers)
        monkeypatch.setattr(systemd_runner.slot_files, "open_regular",
                            lambda path, uid: open(path, "rb"))
        monkeypatch.setattr(SystemdRunner, "uid", lambda self, slot: 0)
        settings = WorkerSettings(token="t", runner="systemd", slots=3,
                                  slots_dir=str(tmp_path), controller_url="https://c:443")
        slots = SystemdRunner(settings)
        slots.systemd = fake
        return slots, fake
    return make


def request(workspace, tmp_path) -> RunRequest:
    return RunRequest("job", workspace.job_dir, ["true"], Limits(60, 60, 64 << 20),
                      tmp_path / "out", tmp_path / "err", {}, output_limit=1 << 20)


def test_a_slot_that_fails_to_start_is_set_aside_and_the_others_go_on(runner, tmp_path):
    slots, fake = runner({1})
    workspace = slots.workspace("job-a")
    assert workspace.slot == 1
    with pytest.raises(SlotBroken, match="slot 1"):
        workspace.start(request(workspace, tmp_path))
    workspace.close()
    assert slots.capacity == 2 and set(slots.quarantined) == {1} and slots.set_aside() == 1
    taken = [slots.workspace(f"job-{n}") for n in range(2)]
    assert [w.slot for w in taken] == [2, 3]
    for w in taken:
        w.close()
    assert slots.free == [2, 3]


def test_systemd_not_answering_sets_no_slot_aside(runner, tmp_path):
    slots, _ = runner(set(), answers=False)
    workspace = slots.workspace("job")
    with pytest.raises(SystemdError) as raised:
        workspace.start(request(workspace, tmp_path))
    assert not isinstance(raised.value, SlotBroken)
    workspace.close()
    assert slots.capacity == 3 and slots.quarantined == {} and slots.free == [1, 2, 3]


def test_the_canary_runs_in_the_first_slot_that_starts(runner):
    slots, fake = runner({1, 2})
    slots.self_check()
    assert fake.started == [3] and set(slots.quarantined) == {1, 2} and slots.capacity == 1


def test_with_every_slot_broken_the_worker_refuses_to_start(runner):
    slots, _ = runner({1, 2, 3})
    with pytest.raises(RuntimeError, match="no free job slot"):
        slots.self_check()


def test_the_output_limit_goes_to_the_units_root_step_and_its_verdict_comes_back(runner, tmp_path):
    slots, fake = runner(set())
    for refused, expected in ((False, None), (True, "output")):
        fake.quota_refuses = refused
        workspace = slots.workspace("job")
        job = request(workspace, tmp_path)
        workspace.start(job).wait(10)
        assert workspace.collect(job, tmp_path / "results").limit == expected
        workspace.close()
        assert not any((workspace.slot_dir / name).exists()
                       for name in ("output-limit", "output-limit-reached"))
    assert fake.output_limits == [1 << 20, 1 << 20]


def test_the_exit_code_comes_from_the_root_steps_record_when_systemd_forgot_the_unit(
        runner, tmp_path, monkeypatch):
    """systemd unloads an inactive unit: `show` then says ExecMainCode=0; the unit's root
    step wrote systemd's $EXIT_CODE, $EXIT_STATUS and $SERVICE_RESULT to exit."""
    slots, fake = runner(set())
    monkeypatch.setattr(fake, "ended", lambda: {
        "ActiveState": "inactive", "Result": "success", "ExecMainCode": "0",
        "ExecMainStatus": "0"})
    for record, code, limit in (("exited 3 exit-code", 3, None), ("killed KILL oom-kill", -9,
                                                                  "memory"),
                                ("exited 0 success", 0, None)):
        workspace = slots.workspace("job")
        job = request(workspace, tmp_path)
        process = workspace.start(job)
        (workspace.slot_dir / "exit").write_text(record + "\n")
        assert process.wait(10) == code, record
        assert workspace.collect(job, tmp_path / "results").limit == limit
        workspace.close()
        assert not (workspace.slot_dir / "exit").exists()


def test_a_slot_is_started_ahead_of_its_next_job_once_its_unit_has_ended(runner, tmp_path):
    slots, fake = runner(set())
    slots.self_check()  # the canary's slot, then every free one
    assert fake.started == [1] and sorted(slots.armed) == [1, 2, 3] and len(fake.begun) == 4
    workspace = slots.workspace("job")
    workspace.start(request(workspace, tmp_path)).wait(10)
    assert fake.started == [1, 1] and len(fake.begun) == 4  # the job took the armed start
    workspace.close()
    assert sorted(slots.armed) == [1, 2, 3] and len(fake.begun) == 5
    # A unit not seen to end still holds its job: a start would start nothing.
    workspace = slots.workspace("job")
    workspace.start(request(workspace, tmp_path))
    workspace.close()
    assert 1 not in slots.armed and len(fake.begun) == 5
    # Started with its job instead.
    workspace = slots.workspace("job")
    workspace.start(request(workspace, tmp_path)).wait(10)
    assert fake.started[-1] == 1 and len(fake.begun) == 6


def test_a_slot_whose_sandbox_is_stale_at_go_starts_again_and_is_not_set_aside(runner, tmp_path):
    slots, fake = runner(set())
    slots.self_check()
    fake.stale.add(1)
    workspace = slots.workspace("job")
    assert workspace.slot == 1
    assert workspace.start(request(workspace, tmp_path)).wait(10) == 0
    assert fake.started == [1, 1] and len(fake.begun) == 5  # the armed start, then one more
    assert slots.quarantined == {}


def test_the_wall_time_outlives_systemd_unloading_the_stopped_unit(runner, tmp_path, monkeypatch):
    """systemd unloads a unit that stopped cleanly at once, its times with it: they are
    read while its stop step runs, else the worker's own view is what is recorded."""
    slots, fake = runner(set())
    forgotten = {"ActiveState": "inactive", "ActiveEnterTimestampMonotonic": "0",
                 "ExecMainExitTimestampMonotonic": "0"}
    stopping = {"ActiveState": "deactivating", "ActiveEnterTimestampMonotonic": "5000000",
                "ExecMainExitTimestampMonotonic": "7250000"}
    for seen, wall in (([stopping, forgotten], 2.25), ([forgotten], None)):
        states = iter(seen)
        current = {}

        def state(unit, names, states=states, current=current):
            if "ActiveState" in names:  # each look at the unit sees its next state
                current.update(next(states))
            return {name: current.get(name, "") for name in names}

        monkeypatch.setattr(fake, "state", state)
        monkeypatch.setattr(fake, "wait_change", lambda unit, seen, timeout: None)
        workspace = slots.workspace("job")
        process = workspace.start(request(workspace, tmp_path))
        process.wait(10)
        recorded = process.usage().wall_seconds
        workspace.close()
        if wall is None:  # from the end of the start to the end seen: this test's moment
            assert recorded is not None and 0 <= recorded < 5
        else:
            assert recorded == wall


def test_a_late_stop_of_a_job_whose_end_was_seen_leaves_its_slot_readied(runner, tmp_path):
    slots, fake = runner(set())
    slots.self_check()
    stopped = []
    fake.stop = lambda unit, wait=True: stopped.append(unit)
    workspace = slots.workspace("job")
    job = request(workspace, tmp_path)
    process = workspace.start(job)
    assert process.wait(10) == 0
    workspace.collect(job, tmp_path / "results")
    assert workspace.slot in slots.armed  # readied while the results go up
    process.kill(0)  # the job's lease lost as its results went up
    assert stopped == [] and workspace.slot in slots.armed


def test_a_start_canceled_by_a_stop_from_outside_sets_no_slot_aside(runner, tmp_path):
    slots, fake = runner(set())
    slots.self_check()

    def canceled(job, what):
        raise JobCanceled(f"{what}: canceled")

    fake.wait_job = canceled
    workspace = slots.workspace("job")
    with pytest.raises(JobCanceled):
        workspace.start(request(workspace, tmp_path))
    workspace.close()
    assert slots.quarantined == {}
