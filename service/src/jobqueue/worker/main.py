"""`jobqueue-worker`: claim jobs from the controller and run each through a Runner
(`jobqueue.worker.daemon`), or with --one-job run the one job a batch scheduler
started here (`jobqueue.worker.one_job`)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys

from jobqueue.config import load_or_report
from jobqueue.worker import settings as settings_module
from jobqueue.worker.daemon import Worker

log = logging.getLogger("jobqueue.worker")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jobqueue-worker", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="settings file (default: $JOBQUEUE_WORKER_CONFIG or "
                        f"{settings_module.DEFAULT_PATH})")
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("--one-job", metavar="JOB_ID",
                        help="run this one job, which a batch scheduler (Slurm) started "
                        "here, then exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    settings = load_or_report(settings_module.load, args.config, "jobqueue-worker")
    if settings is None:
        return 2
    if args.one_job:
        from jobqueue.worker import one_job
        try:
            return one_job.run(settings, args.one_job)
        except RuntimeError as exc:  # not in a scheduler's job; a slot check failed
            log.error("%s", exc)
            return 1
    worker = Worker(settings)
    signal.signal(signal.SIGTERM, worker.stop)
    signal.signal(signal.SIGINT, worker.stop)
    try:
        worker.serve()
    except RuntimeError as exc:  # the runner's self-check: refuse to run jobs unconfined
        log.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
