"""The waiting room: idle workers wait here for work, not in the controller's WSGI threads.

`python -m jobqueue.controller.waiting_room` (the controller's settings; on the
controller host, `jobqueue-waiting-room.service`). One asyncio process holds every
parked wait for a few KiB each; Apache proxies `GET /api/v1/worker/wait` to its HTTP
socket, and the WSGI processes send it wake-ups on its datagram socket
(`wait_tickets` says what they mean). On a wake-up it reads, in one query, what the
claimable jobs need, and wakes for each job the youngest waiter whose free CPUs,
memory and environments fit it: a job only some workers can run wakes one of them, and a job
none can run wakes nobody.

A wait answers 200 `{"woken_at": T}` when woken (the worker claims at once), 204 after
`waiting_room_wait_seconds`, 409 when the same worker waits again (the newer wait
replaces it), 401 for a ticket not signed with this start's key, 503 when full."""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import os
import signal
import socket
import sys
import time
from collections import OrderedDict

from jobqueue.config import load_or_report
from jobqueue.controller import settings as settings_module
from jobqueue.controller import wait_tickets
from jobqueue.controller.db import make_engine, make_session_factory
from jobqueue.controller.wait_tickets import Ticket
from jobqueue.queue.dispatcher import claimable_needs

log = logging.getLogger("jobqueue.waiting_room")

PROGRAM = "jobqueue-waiting-room"
WAIT_PATH = "/api/v1/worker/wait"
HEAD_BYTES = 16384  # request line and headers; the wait has no body
HEAD_SECONDS = 10.0  # to send them
MAX_WAITERS = 20000
SWEEP_SECONDS = 5.0
INFLIGHT_SECONDS = 30.0  # a woken worker's claim is back by then, or counts no more
REPLACED = "replaced"
STATUS_TEXT = {200: "OK", 204: "No Content", 400: "Bad Request", 401: "Unauthorized",
               404: "Not Found", 405: "Method Not Allowed", 409: "Conflict",
               503: "Service Unavailable"}


Need = tuple[int, int, "str | None", int]  # cpus, memory, environment, how many jobs


class Room:
    """Parked waits by worker name, oldest first, each with what its worker had free."""

    def __init__(self, max_waiters: int = MAX_WAITERS) -> None:
        self.max_waiters = max_waiters
        self.waiters: OrderedDict[str, tuple[Ticket, asyncio.Future]] = OrderedDict()
        # The last look: when it began, and the claimable jobs no waiter fitted. A worker
        # whose claim looked before it, and that parks only now, is woken at once if it
        # fits one of them.
        self.looked_at = 0.0
        self.unmatched: list[Need] = []
        # Woken for a job and not back yet: worker -> (the job's needs, when). Until its
        # claim comes back (it parks again) or INFLIGHT_SECONDS pass, the job counts as
        # taken: looks that follow, one per commit, must not wake more workers for it.
        self.inflight: dict[str, tuple[tuple, float]] = {}

    def park(self, ticket: Ticket) -> asyncio.Future | None:
        """The future a wait awaits; None when the room is full."""
        future = asyncio.get_running_loop().create_future()
        was_woken = self.inflight.pop(ticket.worker, None) is not None  # its claim is back
        if ticket.looked_at < self.looked_at and (need := self._take(ticket, self.unmatched)):
            self.inflight[ticket.worker] = (need, time.monotonic())
            future.set_result(self.looked_at)
            return future
        if (old := self.waiters.pop(ticket.worker, None)) is not None:
            _answer(old[1], REPLACED)
        if len(self.waiters) >= self.max_waiters:
            return None
        self.waiters[ticket.worker] = (ticket, future)
        if was_woken:  # what woke it may not be for it: the next look asks it last
            self.waiters.move_to_end(ticket.worker, last=False)
        return future

    def leave(self, worker: str, future: asyncio.Future) -> None:
        if self.waiters.get(worker, (None, None))[1] is future:
            del self.waiters[worker]

    def match(self, needs: list[Need], looked_at: float) -> int:
        """Wake, for each claimable job no woken worker is on its way to, the youngest
        waiter it fits (one job each). Youngest first: a worker that died while it
        waited stays parked until its wait ends, and must not be the first one asked."""
        now = time.monotonic()
        self.inflight = {name: taken for name, taken in self.inflight.items()
                         if now - taken[1] < INFLIGHT_SECONDS}
        on_the_way = collections.Counter(need for need, _ in self.inflight.values())
        unmatched = []
        for *need, count in needs:
            left = count - on_the_way.pop(tuple(need), 0)
            if left > 0:
                unmatched.append([*need, left])
        woken = 0
        for name, (ticket, future) in reversed(list(self.waiters.items())):
            if ticket.looked_at < looked_at and (need := self._take(ticket, unmatched)):
                del self.waiters[name]
                self.inflight[name] = (need, now)
                _answer(future, looked_at)
                woken += 1
        self.looked_at = looked_at
        self.unmatched = [need for need in unmatched if need[3] > 0]
        return woken

    @staticmethod
    def _take(ticket: Ticket, needs: list) -> tuple | None:
        """Count one job of the first need `ticket` fits as taken: that need."""
        for need in needs:
            if need[3] > 0 and ticket.fits(need[0], need[1], need[2]):
                need[3] -= 1
                return tuple(need[:3])
        return None

    def wake_worker(self, name: str) -> bool:
        if (waiter := self.waiters.pop(name, None)) is None:
            return False
        _answer(waiter[1], time.time())
        return True

    def wake_oldest(self) -> None:
        if self.waiters:
            _answer(self.waiters.popitem(last=False)[1][1], time.time())


