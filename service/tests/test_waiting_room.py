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
from jobqueue.controller.waiting_room import WAIT_PATH, Room, serve

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

    def __init__(self, directory: str, room: Room | None = None) -> None:
        self.directory = directory
        self.room = room or Room()
        self.loop = asyncio.new_event_loop()
        started = asyncio.Event()
        self.task = self.loop.create_task(serve(directory, WAIT_SECONDS, self.room, started))
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

    def wait(self, worker: str, looked_at: float):
        return self.request(self.client.ticket(worker, looked_at))

    def wait_later(self, worker: str, looked_at: float):
        return self.park(self.client.ticket(worker, looked_at), worker)

    def park(self, ticket: str, worker: str):
        """A wait in another thread, returned once the room has parked it."""
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
    forged = wait_tickets.sign(b"k" * 32, "w1", time.time())
    assert room.request(forged)[0] == 401
    assert room.request(room.client.ticket("w1", time.time()) + "0")[0] == 401
    assert room.request("x" * 5000)[0] == 401
    assert room.parked() == []


def test_only_the_wait_is_served(room):
    ticket = room.client.ticket("w1", time.time())
    assert room.request(ticket, path="/api/v1/jobs")[0] == 404
    assert room.request(ticket, method="POST")[0] == 405
    assert room.parked() == []


def test_an_oversized_request_is_dropped_unanswered(room):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(os.path.join(room.directory, wait_tickets.HTTP_SOCKET))
        sock.sendall(b"GET " + WAIT_PATH.encode() + b" HTTP/1.1\r\nX: " + b"a" * 20000)
        assert sock.recv(100) == b""


def test_a_wait_ends_empty_after_the_wait_time(room):
    started = time.monotonic()
    assert room.wait("w1", time.time()) == (204, None)
    assert time.monotonic() - started >= WAIT_SECONDS - 0.1
    assert room.parked() == []


def test_a_wake_up_wakes_as_many_waiters_as_it_names_oldest_first(room):
    first = room.wait_later("w1", time.time())
    second = room.wait_later("w2", time.time())
    third = room.wait_later("w3", time.time())
    before = time.time()
    room.client.wake(2, before)
    assert first.result(5) == (200, {"woken_at": pytest.approx(before, abs=1e-5)})
    assert second.result(5)[0] == 200
    assert room.parked() == ["w3"]
    assert third.result(WAIT_SECONDS + 5) == (204, None)


def test_a_wake_up_skips_waiters_that_looked_after_it(room):
    before = time.time()
    later = room.wait_later("w1", before + 1)
    room.client.wake(1, before)
    room.until(lambda: room.room.unserved_before == pytest.approx(before, abs=1e-5))
    assert room.parked() == ["w1"]
    assert later.result(WAIT_SECONDS + 5) == (204, None)


def test_a_wake_up_with_nobody_there_answers_a_late_waiter_at_once(room):
    looked_at = time.time()
    room.client.wake(1, looked_at + 0.5)  # the job came after the claim looked
    room.until(lambda: room.room.unserved_before > 0)
    started = time.monotonic()
    assert room.wait("w1", looked_at)[0] == 200
    assert time.monotonic() - started < WAIT_SECONDS / 2


def test_a_newer_wait_of_the_same_worker_replaces_the_older(room):
    older = room.wait_later("w1", time.time())
    newer = room.wait_later("w1", time.time() + 0.001)
    status, body = older.result(5)
    assert status == 409 and body["error"] == "replaced"
    assert room.parked() == ["w1"]
    room.client.wake(1, time.time() + 1)
    assert newer.result(5)[0] == 200


def test_a_passed_on_wake_up_goes_to_the_next_younger_waiter_only(room):
    now = time.time()
    older = room.wait_later("older", now - 2)
    younger = room.wait_later("younger", now - 1)
    later = room.wait_later("later", now + 1)
    # "woken" looked at now - 3, was woken by a job submitted at `now`: the next younger
    # waiter that looked before the job came gets its chance, and no one else.
    room.client.pass_on(now - 3, now)
    assert older.result(5) == (200, {"woken_at": pytest.approx(now, abs=1e-5)})
    assert room.parked() == ["younger", "later"]
    room.client.pass_on(now - 2, now)
    assert younger.result(5)[0] == 200
    room.client.pass_on(now - 1, now)  # the chain ends: "later" looked after the job came
    time.sleep(0.2)
    assert room.parked() == ["later"]
    assert later.result(WAIT_SECONDS + 5) == (204, None)


def test_malformed_wake_ups_are_ignored(room):
    waiting = room.wait_later("w1", time.time())
    for message in (b"wake", b"wake x 1", b"boom 1 2", b"\xff\xfe", b"wake 1 2 3"):
        room.client._socket.sendto(message, os.path.join(room.directory,
                                                         wait_tickets.WAKE_SOCKET))
    time.sleep(0.2)
    assert room.parked() == ["w1"]
    room.client.wake(1, time.time())
    assert waiting.result(5)[0] == 200


def test_a_full_room_refuses_more_waiters(room):
    room.room.max_waiters = 1
    waiting = room.wait_later("w1", time.time())
    status, body = room.wait("w2", time.time())
    assert status == 503 and body["error"] == "full"
    room.client.wake(5, time.time())
    assert waiting.result(5)[0] == 200


