"""`jobqueue-admin scheduler`: the reconcile loop of a batch-scheduler backend (slurm),
in a process of its own on the controller host, so that no Slurm command ever runs in
one of Apache's request threads. One pass every `--interval` seconds (see
`jobqueue.queue.batch`); a failed pass is logged and the next one tries again, so a
restart of this process, of slurmctld or of the database loses nothing.
"""

from __future__ import annotations

import logging
import signal
import threading

from sqlalchemy.exc import SQLAlchemyError

from jobqueue.controller.db import make_session_factory
from jobqueue.queue import make_backend
from jobqueue.queue.batch import BatchQueue, SchedulerError

log = logging.getLogger("jobqueue.scheduler")


def run(settings, engine, interval: float, passes: int | None = None) -> int:
    backend = make_backend(settings.queue_backend, make_session_factory(engine), settings)
    if not isinstance(backend, BatchQueue):
        log.error("queue_backend %r has no scheduler to reconcile with", backend.name)
        return 2
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    log.info("reconciling with %s every %.1f s", backend.name, interval)
    done = 0
    while not stop.is_set() and (passes is None or done < passes):
        try:
            backend.reconcile()
        except (SchedulerError, SQLAlchemyError) as exc:
            log.warning("reconcile pass failed: %s", exc)
        done += 1
        stop.wait(interval)
    backend.close()
    return 0