def _answer(future: asyncio.Future, result) -> None:
    if not future.done():
        future.set_result(result)


class Lookout:
    """Runs the room's looks at the queue, one at a time: a wake-up that comes during a
    look makes one more look after it, so none is lost and none piles up."""

    def __init__(self, room: Room, claimable) -> None:
        self.room = room
        self.claimable = claimable  # () -> list[Need], blocking: run in a thread
        self.wanted = asyncio.Event()

    async def run(self) -> None:
        while True:
            await self.wanted.wait()
            self.wanted.clear()
            looked_at = time.time()
            try:
                needs = await asyncio.to_thread(self.claimable)
            except Exception as exc:  # the database is away: its waiters claim again later
                log.warning("could not read the claimable jobs: %s", exc)
                await asyncio.sleep(1)
                continue
            self.room.match(needs, looked_at)

    async def sweep(self) -> None:
        """Wake the oldest waiter every few seconds: its claim also requeues the jobs
        whose lease ran out, which nobody else may be there to do."""
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            self.room.wake_oldest()


class WakeProtocol(asyncio.DatagramProtocol):
    def __init__(self, room: Room, lookout: Lookout) -> None:
        self.room = room
        self.lookout = lookout

    def datagram_received(self, data: bytes, addr) -> None:
        try:
            message = json.loads(data)
            if "look" in message:
                self.lookout.wanted.set()
            elif isinstance(message.get("worker"), str):
                self.room.wake_worker(message["worker"])
            else:
                raise ValueError(message)
        except (ValueError, TypeError):
            log.warning("ignored a malformed wake-up: %r", data[:100])


