"""jobqueue: a shared scientific job service (controller, queue, worker, mapper, client)."""

__version__ = "0.1.0"
