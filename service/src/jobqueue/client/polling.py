"""How the client waits for something on the controller: one pace for every wait
(`wait`, `wait_array`, `as_completed`, `follow_log`, `map`), and one rule for riding
out the controller's absence while waiting."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from jobqueue.client.errors import ApiError, TransportError, WaitTimeout

# Quick at first (short jobs finish fast), then backing off to spare the server.
POLL_FIRST = 0.5
POLL_MAX = 5.0
# How long a wait rides out a controller it cannot reach, or that answers 5xx (a
# restart, a reboot of its host, its database restarting): an overnight wait should
# not end because the controller was away for a few minutes.
OUTAGE_SECONDS = 900.0


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


def until(read: Callable[[], dict[str, Any]], done: Callable[[dict[str, Any]], bool],
          last: dict[str, Any], timeout: float | None = None, interval: float | None = None,
          on_update: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """`read()` at every poll, riding out an outage, until `done` says so of what it
    read: that. `on_update` sees each read. WaitTimeout with the last read (at first
    `last`) once `timeout` has passed."""
    outage = Outage()
    for _ in every(timeout, interval):
        with outage:
            last = read()
        if not outage.ok:
            continue
        if on_update is not None:
            on_update(last)
        if done(last):
            return last
    raise WaitTimeout(last, timeout or 0.0)


class Outage:
    """Around each poll's requests: a failed connection or a 5xx answer skips that poll,
    until the controller has been away for more than `seconds` (then it is raised). `ok`
    tells whether the last poll got through."""

    def __init__(self, seconds: float = OUTAGE_SECONDS) -> None:
        self.seconds = seconds
        self.since: float | None = None  # when the polls started failing
        self.ok = False

    def __enter__(self) -> Outage:
        self.ok = False
        return self

    def __exit__(self, kind, exc, tb) -> bool:
        if kind is None:
            self.since, self.ok = None, True
            return False
        if issubclass(kind, TransportError) or \
                (issubclass(kind, ApiError) and exc.status >= 500):
            now = time.monotonic()
            self.since = now if self.since is None else self.since
            return now - self.since <= self.seconds
        return False