class Server:
    def __init__(self, room: Room, key: bytes, wait_seconds: float) -> None:
        self.room = room
        self.key = key
        self.wait_seconds = wait_seconds

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            status, body = await self._answer(reader)
            writer.write(_response(status, body))
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                TimeoutError):
            pass  # the caller left or sent too much or too slowly: nothing to answer
        finally:
            writer.close()

    async def _answer(self, reader: asyncio.StreamReader) -> tuple[int, dict | None]:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_SECONDS)
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        parts = request_line.split(" ")
        if len(parts) != 3:
            return 400, _error("bad_request", "malformed request line")
        method, target, _ = parts
        if target.partition("?")[0] != WAIT_PATH:
            return 404, _error("not_found", "the waiting room serves only " + WAIT_PATH)
        if method != "GET":
            return 405, _error("method_not_allowed", "the wait is a GET")
        headers = {name.strip().lower(): value.strip() for name, _, value in
                   (line.partition(":") for line in header_lines if line)}
        ticket = wait_tickets.verify(self.key, headers.get(wait_tickets.TICKET_HEADER.lower(), ""))
        if ticket is None:
            return 401, _error("unauthorized", "a wait needs the ticket of a claim made since "
                               "the waiting room started: claim again")
        future = self.room.park(ticket)
        if future is None:
            return 503, _error("full", "the waiting room is full: claim again later")
        try:
            woken_at = await asyncio.wait_for(asyncio.shield(future), self.wait_seconds)
        except TimeoutError:
            return 204, None
        finally:
            self.room.leave(ticket.worker, future)
        if woken_at == REPLACED:
            return 409, _error("replaced", "a newer wait of the same worker replaced this one")
        return 200, {"woken_at": woken_at}


def _error(error: str, message: str) -> dict:
    return {"error": error, "message": message}


def _response(status: int, body: dict | None) -> bytes:
    payload = b"" if body is None else json.dumps(body).encode()
    head = [f"HTTP/1.1 {status} {STATUS_TEXT[status]}", "Cache-Control: no-store",
            "Connection: close"]
    if status != 204:
        head += ["Content-Type: application/json", f"Content-Length: {len(payload)}"]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + payload


def _bind_datagram(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    os.chmod(path, 0o600)  # only the controller's processes may wake workers
    return sock


async def serve(directory: str, wait_seconds: float, claimable, room: Room | None = None,
                started: asyncio.Event | None = None) -> None:
    """Serve until cancelled. `claimable()` reads what the claimable jobs need (blocking:
    it runs in a thread). The HTTP socket is open to every local user (Apache must reach
    it); a wait without a ticket signed with this start's key is refused."""
    loop = asyncio.get_running_loop()
    for name in (wait_tickets.HTTP_SOCKET, wait_tickets.WAKE_SOCKET):
        if os.path.exists(path := os.path.join(directory, name)):
            os.unlink(path)
    room = room or Room()
    lookout = Lookout(room, claimable)
    transport, _ = await loop.create_datagram_endpoint(
        lambda: WakeProtocol(room, lookout),
        sock=_bind_datagram(os.path.join(directory, wait_tickets.WAKE_SOCKET)))
    key = wait_tickets.make_key(directory)
    http_path = os.path.join(directory, wait_tickets.HTTP_SOCKET)
    server = await asyncio.start_unix_server(Server(room, key, wait_seconds).handle,
                                             http_path, limit=HEAD_BYTES)
    os.chmod(http_path, 0o666)
    log.info("waiting room at %s (waits of up to %.0f s)", directory, wait_seconds)
    if started is not None:
        started.set()
    tasks = [asyncio.create_task(lookout.run()), asyncio.create_task(lookout.sweep())]
    try:
        async with server:
            await server.serve_forever()
    finally:
        for task in tasks:
            task.cancel()
        transport.close()


def main() -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    settings = load_or_report(settings_module.load, None, PROGRAM)
    if settings is None:
        return 2
    if not settings.waiting_room_dir:
        print(f"{PROGRAM}: error: setting 'waiting_room_dir' is empty (workers then wait in "
              "their claims)", file=sys.stderr)
        return 2

    async def run() -> None:
        task = asyncio.current_task()
        for signum in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(signum, task.cancel)
        engine = make_engine(settings.database_url)
        sessions = make_session_factory(engine)

        def claimable():
            with sessions() as session:
                return claimable_needs(session)

        try:
            await serve(settings.waiting_room_dir, settings.waiting_room_wait_seconds,
                        claimable)
        except asyncio.CancelledError:
            log.info("stopped")

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
