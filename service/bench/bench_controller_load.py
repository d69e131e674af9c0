"""Benchmark: a controller's answers to its users while hundreds of idle workers wait.

An asyncio load generator (standard library only, one process): users submit trivial
jobs and read their status over HTTPS, first beside a few simulated workers (the
reference), then beside N, each on its own connection, claiming as the real worker
does (waiting in the controller's waiting room between claims, or long-polling where
it has none). A simulated worker that gets a job reports it done at once, so both
phases run the same jobs and differ only in how many workers wait. Prints for each
phase: status reads and their latency (p50, p95, p99, max), submissions, how many
answers were 5xx and how many connections failed or were refused, and how many
simulated workers were waiting. Its load is the controller's alone: run it with the
real workers drained (the cluster wrapper does), or their jobs share the machine.

Usage: python bench/bench_controller_load.py --url https://HOST --ca CA.crt
           --tokens TOKENS.json [--workers 500] [--users 5] [--seconds 60]
TOKENS.json: {"workers": {name: token, ...}, "users": [token, ...]}; on `make
cluster`'s VMs `make bench-load` makes them (scripts/bench-controller-load.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import ssl
import statistics
import time
import uuid
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from stats import percentile

API = "/api/v1"
TICKET_HEADER = "jobqueue-wait-ticket"
SUBMIT_EVERY_SECONDS = 5.0  # each user's submissions
READ_PAUSE_SECONDS = 1.0  # between one user's status reads, as a job's page polls
RAMP_CONCURRENCY = 4  # workers making their first claim (a TLS handshake, a new worker
# row) at once: the ramp goes as fast as the controller answers them
SETTLE_SECONDS = 30  # after the ramp, before the measured phase
BACKOFF_CAP_SECONDS = 30  # a refused claim is retried as the worker daemon does
MAX_BODY = 16 << 20


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body)


class ConnectionFailed(Exception):
    """Refused, reset or closed before an answer."""


class Refused(Exception):
    """An answer other than the protocol's own (a 4xx it does not expect, a 5xx)."""

    def __init__(self, response: Response, what: str) -> None:
        super().__init__(what)
        self.response = response
        self.what = what


class Http:
    """One keep-alive HTTP/1.1 connection over TLS, opened again when the server closes it."""

    def __init__(self, url: str, context: ssl.SSLContext, token: str) -> None:
        parts = urlsplit(url)
        tls = parts.scheme == "https"
        self.host, self.port = parts.hostname, parts.port or (443 if tls else 80)
        self.context = context if tls else None
        self.token = token
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes = b"",
                      headers: dict[str, str] | None = None, timeout: float = 120) -> Response:
        head = [f"{method} {API}{path} HTTP/1.1", f"Host: {self.host}",
                f"Authorization: Bearer {self.token}", f"Content-Length: {len(body)}"]
        head += [f"{name}: {value}" for name, value in (headers or {}).items()]
        payload = ("\r\n".join(head) + "\r\n\r\n").encode() + body
        reused = self.writer is not None
        try:
            if self.writer is None:
                self.reader, self.writer = await asyncio.open_connection(
                    self.host, self.port, ssl=self.context,
                    server_hostname=self.host if self.context else None)
            self.writer.write(payload)
            await self.writer.drain()
            return await asyncio.wait_for(self._read(), timeout)
        except TimeoutError:
            self.close()
            raise ConnectionFailed(f"no answer within {timeout:.0f} s") from None
        except (OSError, asyncio.IncompleteReadError, ssl.SSLError) as exc:
            self.close()
            if reused:  # the server had closed the idle connection: once more on a new one
                return await self.request(method, path, body, headers, timeout)
            raise ConnectionFailed(f"{type(exc).__name__}: {exc}") from None

    async def _read(self) -> Response:
        status_line = await self.reader.readuntil(b"\r\n")
        status = int(status_line.split()[1])
        headers = {}
        while (line := await self.reader.readuntil(b"\r\n")) != b"\r\n":
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while size := int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16):
                body += await self.reader.readexactly(size + 2)
                body = body[:-2]
            await self.reader.readuntil(b"\r\n")
        elif "content-length" in headers:
            body = await self.reader.readexactly(min(int(headers["content-length"]), MAX_BODY))
        elif status in (204, 304):
            body = b""
        else:
            body = await self.reader.read(MAX_BODY)
            headers["connection"] = "close"
        if headers.get("connection", "").lower() == "close":
            self.close()
        return Response(status, headers, body)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def multipart(fields: dict[str, tuple[str | None, bytes]]) -> tuple[bytes, str]:
    """A multipart/form-data body of fields name -> (file name or None, content)."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, (filename, content) in fields.items():
        disposition = f'form-data; name="{name}"' + (
            f'; filename="{filename}"' if filename else "")
        parts.append(f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode()
                     + content + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), \
        f"multipart/form-data; boundary={boundary}"


@dataclass
class Phase:
    name: str
    reads: list[float] = field(default_factory=list)
    submits: list[float] = field(default_factory=list)
    server_errors: int = 0  # 5xx answers to users
    failed_connections: int = 0  # users' and workers' connections refused, reset, timed out
    other_errors: list[str] = field(default_factory=list)
    waiting: list[int] = field(default_factory=list)  # simulated workers waiting, sampled


@dataclass
class Load:
    url: str
    context: ssl.SSLContext
    phase: Phase
    waiting: set[str] = field(default_factory=set)
    started: int = 0  # simulated workers
    fake_results: int = 0

    def record(self, response: Response, what: str) -> bool:
        if response.status >= 500:
            self.phase.server_errors += 1
        if response.status >= 400:
            if len(self.phase.other_errors) < 5:
                self.phase.other_errors.append(f"{what}: {response.status} {response.body[:200]}")
            return False
        return True


def backoff(failures: int) -> float:
    """The worker daemon's: doubling from 1 s up to a cap, with jitter."""
    return random.uniform(0.5, 1.0) * min(BACKOFF_CAP_SECONDS, 2.0 ** failures)


