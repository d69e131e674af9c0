"""systemd's manager over one D-Bus connection: start, stop, reset and limit units, read
their state, and wait for a unit's change on systemd's own signals.

A `systemctl` process per step costs a Python-free but whole process start, its own
bus connection and polkit check; on a worker under emulation each took 0.1 to 0.3 s of
the one CPU the job runs on, and waiting for a job's end took one every second. Here
the worker keeps one connection (jeepney: pure Python, no C extension or GLib loop to
build on a worker, thread-safe through its router) and sleeps until systemd says a unit
changed. The same methods `systemctl` calls, so the same polkit rule allows them.
"""

from __future__ import annotations

import collections
import threading
from queue import Queue

from jeepney import DBusAddress, HeaderFields, MatchRule, new_method_call
from jeepney.bus_messages import message_bus
from jeepney.io.threading import DBusRouter, RouterClosed, open_dbus_connection
from jeepney.wrappers import DBusErrorResponse, unwrap_msg

SYSTEMD = "org.freedesktop.systemd1"
MANAGER = DBusAddress("/org/freedesktop/systemd1", SYSTEMD, f"{SYSTEMD}.Manager")
UNITS_PATH = "/org/freedesktop/systemd1/unit"
PROPERTIES = "org.freedesktop.DBus.Properties"
JOBS_REMEMBERED = 1024  # ended jobs kept for a waiter whose start reply came after the end

# The properties the worker reads, by the interface that holds them.
INTERFACE_OF = {"ActiveState": f"{SYSTEMD}.Unit",
                "ActiveEnterTimestampMonotonic": f"{SYSTEMD}.Unit"}
SERVICE = f"{SYSTEMD}.Service"


class SystemdError(RuntimeError):
    pass


class JobCanceled(SystemdError):
    """A job systemd dropped for another (a stop of its unit replaced a start)."""


