"""The waiting room: idle workers wait there, woken only as many at a time as there is
work for, and only with a ticket a claim of this controller signed."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import shutil
import socket
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from jobqueue.controller import wait_tickets
from jobqueue.controller.wait_tickets import Ticket
from jobqueue.controller.waiting_room import WAIT_PATH, Room, serve
from jobqueue.queue.dispatcher import claimable_needs

WAIT_SECONDS = 3.0


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.socket_path)


class RunningRoom:
    """A waiting room served by an event loop in a thread, as its service runs it."""

    def __init__(self, directory: str, claimable=None) -> None:
        self.directory = directory
        self.room = Room()
        self.needs: list[tuple] = []  # what the claimable jobs need, unless `claimable`
        self.loop = asyncio.new_event_loop()
        started = asyncio.Event()
        self.task = self.loop.create_task(serve(
            directory, WAIT_SECONDS, claimable or (lambda: self.needs), self.room, started))
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(started.wait(), self.loop).result(10)
        self.client = wait_tickets.RoomClient(directory)
        self.pool = ThreadPoolExecutor(8)

    def request(self, ticket: str | None = None, path: str = WAIT_PATH, method: str = "GET"):
        connection = UnixHTTPConnection(os.path.join(self.directory, wait_tickets.HTTP_SOCKET),
                                        WAIT_SECONDS + 10)
        headers = {wait_tickets.TICKET_HEADER: ticket} if ticket is not None else {}
        connection.request(method, path, headers=headers)
        response = connection.getresponse()
        body = response.read()
        connection.close()
        return response.status, json.loads(body) if body else None

    def ticket(self, worker: str, looked_at: float | None = None, cpus: int = 1,
               memory: int | None = None, environments=()) -> str:
        return wait_tickets.sign(self.client.key(), Ticket(
            worker, time.time() if looked_at is None else looked_at, cpus, memory,
            tuple(environments)))

    def wait(self, worker: str, **ticket):
        return self.request(self.ticket(worker, **ticket))

    def wait_later(self, worker: str, **ticket):
        return self.park(self.ticket(worker, **ticket), worker)

    def look(self, *needs: tuple) -> None:
        """Jobs needing (cpus, memory, environment, count) are claimable: wake-up."""
        self.needs = list(needs)
        self.client.look()

    def park(self, ticket: str, worker: str):
        """A wait in another thread, returned once the room has parked it."""
        self.last_ticket = ticket
        future = self.pool.submit(self.request, ticket)
        self.until(lambda: worker in self.parked() or future.done())
        return future

    def parked(self) -> list[str]:
        async def names():
            return list(self.room.waiters)
        return asyncio.run_coroutine_threadsafe(names(), self.loop).result(5)

    def until(self, condition, seconds: float = 5.0) -> None:
        deadline = time.monotonic() + seconds
        while not condition():
            assert time.monotonic() < deadline, "the room never got there"
            time.sleep(0.01)

    def stop(self) -> None:
        async def cancel_all():
            tasks = asyncio.all_tasks() - {asyncio.current_task()}
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(cancel_all(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.pool.shutdown(wait=False, cancel_futures=True)


@pytest.fixture
def room():
    # Unix socket paths are short (108 bytes): not under pytest's tmp_path.
    directory = tempfile.mkdtemp(prefix="room-", dir="/tmp")
    running = RunningRoom(directory)
    yield running
    running.stop()
    shutil.rmtree(directory)


def test_sockets_modes_and_key(room):
    http_socket, wake_socket, key = (os.stat(os.path.join(room.directory, name)) for name in (
        wait_tickets.HTTP_SOCKET, wait_tickets.WAKE_SOCKET, wait_tickets.KEY_NAME))
    assert http_socket.st_mode & 0o777 == 0o666  # Apache must reach it
    assert wake_socket.st_mode & 0o777 == 0o600  # only the controller may wake workers
    assert key.st_mode & 0o777 == 0o600


def test_a_wait_needs_a_ticket_signed_with_this_rooms_key(room):
    status, body = room.request()
    assert status == 401 and body["error"] == "unauthorized"
    forged = wait_tickets.sign(b"k" * 32, Ticket("w1", time.time(), 1))
    assert room.request(forged)[0] == 401
    assert room.request(room.ticket("w1") + "0")[0] == 401
    assert room.request("x" * 10000)[0] == 401
    assert room.parked() == []


def test_only_the_wait_is_served(room):
    assert room.request(room.ticket("w1"), path="/api/v1/jobs")[0] == 404
    assert room.request(room.ticket("w1"), method="POST")[0] == 405
    assert room.parked() == []


def test_an_oversized_request_is_dropped_unanswered(room):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(os.path.join(room.directory, wait_tickets.HTTP_SOCKET))
        sock.sendall(b"GET " + WAIT_PATH.encode() + b" HTTP/1.1\r\nX: " + b"a" * 20000)
        assert sock.recv(100) == b""


def test_a_wait_ends_empty_after_the_wait_time(room):
    started = time.monotonic()
    assert room.wait("w1") == (204, None)
    assert time.monotonic() - started >= WAIT_SECONDS - 0.1
    assert room.parked() == []


def test_a_look_wakes_one_fitting_waiter_for_each_claimable_job_youngest_first(room):
    """The oldest waiter may have died waiting: it is asked last."""
    first, second, third = (room.wait_later(name) for name in ("w1", "w2", "w3"))
    room.look((1, 1024, None, 2))
    assert third.result(5)[0] == 200 and second.result(5)[0] == 200
    assert room.parked() == ["w1"]
    assert first.result(WAIT_SECONDS + 5) == (204, None)


def test_a_job_with_a_worker_on_its_way_wakes_no_other_until_that_claim_is_back(room):
    second, first = room.wait_later("w2"), room.wait_later("w1")
    room.look((1, 1024, None, 1))
    assert first.result(5)[0] == 200
    for _ in range(3):  # more commits before w1's claim: the same job still claimable
        room.look((1, 1024, None, 1))
    time.sleep(0.2)
    assert room.parked() == ["w2"]
    # w1's claim came back without it (another took it, or a fairer job came first),
    # and it waits again behind w2: w2 gets its chance.
    again = room.wait_later("w1", looked_at=time.time() - 1)
    room.look((1, 1024, None, 1))
    assert second.result(5)[0] == 200
    assert again.result(WAIT_SECONDS + 5) == (204, None)


def test_a_job_wakes_only_a_worker_it_fits(room):
    fits = room.wait_later("fits", cpus=8, memory=None, environments=["fit"])
    small = room.wait_later("small", cpus=1, memory=4096)
    no_env = room.wait_later("no-env", cpus=8, memory=4096)
    low_memory = room.wait_later("low-memory", cpus=8, memory=512, environments=["fit"])
    room.look((4, 1024, "fit", 1))
    assert fits.result(5)[0] == 200  # the oldest, but the only one it fits
    time.sleep(0.2)
    assert room.parked() == ["small", "no-env", "low-memory"]
    room.look((64, 1024, None, 1))  # a job no worker fits wakes nobody
    time.sleep(0.2)
    assert room.parked() == ["small", "no-env", "low-memory"]
    for waiting in (small, no_env, low_memory):
        assert waiting.result(WAIT_SECONDS + 5) == (204, None)


def test_a_look_skips_waiters_whose_claim_looked_after_it(room):
    later = room.wait_later("w1", looked_at=time.time() + 1)
    room.look((1, 1, None, 1))
    room.until(lambda: room.room.looked_at > 0)
    assert room.parked() == ["w1"]
    assert later.result(WAIT_SECONDS + 5) == (204, None)


def test_a_job_no_waiter_took_wakes_a_late_waiter_it_fits_at_once(room):
    looked_at = time.time()
    room.look((2, 1, None, 1))  # the job came after the claims looked, before they park
    room.until(lambda: room.room.unmatched)
    assert room.wait_later("small", looked_at=looked_at, cpus=1).done() is False
    started = time.monotonic()
    assert room.wait("big", looked_at=looked_at, cpus=2)[0] == 200
    assert time.monotonic() - started < WAIT_SECONDS / 2
    assert room.wait("big", looked_at=looked_at, cpus=2) == (204, None)  # taken once only


def test_a_worker_with_more_room_is_woken_by_name(room):
    other = room.wait_later("other")
    freed = room.wait_later("freed", cpus=0)  # drained, or its slots all busy
    room.client.wake_worker("freed")
    assert freed.result(5)[0] == 200
    assert room.parked() == ["other"]
    room.client.wake_worker("nobody")
    assert other.result(WAIT_SECONDS + 5) == (204, None)


def test_a_newer_wait_of_the_same_worker_replaces_the_older(room):
    older = room.wait_later("w1")
    newer = room.wait_later("w1", looked_at=time.time() + 0.001)
    status, body = older.result(5)
    assert status == 409 and body["error"] == "replaced"
    assert room.parked() == ["w1"]
    room.client.wake_worker("w1")
    assert newer.result(5)[0] == 200


def test_malformed_wake_ups_are_ignored(room):
    waiting = room.wait_later("w1")
    for message in (b"wake", b"{}", b'{"worker": 1}', b"\xff\xfe", b"[1, 2]"):
        room.client._socket.sendto(message, os.path.join(room.directory,
                                                         wait_tickets.WAKE_SOCKET))
    time.sleep(0.2)
    assert room.parked() == ["w1"]
    room.client.wake_worker("w1")
    assert waiting.result(5)[0] == 200


def test_a_full_room_refuses_more_waiters(room):
    room.room.max_waiters = 1
    waiting = room.wait_later("w1")
    status, body = room.wait("w2")
    assert status == 503 and body["error"] == "full"
    room.client.wake_worker("w1")
    assert waiting.result(5)[0] == 200


def test_a_restarted_room_refuses_tickets_of_the_one_before():
    directory = tempfile.mkdtemp(prefix="room-", dir="/tmp")
    try:
        first = RunningRoom(directory)
        ticket = first.ticket("w1")
        first.stop()
        second = RunningRoom(directory)
        try:
            assert second.request(ticket)[0] == 401
            assert second.ticket("w1") != ticket
        finally:
            second.stop()
    finally:
        shutil.rmtree(directory)


def test_without_a_room_the_client_signs_nothing_and_sends_nowhere(tmp_path):
    client = wait_tickets.RoomClient(str(tmp_path))
    assert client.key() is None
    client.look()  # no socket there: dropped, never raised


# -- the controller's side: claims that answer at once, wake-ups from commits ----------


@pytest.fixture
def room_stack(make_stack):
    directory = tempfile.mkdtemp(prefix="room-", dir="/tmp")
    stack = make_stack(waiting_room_dir=directory)
    sessions = stack.app.extensions["jobqueue"].session_factory

    def claimable():
        with sessions() as session:
            return claimable_needs(session)

    running = RunningRoom(directory, claimable)
    yield stack, running
    running.stop()
    shutil.rmtree(directory)


def _claim(stack, who, cpus=1, jobs=1):
    body = {"worker": who, "cpus": cpus, "wait": 30, "capacity": {"cpus": cpus, "jobs": jobs}}
    return stack.http.post("/api/v1/worker/claim", json=body, headers=stack.headers(who))


def _park(stack, room, who, cpus=1, jobs=1):
    response = _claim(stack, who, cpus, jobs)
    assert response.status_code == 204
    return room.park(response.headers[wait_tickets.TICKET_HEADER], who)


def test_an_empty_claim_answers_at_once_with_a_ticket_of_what_is_free(room_stack):
    stack, room = room_stack
    started = time.monotonic()
    response = _claim(stack, "w1", cpus=4)
    assert response.status_code == 204
    assert time.monotonic() - started < 5  # not the 30 s long poll
    assert response.headers[wait_tickets.WAIT_SECONDS_HEADER] == "300"
    ticket = wait_tickets.verify(room.client.key(), response.headers[wait_tickets.TICKET_HEADER])
    assert (ticket.worker, ticket.cpus) == ("w1", 4) and ticket.looked_at <= time.time()


def test_a_submission_wakes_a_waiting_worker_it_fits_which_then_claims_it(room_stack):
    stack, room = room_stack
    big = _park(stack, room, "w2", cpus=4)
    small = _park(stack, room, "w1", cpus=1)
    job = stack.submit_ok(spec={"entry": "main.py", "cpus": 4})
    assert big.result(5)[0] == 200
    assert room.parked() == ["w1"]  # the younger waiter, too small for it, sleeps on
    claimed = _claim(stack, "w2", cpus=4)
    assert claimed.status_code == 200 and claimed.get_json()["id"] == job["id"]
    assert small.result(WAIT_SECONDS + 5) == (204, None)


def test_a_finished_job_wakes_its_worker(room_stack):
    stack, room = room_stack
    stack.submit_ok()
    job = _claim(stack, "w1", cpus=1).get_json()
    full = _park(stack, room, "w1", cpus=1)  # its one CPU is taken: a ticket without room
    assert wait_tickets.verify(room.client.key(), room.last_ticket).cpus == 0
    stack.submit_ok()  # waits for a CPU: wakes nobody
    time.sleep(0.3)
    assert room.parked() == ["w1"]
    assert stack.upload(job["id"], job["lease"]).status_code == 200
    assert full.result(5)[0] == 200
    assert _claim(stack, "w1", cpus=1).status_code == 200


def test_a_resumed_worker_is_woken(room_stack):
    stack, room = room_stack
    assert _claim(stack, "w1").status_code == 204  # the worker is known from its claims
    assert stack.http.post("/api/v1/workers/w1/drain",
                           headers=stack.headers("root")).status_code == 200
    waiting = _park(stack, room, "w1")
    stack.submit_ok()
    time.sleep(0.3)
    assert room.parked() == ["w1"]  # a drained worker's ticket has no room
    assert stack.http.post("/api/v1/workers/w1/resume",
                           headers=stack.headers("root")).status_code == 200
    assert waiting.result(5)[0] == 200
    assert _claim(stack, "w1").status_code == 200


def test_with_the_room_down_claims_long_poll_as_before(make_stack, tmp_path):
    stack = make_stack(waiting_room_dir=str(tmp_path))  # no room there
    response = stack.claim(wait=1)
    assert response.status_code == 204
    assert wait_tickets.TICKET_HEADER not in response.headers


def test_the_worker_bounds_the_wait_a_claim_announces():
    from jobqueue.worker.controller_api import MAX_WAIT_SECONDS, _wait_seconds

    assert _wait_seconds("300", 30) == 300
    for header in (None, "soon", "nan", "-1"):
        assert _wait_seconds(header, 30) == 30, header
    assert _wait_seconds("1e9", 30) == _wait_seconds("inf", 30) == MAX_WAIT_SECONDS