async def simulated_worker(load: Load, name: str, token: str,
                           first_claim: asyncio.Semaphore) -> None:
    http = Http(load.url, load.context, token)
    failures = 0
    ramping = True  # holding `first_claim` until the controller answers the first claim
    await first_claim.acquire()
    try:
        while True:
            # The first claim answers at once even where claims long-poll (no room).
            body = {"worker": name, "cpus": 1, "wait": 0 if ramping else 30,
                    "claim_id": uuid.uuid4().hex,
                    "capacity": {"cpus": 1, "jobs": 1}}
            load.waiting.add(name)  # in a claim (a long poll without a waiting room) or a wait
            try:
                claim = await http.request("POST", "/worker/claim", json.dumps(body).encode(),
                                           {"Content-Type": "application/json"})
                if ramping:
                    ramping = False
                    first_claim.release()
                if claim.status == 200:
                    load.waiting.discard(name)
                    await report_done(load, http, claim.json())
                elif claim.status == 204 and (ticket := claim.headers.get(TICKET_HEADER)):
                    seconds = float(claim.headers.get("jobqueue-wait-seconds", 30))
                    wait = await http.request("GET", "/worker/wait",
                                              headers={"Jobqueue-Wait-Ticket": ticket},
                                              timeout=seconds + 60)
                    if wait.status not in (200, 204, 401, 409):
                        raise Refused(wait, "wait")
                elif claim.status != 204:
                    raise Refused(claim, "claim")
                failures = 0
            except Refused as refused:
                load.record(refused.response, refused.what)
                failures += 1
                await asyncio.sleep(backoff(failures))
            except ConnectionFailed:
                load.phase.failed_connections += 1
                failures += 1
                await asyncio.sleep(backoff(failures))
            finally:
                load.waiting.discard(name)
    finally:
        if ramping:
            first_claim.release()
        http.close()


async def report_done(load: Load, http: Http, job: dict) -> None:
    status = {"lease": job["lease"], "state": "succeeded", "exit_code": 0, "message": ""}
    body, content_type = multipart({"status": (None, json.dumps(status).encode()),
                                    "stdout": ("stdout", b""), "stderr": ("stderr", b"")})
    response = await http.request("POST", f"/worker/jobs/{job['id']}/result", body,
                                  {"Content-Type": content_type})
    if load.record(response, "result"):
        load.fake_results += 1


async def user(load: Load, token: str) -> None:
    http = Http(load.url, load.context, token)
    spec = json.dumps({"entry": "main.py", "walltime": 60}).encode()
    ids: list[str] = []
    next_submit = time.monotonic() + random.uniform(0, SUBMIT_EVERY_SECONDS)
    try:
        while True:
            try:
                if time.monotonic() >= next_submit:
                    next_submit += SUBMIT_EVERY_SECONDS
                    body, content_type = multipart({"spec": (None, spec),
                                                    "files": ("main.py", b"pass\n")})
                    started = time.monotonic()
                    response = await http.request("POST", "/jobs", body,
                                                  {"Content-Type": content_type})
                    if load.record(response, "submit"):
                        load.phase.submits.append(time.monotonic() - started)
                        ids.append(response.json()["id"])
                if ids:
                    started = time.monotonic()
                    response = await http.request("GET", f"/jobs/{random.choice(ids[-20:])}")
                    if load.record(response, "status"):
                        load.phase.reads.append(time.monotonic() - started)
            except ConnectionFailed:
                load.phase.failed_connections += 1
            await asyncio.sleep(READ_PAUSE_SECONDS)
    finally:
        http.close()


