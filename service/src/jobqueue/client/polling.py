"""How the client waits for something on the controller: one pace for every wait
(`wait`, `wait_array`, `as_completed`, `follow_log`, `map`), and one rule for riding
out a controller restart while waiting."""

from __future__ import annotations

import time
from collections.abc import Iterator

from jobqueue.client.errors import TransportError

# Quick at first (short jobs finish fast), then backing off to spare the server.
POLL_FIRST = 0.5
POLL_MAX = 5.0
# Failed connections tolerated in a row while waiting (a controller restart).
MAX_CONNECTION_ERRORS = 12


def every(timeout: float | None = None, interval: float | None = None) -> Iterator[None]:
    """Yield once per poll: at once, then after pauses growing from POLL_FIRST to
    POLL_MAX (or every `interval` seconds); stop once `timeout` seconds have passed,
    never sleeping past them."""
    deadline = None if timeout is None else time.monotonic() + timeout
    delay = interval if interval is not None else POLL_FIRST
    while True:
        yield
        if deadline is not None and time.monotonic() >= deadline:
            return
        left = delay if deadline is None else deadline - time.monotonic()
        time.sleep(max(0.0, min(delay, left)))
        if interval is None:
            delay = min(delay * 1.5, POLL_MAX)


class Outage:
    """Around each poll's requests: a failed connection skips that poll, until more
    than MAX_CONNECTION_ERRORS have failed in a row (then it is raised). `ok` tells
    whether the last poll got through."""

    def __init__(self) -> None:
        self.failures = 0
        self.ok = False

    def __enter__(self) -> Outage:
        self.ok = False
        return self

    def __exit__(self, kind, exc, tb) -> bool:
        if kind is None:
            self.failures, self.ok = 0, True
            return False
        if issubclass(kind, TransportError):
            self.failures += 1
            return self.failures <= MAX_CONNECTION_ERRORS
        return False
