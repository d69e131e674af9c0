"""Test-only fault injection: with `JOBQUEUE_FAULT=<point>[@<n>]` in its environment, a
process kills itself with SIGKILL the n-th time (default: the first) it reaches that
point, so the crash tests can stop the controller at an exact step. Unset, a point
costs one dictionary lookup."""

from __future__ import annotations

import os
import signal
import threading

_point, _, _nth = os.environ.get("JOBQUEUE_FAULT", "").partition("@")
_left = {_point: int(_nth or 1)} if _point else {}
_lock = threading.Lock()


def point(name: str) -> None:
    """Die here if this is the armed fault point (and its turn has come)."""
    if name not in _left:
        return
    with _lock:
        _left[name] -= 1
        if _left[name] == 0:
            os.kill(os.getpid(), signal.SIGKILL)