async def run_phase(load: Load, phase: Phase, users: list[str], seconds: float) -> Phase:
    load.phase = phase
    tasks = [asyncio.create_task(user(load, token)) for token in users]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        await asyncio.sleep(1)
        phase.waiting.append(len(load.waiting))
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return phase


def report(phase: Phase) -> None:
    print(f"\n{phase.name}")
    if phase.reads:
        ms = [1000 * s for s in phase.reads]
        print(f"  status reads: {len(ms)}; p50 {statistics.median(ms):.0f} ms, "
              f"p95 {percentile(ms, 95):.0f} ms, p99 {percentile(ms, 99):.0f} ms, "
              f"max {max(ms):.0f} ms")
    else:
        print("  status reads: none answered")
    if phase.submits:
        print(f"  submissions: {len(phase.submits)}; p95 "
              f"{1000 * percentile(phase.submits, 95):.0f} ms")
    print(f"  5xx answers: {phase.server_errors}; failed or refused connections: "
          f"{phase.failed_connections}")
    if phase.waiting:
        print(f"  simulated workers waiting: min {min(phase.waiting)}, "
              f"median {statistics.median(phase.waiting):.0f}, max {max(phase.waiting)}")
    for error in phase.other_errors:
        print(f"  e.g. {error}")


async def main_async(args) -> int:
    tokens = json.loads(open(args.tokens).read())
    workers = list(tokens["workers"].items())[:args.workers]
    users = tokens["users"][:args.users]
    context = ssl.create_default_context(cafile=args.ca)
    load = Load(args.url, context, Phase("setup"))
    print(f"controller {args.url}: {len(users)} users submitting every "
          f"{SUBMIT_EVERY_SECONDS:.0f} s and reading status every {READ_PAUSE_SECONDS} s, "
          f"{args.seconds:.0f} s a phase")
    first_claim = asyncio.Semaphore(RAMP_CONCURRENCY)

    async def ramp(names_tokens: list[tuple[str, str]]) -> list[asyncio.Task]:
        """Start these simulated workers; back once nearly all of those started wait."""
        started = time.monotonic()
        tasks = [asyncio.create_task(simulated_worker(load, name, token, first_claim))
                 for name, token in names_tokens]
        load.started += len(tasks)
        while len(load.waiting) < 0.95 * load.started and time.monotonic() - started < 1200:
            await asyncio.sleep(1)
        print(f"{len(load.waiting)} of {load.started} simulated workers waiting after "
              f"{time.monotonic() - started:.0f} s; measuring after {SETTLE_SECONDS} s more")
        await asyncio.sleep(SETTLE_SECONDS)
        return tasks

    # The reference runs the same jobs, on a few workers: what differs is only how
    # many more wait.
    load.phase = Phase("ramp")
    few = workers[:args.reference_workers]
    idle = await ramp(few)
    alone = await run_phase(load, Phase(f"reference: the users beside {len(few)} workers"),
                            users, args.seconds)
    load.phase = Phase("ramp")
    idle += await ramp(workers[len(few):])
    busy = await run_phase(load, Phase(f"the users beside {len(workers)} workers"), users,
                           args.seconds)
    for task in idle:
        task.cancel()
    await asyncio.gather(*idle, return_exceptions=True)
    report(alone)
    report(busy)
    print(f"\njobs the simulated workers reported done: {load.fake_results}")
    if busy.reads and alone.reads:
        print(f"p95 status read: {1000 * percentile(busy.reads, 95):.0f} ms beside "
              f"{len(workers)} workers, {1000 * percentile(alone.reads, 95):.0f} ms beside "
              f"{args.reference_workers} (goal < 300 ms, no 5xx, no failed connection)")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="the controller, https://HOST")
    parser.add_argument("--ca", required=True, help="the controller's CA certificate")
    parser.add_argument("--tokens", required=True, help="JSON {workers: {name: token}, "
                        "users: [token]}")
    parser.add_argument("--workers", type=int, default=500)
    parser.add_argument("--reference-workers", type=int, default=5,
                        help="simulated workers of the reference phase")
    parser.add_argument("--users", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=60)
    return asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    raise SystemExit(main())
