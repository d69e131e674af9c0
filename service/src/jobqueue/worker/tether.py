"""Run a job that dies with its worker: `python -m jobqueue.worker.tether FD LIMITS -- argv`.

FD is the read end of a pipe whose write end only the worker holds. The tether starts
the job as its child (resource limits applied in the child, just before exec, which is
safe here and not in the threaded worker) and waits for it. If the worker dies, even
by SIGKILL, the pipe reads end-of-file and the tether kills its whole process group:
the job cannot run on with nobody to report it while its lease expires and it starts
again elsewhere. Otherwise the tether ends as the job did (same status or signal).
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys
import threading

from jobqueue.worker import limits

# The worker stops a job by signalling the process group: the job handles those
# signals, the tether waits for it to end and then reports how it ended.
PASSED_ON = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def _watch_worker(fd: int) -> None:
    try:
        while os.read(fd, 1):
            pass  # the worker never writes; end-of-file means it is gone
    except OSError as exc:
        print(f"jobqueue tether: cannot watch the worker ({exc}); the job is not tethered",
              file=sys.stderr)
        return
    os.killpg(os.getpgrp(), signal.SIGKILL)


def _start(command: list[str], rlimits: dict[str, int], fd: int) -> int:
    pid = os.fork()
    if pid:
        return pid
    try:
        for signum in PASSED_ON:
            signal.signal(signum, signal.SIG_DFL)
        os.close(fd)
        limits.apply(rlimits)
        os.execvp(command[0], command)
    except BaseException as exc:
        print(f"jobqueue: cannot start {command[0]}: {exc}", file=sys.stderr)
    os._exit(127)


def main(argv: list[str]) -> None:
    if len(argv) < 4 or argv[2] != "--":
        sys.exit("usage: python -m jobqueue.worker.tether FD LIMITS_JSON -- COMMAND [ARG...]")
    fd, rlimits, command = int(argv[0]), json.loads(argv[1]), argv[3:]
    for signum in PASSED_ON:
        signal.signal(signum, signal.SIG_IGN)
    pid = _start(command, rlimits, fd)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    threading.Thread(target=_watch_worker, args=(fd,), daemon=True).start()
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        if signum != signal.SIGKILL:  # its handler cannot be set (Python ignores SIGPIPE...)
            signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
    sys.exit(os.waitstatus_to_exitcode(status))


if __name__ == "__main__":
    main(sys.argv[1:])
