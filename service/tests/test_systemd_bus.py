"""The worker's systemd client over a real D-Bus daemon (a bus of the test's own), with
a small stand-in for systemd's manager: the calls the worker makes, the signals it waits
on, the errors it reports. systemd itself answers it on the VMs (tests/worker)."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time

import pytest
from jeepney import DBusAddress, HeaderFields, MessageType, new_error, new_method_return, new_signal
from jeepney.bus_messages import message_bus
from jeepney.io.blocking import open_dbus_connection

from jobqueue.worker.systemd_bus import MANAGER, PROPERTIES, SYSTEMD, Systemd, SystemdError

pytestmark = pytest.mark.skipif(shutil.which("dbus-daemon") is None,
                                reason="dbus-daemon is not installed")

UNIT = "jobqueue-job@1.service"
BROKEN = "jobqueue-job@2.service"  # its start fails, as a failing ExecStartPre makes it


@pytest.fixture
def bus(tmp_path):
    daemon = subprocess.Popen(
        ["dbus-daemon", "--session", "--nofork", "--nopidfile",
         f"--address=unix:path={tmp_path}/bus", "--print-address=1"],
        stdout=subprocess.PIPE, text=True)
    address = daemon.stdout.readline().strip()
    yield address
    daemon.terminate()
    daemon.wait(10)


@pytest.fixture
def manager(bus):
    return Manager(bus)


@pytest.fixture
def systemd(bus):
    client = Systemd(10, bus=bus)
    yield client
    client.close()


class Manager:
    """Units that are active once started and inactive once stopped; a start ends with
    JobRemoved *before* its reply when `signal_first` (systemd may do either)."""

    def __init__(self, address: str):
        self.conn = open_dbus_connection(address)
        self.conn.send_and_get_reply(message_bus.RequestName(SYSTEMD))
        self.active: dict[str, str] = {}
        self.limits: dict[str, dict[str, int]] = {}  # unit -> the limits set on it
        self.calls: list[str] = []
        self.signal_first = False
        self.jobs = 0
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self) -> None:
        while True:
            try:
                msg = self.conn.receive()
            except OSError:
                return
            if msg.header.message_type == MessageType.method_call:
                self.answer(msg)

    def unit_changed(self, unit: str, state: str, interface: str = f"{SYSTEMD}.Unit") -> None:
        self.active[unit] = state
        self.conn.send(new_signal(DBusAddress(Systemd.unit_path(unit), interface=PROPERTIES),
                                  "PropertiesChanged", "sa{sv}as",
                                  (interface, {"ActiveState": ("s", state)}, [])))

    def answer(self, msg) -> None:
        member = msg.header.fields[HeaderFields.member]
        self.calls.append(member)
        if member in ("StartUnit", "StopUnit"):
            unit, _ = msg.body
            self.jobs += 1
            job = f"/org/freedesktop/systemd1/job/{self.jobs}"
            result = "failed" if unit == BROKEN and member == "StartUnit" else "done"
            ended = new_signal(MANAGER, "JobRemoved", "uoss", (self.jobs, job, unit, result))
            state = "active" if member == "StartUnit" and result == "done" else "failed" \
                if result == "failed" else "inactive"
            if self.signal_first:
                self.unit_changed(unit, state)
                self.conn.send(ended)
            self.conn.send(new_method_return(msg, "o", (job,)))
            if not self.signal_first:
                self.unit_changed(unit, state)
                self.conn.send(ended)
        elif member == "SetUnitProperties":
            unit, _, properties = msg.body
            self.limits.setdefault(unit, {}).update(
                (name, value) for name, (_, value) in properties)
            self.conn.send(new_method_return(msg))
        elif member == "Get":
            path = msg.header.fields[HeaderFields.path]
            unit = next((u for u in self.active | self.limits if Systemd.unit_path(u) == path),
                        None)
            name = msg.body[1]
            if name == "ActiveState":
                value = ("s", self.active.get(unit, "inactive"))
            elif name in ("MemoryMax", "MemorySwapMax", "CPUQuotaPerSecUSec"):
                value = ("t", self.limits.get(unit, {}).get(name, (1 << 64) - 1))  # infinity
            else:
                value = ("i", 0)
            self.conn.send(new_method_return(msg, "v", (value,)))
        elif member == "ResetFailedUnit" and msg.body[0] not in self.active:
            self.conn.send(new_error(msg, "org.freedesktop.systemd1.NoSuchUnit", "s",
                                     (f"Unit {msg.body[0]} not loaded.",)))
        else:  # Subscribe, ResetFailedUnit
            self.conn.send(new_method_return(msg))


def test_unit_paths_are_systemds_escaping_of_the_names():
    assert Systemd.unit_path("jobqueue-job@1.service") == \
        "/org/freedesktop/systemd1/unit/jobqueue_2djob_401_2eservice"
    assert Systemd.unit_path("1x_y.slice") == "/org/freedesktop/systemd1/unit/_31x_5fy_2eslice"


def test_start_limit_read_and_stop_over_one_connection(manager, systemd):
    assert systemd.set_limits(UNIT, 256 << 20, 2) == \
        ["MemoryMax", "MemorySwapMax", "CPUQuotaPerSecUSec"]
    assert manager.limits[UNIT] == {"MemoryMax": 256 << 20, "MemorySwapMax": 0,
                                    "CPUQuotaPerSecUSec": 2_000_000}
    for signal_first in (False, True):  # the job's end before or after the reply
        manager.signal_first = signal_first
        systemd.start(UNIT, mode="fail")
        assert systemd.state(UNIT, ("ActiveState", "ExecMainStatus")) == \
            {"ActiveState": "active", "ExecMainStatus": "0"}
        systemd.stop(UNIT)
        assert systemd.state(UNIT, ("ActiveState",)) == {"ActiveState": "inactive"}
    assert manager.calls.count("Subscribe") == 1


def test_limits_the_unit_has_already_are_not_set_again(manager, systemd):
    systemd.set_limits(UNIT, 256 << 20, 2)
    assert systemd.set_limits(UNIT, 256 << 20, 2) == []
    assert manager.calls.count("SetUnitProperties") == 1
    # Whatever changed them since (an admin's set-property), the unit gets what is asked.
    manager.limits[UNIT]["CPUQuotaPerSecUSec"] = 500_000
    assert systemd.set_limits(UNIT, 128 << 20, 2) == ["MemoryMax", "CPUQuotaPerSecUSec"]
    assert manager.limits[UNIT] == {"MemoryMax": 128 << 20, "MemorySwapMax": 0,
                                    "CPUQuotaPerSecUSec": 2_000_000}
    assert manager.calls.count("SetUnitProperties") == 2


def test_a_failed_start_and_an_error_reply_say_what_failed(manager, systemd):
    with pytest.raises(SystemdError, match=f"StartUnit {BROKEN}: failed"):
        systemd.start(BROKEN)
    with pytest.raises(SystemdError, match="NoSuchUnit: Unit nothing.service not loaded"):
        systemd.reset_failed("nothing.service")
    assert manager.active[BROKEN] == "failed"


def test_a_waiter_wakes_on_the_units_change_not_at_its_timeout(manager, systemd):
    systemd.start(UNIT)
    seen = systemd.changes(UNIT)
    threading.Timer(0.3, manager.unit_changed, (UNIT, "inactive")).start()
    began = time.monotonic()
    systemd.wait_change(UNIT, seen, timeout=8)
    assert time.monotonic() - began < 5
    assert systemd.changes(UNIT) > seen
    # Nothing changes: the wait ends at its timeout.
    began = time.monotonic()
    systemd.wait_change(UNIT, systemd.changes(UNIT), timeout=0.5)
    assert time.monotonic() - began >= 0.5
    # The unit's Service properties change with its state, in larger signals: the bus
    # does not send them to the worker at all.
    seen = systemd.changes(UNIT)
    manager.unit_changed(UNIT, "inactive", f"{SYSTEMD}.Service")
    manager.unit_changed(UNIT, "inactive")
    systemd.wait_change(UNIT, seen, timeout=8)
    time.sleep(0.2)
    assert systemd.changes(UNIT) == seen + 1


def test_a_lost_bus_is_an_error_and_the_next_call_connects_again(tmp_path):
    address = f"unix:path={tmp_path}/bus"
    for attempt in range(2):
        daemon = subprocess.Popen(["dbus-daemon", "--session", "--nofork", "--nopidfile",
                                   f"--address={address}", "--print-address=1"],
                                  stdout=subprocess.PIPE, text=True)
        daemon.stdout.readline()
        Manager(address)
        if attempt == 0:
            systemd = Systemd(5, bus=address)
            systemd.start(UNIT)
            daemon.terminate()
            daemon.wait(10)
            with pytest.raises(SystemdError, match="systemd's bus"):
                systemd.start(UNIT)
            (tmp_path / "bus").unlink(missing_ok=True)
        else:
            try:
                systemd.start(UNIT)
                assert systemd.state(UNIT, ("ActiveState",)) == {"ActiveState": "active"}
            finally:
                systemd.close()
                daemon.terminate()
                daemon.wait(10)
