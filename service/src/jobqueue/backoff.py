"""Bounded exponential backoff, shared by the worker and the client: retries come
quickly at first (a restart takes a second or two), then further apart up to a cap,
and stop once the time budget is spent."""

from __future__ import annotations

import random
import time


class Backoff:
    def __init__(self, first: float = 0.5, cap: float = 10.0, budget: float | None = None):
        self.first = first
        self.cap = cap
        self.deadline = None if budget is None else time.monotonic() + budget
        self._next = first

    def reset(self) -> None:
        self._next = self.first

    @property
    def expired(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def delay(self, hint: float | None = None) -> float:
        """The next wait: the server's Retry-After `hint` if given (capped), else the next
        step with jitter, so that many workers do not all come back at the same instant."""
        step = self._next
        self._next = min(self._next * 2, self.cap)
        if hint is not None:  # never hammer the server, whatever it says
            wait = min(max(hint, 0.1), self.cap)
        else:
            wait = step * random.uniform(0.75, 1.25)
        if self.deadline is not None:
            wait = max(0.0, min(wait, self.deadline - time.monotonic()))
        return wait


def retry_after(value: str | None) -> float | None:
    """The seconds of a Retry-After header (the delay form; dates are not sent here)."""
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None