class Systemd:
    """One connection to `bus` (the system bus, or a D-Bus address), opened on first use
    and again after it is lost; every call is bounded by `timeout` seconds."""

    def __init__(self, timeout: float, bus: str = "SYSTEM"):
        self.timeout, self.bus = timeout, bus
        self._lock = threading.Lock()
        self._router: DBusRouter | None = None
        self._signals: Queue | None = None
        self._changed = threading.Condition()
        self._ended_jobs: collections.OrderedDict[str, str] = collections.OrderedDict()
        # Signalled changes of the units someone asked `changes` about (unit path ->
        # count): systemd signals every unit's, a new session scope's included.
        self._changes: dict[str, int] = {}

    # -- the connection --------------------------------------------------------------

    def _connect(self) -> DBusRouter:
        with self._lock:
            if self._router is not None:
                return self._router
            router = None
            try:
                router = DBusRouter(open_dbus_connection(self.bus, auth_timeout=self.timeout))
                signals: Queue = Queue()
                # Every signal systemd sends this connection goes to one queue: filters
                # added and removed per call would race the router's receiving thread.
                router.filter(MatchRule(type="signal"), queue=signals)
                # A unit's state is in its Unit interface's properties: the changes of
                # its Service interface (large, and several per start) are never sent
                # here, to be parsed for nothing.
                unit_changes = MatchRule(type="signal", sender=SYSTEMD, interface=PROPERTIES,
                                         member="PropertiesChanged", path_namespace=UNITS_PATH)
                unit_changes.add_arg_condition(0, INTERFACE_OF["ActiveState"])
                for rule in (MatchRule(type="signal", sender=SYSTEMD, interface=MANAGER.interface,
                                       member="JobRemoved"), unit_changes):
                    unwrap_msg(router.send_and_get_reply(message_bus.AddMatch(rule),
                                                         timeout=self.timeout))
                # systemd sends its signals only once a client subscribed.
                unwrap_msg(router.send_and_get_reply(new_method_call(MANAGER, "Subscribe"),
                                                     timeout=self.timeout))
            except (OSError, TimeoutError, DBusErrorResponse) as exc:
                if router is not None:  # connected, but the matches or Subscribe failed
                    router.close()
                    router.conn.close()
                raise SystemdError(f"systemd's bus: {exc}") from None
            threading.Thread(target=self._note_signals, args=(signals,), daemon=True,
                             name="systemd-signals").start()
            self._router, self._signals = router, signals
            return router

    def _drop(self) -> None:
        with self._lock:
            router, signals, self._router, self._signals = self._router, self._signals, None, None
        if signals is not None:
            signals.put(None)  # ends that connection's _note_signals
        if router is not None:
            router.close()
            router.conn.close()

    def close(self) -> None:
        self._drop()

    def _note_signals(self, signals: Queue) -> None:
        while (message := signals.get()) is not None:
            member = message.header.fields.get(HeaderFields.member)
            with self._changed:
                if member == "JobRemoved":
                    _, job, _, result = message.body
                    self._ended_jobs[job] = result
                    while len(self._ended_jobs) > JOBS_REMEMBERED:
                        self._ended_jobs.popitem(last=False)
                elif member == "PropertiesChanged" and \
                        (path := message.header.fields.get(HeaderFields.path)) in self._changes:
                    self._changes[path] += 1
                self._changed.notify_all()

    def _call(self, address: DBusAddress, method: str, signature: str | None = None,
              body: tuple = ()) -> tuple:
        router = self._connect()
        try:
            reply = router.send_and_get_reply(
                new_method_call(address, method, signature, body), timeout=self.timeout)
            return unwrap_msg(reply)
        except DBusErrorResponse as exc:
            raise SystemdError(f"{method} {body[0] if body else ''}: {exc.name}: "
                               f"{' '.join(map(str, exc.data))}") from None
        except (OSError, TimeoutError, RouterClosed) as exc:
            self._drop()
            raise SystemdError(f"{method}: systemd's bus: {exc or type(exc).__name__}") from None

    # -- units -----------------------------------------------------------------------

    @staticmethod
    def unit_path(unit: str) -> str:
        """The unit's object path (systemd's escaping of its name); systemd loads the unit
        when this path is asked for, also after it forgot an inactive one."""
        return f"{UNITS_PATH}/" + "".join(
            c if c.isascii() and (c.isalpha() or (c.isdigit() and i)) else f"_{ord(c):02x}"
            for i, c in enumerate(unit))

    def state(self, unit: str, names: tuple[str, ...]) -> dict[str, str]:
        """Those properties of the unit, as `systemctl show` prints them."""
        address = DBusAddress(self.unit_path(unit), SYSTEMD, PROPERTIES)
        state = {}
        for name in names:
            (_, value), = self._call(address, "Get", "ss", (INTERFACE_OF.get(name, SERVICE), name))
            state[name] = str(value)
        return state

    def changes(self, unit: str) -> int:
        """How many changes systemd has signalled for the unit: give it to `wait_change`."""
        with self._changed:
            return self._changes.setdefault(self.unit_path(unit), 0)

    def wait_change(self, unit: str, seen: int, timeout: float) -> None:
        """Until systemd signals a change of the unit after the `seen` ones, or `timeout`."""
        path = self.unit_path(unit)
        with self._changed:
            self._changed.wait_for(lambda: self._changes.get(path, seen) != seen, timeout)

    def set_limits(self, unit: str, memory_bytes: int, cpus: float) -> list[str]:
        """Memory (without swap) and CPU limits until the next boot (`systemctl
        set-property --runtime`); the names of those that changed. Only those are set:
        setting costs a polkit check and a drop-in file that systemd writes (0.14 s a job
        on an emulated worker), reading costs neither, and a lab's jobs mostly ask alike."""
        wanted = {"MemoryMax": memory_bytes, "MemorySwapMax": 0,
                  "CPUQuotaPerSecUSec": int(cpus * 1_000_000)}
        present = self.state(unit, tuple(wanted))
        changed = [(name, ("t", value)) for name, value in wanted.items()
                   if present[name] != str(value)]
        if changed:
            self._call(MANAGER, "SetUnitProperties", "sba(sv)", (unit, True, changed))
        return [name for name, _ in changed]

    def start(self, unit: str, mode: str = "replace") -> None:
        """Start the unit and wait for the start to end, as `systemctl start` does."""
        self.wait_job(self.begin_start(unit, mode), f"StartUnit {unit}")

    def begin_start(self, unit: str, mode: str = "replace") -> str:
        """Start the unit; its start job, for `wait_job`."""
        job, = self._call(MANAGER, "StartUnit", "ss", (unit, mode))
        return job

    def stop(self, unit: str, wait: bool = True) -> None:
        job, = self._call(MANAGER, "StopUnit", "ss", (unit, "replace"))
        if wait:
            self.wait_job(job, f"StopUnit {unit}")

    def reset_failed(self, unit: str) -> None:
        self._call(MANAGER, "ResetFailedUnit", "s", (unit,))

    def wait_job(self, job: str, what: str) -> None:
        """Until systemd's `job` has ended (at most the timeout); raises unless it did."""
        with self._changed:
            if not self._changed.wait_for(lambda: job in self._ended_jobs, self.timeout):
                raise SystemdError(f"{what}: not done in {self.timeout:.0f} s")
            result = self._ended_jobs.pop(job)
        if result == "canceled":
            raise JobCanceled(f"{what}: {result}")
        if result != "done":
            raise SystemdError(f"{what}: {result}")
