"""Queue backends: how queued jobs reach something that runs them.

The controller talks to one `QueueBackend`, chosen by the `queue_backend` setting.
"""

from __future__ import annotations

from jobqueue.queue.base import LeaseLost, PullQueue, QueueBackend, WorkerCapacity


def make_backend(name: str, session_factory, settings) -> QueueBackend:
    if name == "dispatcher":
        from jobqueue.queue.dispatcher import Dispatcher

        return Dispatcher(session_factory, settings)
    raise ValueError(f"setting 'queue_backend': unknown backend {name!r} (known: dispatcher)")


__all__ = ["LeaseLost", "PullQueue", "QueueBackend", "WorkerCapacity", "make_backend"]