def test_a_restarted_room_refuses_tickets_of_the_one_before():
    directory = tempfile.mkdtemp(prefix="room-", dir="/tmp")
    try:
        first = RunningRoom(directory)
        ticket = first.client.ticket("w1", time.time())
        first.stop()
        second = RunningRoom(directory)
        try:
            assert second.request(ticket)[0] == 401
            assert second.client.ticket("w1", time.time()) != ticket
        finally:
            second.stop()
    finally:
        shutil.rmtree(directory)


def test_without_a_room_the_client_signs_nothing_and_sends_nowhere(tmp_path):
    client = wait_tickets.RoomClient(str(tmp_path))
    assert client.key() is None and client.ticket("w1", time.time()) is None
    client.wake(1, time.time())  # no socket there: dropped, never raised


# -- the controller's side: claims that answer at once, wake-ups that name the work ----


@pytest.fixture
def room_stack(make_stack, room):
    return make_stack(waiting_room_dir=room.directory)


def _claim(stack, who, cpus=1, woken=None):
    body = {"worker": who, "cpus": cpus, "wait": 30,
            "capacity": {"cpus": cpus, "jobs": 1}} | ({"woken": woken} if woken else {})
    return stack.http.post("/api/v1/worker/claim", json=body, headers=stack.headers(who))


def test_an_empty_claim_answers_at_once_with_a_ticket_for_its_worker(room_stack, room):
    started = time.monotonic()
    response = _claim(room_stack, "w1")
    assert response.status_code == 204
    assert time.monotonic() - started < 5  # not the 30 s long poll
    ticket = room.client.verify(response.headers[wait_tickets.TICKET_HEADER])
    assert ticket.worker == "w1" and ticket.looked_at <= time.time()


def test_a_submission_wakes_one_waiting_worker_which_then_claims_it(room_stack, room):
    tickets = {who: _claim(room_stack, who).headers[wait_tickets.TICKET_HEADER]
               for who in ("w1", "w2")}
    waits = {who: room.park(ticket, who) for who, ticket in tickets.items()}
    assert room.parked() == ["w1", "w2"]
    job = room_stack.submit_ok()
    status, body = waits["w1"].result(5)
    assert status == 200
    assert room.parked() == ["w2"]  # one job: one worker woken
    claimed = _claim(room_stack, "w1", woken={"ticket": tickets["w1"], "at": body["woken_at"]})
    assert claimed.status_code == 200 and claimed.get_json()["id"] == job["id"]
    assert waits["w2"].result(WAIT_SECONDS + 5) == (204, None)


def test_a_woken_worker_that_cannot_take_the_job_passes_it_on(room_stack, room):
    tickets = {"w1": _claim(room_stack, "w1", cpus=1).headers[wait_tickets.TICKET_HEADER],
               "w2": _claim(room_stack, "w2", cpus=4).headers[wait_tickets.TICKET_HEADER]}
    waits = {who: room.park(ticket, who) for who, ticket in tickets.items()}
    assert room.parked() == ["w1", "w2"]
    job = room_stack.submit_ok(spec={"entry": "main.py", "cpus": 4})
    status, body = waits["w1"].result(5)  # the oldest waiter, too small for it
    assert status == 200 and room.parked() == ["w2"]
    woken = {"ticket": tickets["w1"], "at": body["woken_at"]}
    assert _claim(room_stack, "w1", cpus=1, woken=woken).status_code == 204
    assert waits["w2"].result(5)[0] == 200  # passed on to the next one
    claimed = _claim(room_stack, "w2", cpus=4)
    assert claimed.status_code == 200 and claimed.get_json()["id"] == job["id"]


def test_a_claims_woken_field_is_checked(room_stack):
    for woken in ("x", {"ticket": 1, "at": 1.0}, {"ticket": "t", "at": True}, {"ticket": "t"}):
        response = _claim(room_stack, "w1", woken=woken)
        assert response.status_code == 400, woken
        assert "woken" in response.get_json()["message"]


def test_a_forged_woken_ticket_passes_nothing_on(room_stack, room):
    _claim(room_stack, "w1", cpus=4)  # a worker big enough for the job exists
    waiting = room.park(_claim(room_stack, "w2").headers[wait_tickets.TICKET_HEADER], "w2")
    room_stack.submit_ok(spec={"entry": "main.py", "cpus": 4})
    assert waiting.result(5)[0] == 200
    waiting = room.park(_claim(room_stack, "w2").headers[wait_tickets.TICKET_HEADER], "w2")
    forged = wait_tickets.sign(b"k" * 32, "w1", 0.0)
    others = room.client.ticket("w2", 0.0)  # another worker's ticket
    for woken in ({"ticket": forged, "at": time.time()}, {"ticket": others, "at": time.time()}):
        assert _claim(room_stack, "w1", woken=woken).status_code == 204
    time.sleep(0.2)
    assert room.parked() == ["w2"]
    assert waiting.result(WAIT_SECONDS + 5) == (204, None)


def test_with_the_room_down_claims_long_poll_as_before(make_stack, tmp_path):
    stack = make_stack(waiting_room_dir=str(tmp_path))  # no room there
    response = stack.claim(wait=1)
    assert response.status_code == 204
    assert wait_tickets.TICKET_HEADER not in response.headers
