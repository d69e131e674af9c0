"""Queue backends: how queued jobs reach something that runs them.

The controller talks to one `QueueBackend`, chosen by the `queue_backend` setting.
Backends register themselves by being here: every module of this package that defines
a `QueueBackend` subclass with a `name` is one (as are entry points of the group
`jobqueue.queue_backends`, for backends that live in other packages). Adding one is
adding its module.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from importlib.metadata import entry_points
from typing import Any

from jobqueue.config import ConfigError, settings_from_table
from jobqueue.queue.base import (
    LeasedQueue,
    LeaseLost,
    PullQueue,
    QueueBackend,
    QueueEvents,
    WorkerCapacity,
)

ENTRY_POINTS = "jobqueue.queue_backends"


def backends() -> dict[str, type[QueueBackend]]:
    """Every backend there is, by name."""
    found: dict[str, type[QueueBackend]] = {}
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, QueueBackend) and cls.__module__ == module.__name__ \
                    and not inspect.isabstract(cls) and getattr(cls, "name", None):
                found[cls.name] = cls
    for entry in entry_points(group=ENTRY_POINTS):
        found.setdefault(entry.name, entry.load())
    return found


def backend_class(name: str, settings) -> tuple[type[QueueBackend], Any]:
    """The backend named `name` and its own settings (the `[queue.NAME]` table), or
    ConfigError naming what is wrong."""
    known = backends()
    if name not in known:
        raise ConfigError(f"setting 'queue_backend': unknown backend {name!r} "
                          f"(known: {', '.join(sorted(known))})")
    cls = known[name]
    table = settings.queue.get(name, {})
    if cls.Settings is None and table:
        raise ConfigError(f"[queue.{name}]: the {name} backend takes no settings")
    own = settings_from_table(cls.Settings, table, f"[queue.{name}]") if cls.Settings else None
    return cls, own


def make_backend(name: str, session_factory, settings,
                 events: QueueEvents | None = None) -> QueueBackend:
    cls, own = backend_class(name, settings)
    return cls(session_factory, settings, events or QueueEvents(), own)


__all__ = ["LeasedQueue", "LeaseLost", "PullQueue", "QueueBackend", "QueueEvents", "WorkerCapacity",
           "backend_class", "backends", "make_backend"]
