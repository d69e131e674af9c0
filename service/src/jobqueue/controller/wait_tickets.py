"""What the WSGI processes and the waiting room share: signed wait tickets and wake-ups.

An idle worker's claim answers at once; when it took nothing, its 204 carries a ticket:
the worker's name, when its claim looked at the queue and what it had free then (CPUs,
MiB of memory where it counts them, its software environments), signed. The worker
then waits in the waiting room, a separate process, instead of in a WSGI thread. The
WSGI processes tell the room of every change a waiting worker could act on, with a
datagram on its Unix socket:
- `{"look": true}`: jobs may have become claimable (submitted, requeued, released by the
  jobs they waited for): the room reads what claimable jobs need and wakes, for each,
  the youngest waiter it fits whose claim looked before that read began;
- `{"worker": NAME}`: that worker has more room now (a job of its ended, or an admin
  resumed it): wake it if it waits.

The room makes a new key each time it starts; a ticket signed with an older one is
refused (401) and the worker simply claims again."""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import socket
from dataclasses import dataclass, field

KEY_NAME = "key"
HTTP_SOCKET = "http.sock"
WAKE_SOCKET = "wake.sock"
TICKET_HEADER = "Jobqueue-Wait-Ticket"
WAIT_SECONDS_HEADER = "Jobqueue-Wait-Seconds"
MAX_TICKET = 8192


@dataclass(frozen=True)
class Ticket:
    worker: str
    looked_at: float
    cpus: int  # free when the claim looked
    memory: int | None = None  # free MiB; None: the worker does not count memory
    environments: tuple[str, ...] = field(default=())

    def fits(self, cpus: int, memory: int, environment: str | None) -> bool:
        return (cpus <= self.cpus and (self.memory is None or memory <= self.memory)
                and (environment is None or environment in self.environments))


def _mac(key: bytes, payload: str) -> str:
    return hmac.new(key, payload.encode(), hashlib.sha256).hexdigest()


def sign(key: bytes, ticket: Ticket) -> str:
    fields = [ticket.worker, ticket.looked_at, ticket.cpus, ticket.memory,
              list(ticket.environments)]
    payload = base64.urlsafe_b64encode(json.dumps(fields).encode()).decode()
    return f"{payload}.{_mac(key, payload)}"


def verify(key: bytes, text: str) -> Ticket | None:
    """The ticket `text` holds, or None if it is malformed or not signed with `key`."""
    if not isinstance(text, str) or len(text) > MAX_TICKET:
        return None
    payload, _, mac = text.rpartition(".")
    if not payload or not hmac.compare_digest(mac.encode(), _mac(key, payload).encode()):
        return None
    try:
        worker, looked_at, cpus, memory, environments = json.loads(
            base64.urlsafe_b64decode(payload))
        return Ticket(worker, float(looked_at), int(cpus),
                      None if memory is None else int(memory), tuple(environments))
    except (ValueError, TypeError, binascii.Error):
        return None


def make_key(directory: str) -> bytes:
    """A new key, written where only the room's user (the controller's) can read it."""
    key = secrets.token_bytes(32)
    path = os.path.join(directory, KEY_NAME)
    temporary = f"{path}.{os.getpid()}"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(key)
    os.replace(temporary, path)
    return key


class RoomClient:
    """The WSGI side: the room's current key (to sign tickets with) and wake-ups."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._key: tuple[tuple[int, int], bytes] | None = None
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.setblocking(False)

    def key(self) -> bytes | None:
        """The room's key, read again when the room made a new one (it restarted)."""
        path = os.path.join(self.directory, KEY_NAME)
        try:
            stat = os.stat(path)
            if self._key is None or self._key[0] != (stat.st_ino, stat.st_mtime_ns):
                with open(path, "rb") as source:
                    self._key = ((stat.st_ino, stat.st_mtime_ns), source.read())
        except OSError:
            return None  # the room is not running: workers wait by claiming again
        return self._key[1]

    def look(self) -> None:
        self._send({"look": True})

    def wake_worker(self, name: str) -> None:
        self._send({"worker": name})

    def _send(self, message: dict) -> None:
        # Never blocks a request: a room that is down or behind loses the wake-up, and
        # its waiters claim again when their wait ends.
        with contextlib.suppress(OSError):
            self._socket.sendto(json.dumps(message).encode(),
                                os.path.join(self.directory, WAKE_SOCKET))
