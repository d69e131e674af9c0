"""Start a job that dies with its worker, under its resource limits, without a Python start.

`command(rlimits, argv)` is `prlimit LIMITS -- sh -c TETHER sh ARGV...`: util-linux's
prlimit sets the limits (in bytes, soft and hard alike), then a few lines of sh leave a
watcher behind and exec the job. The two small C programs cost about 1 ms where a
Python shim cost 20 (measured with `make bench`).

The caller gives the read end of a pipe, whose write end only the worker holds, as
standard input. The watcher reads it: end-of-file means the worker is gone (even by
SIGKILL) or done with the job, and the watcher kills the job's whole process group, so
a job never runs on with nobody to report it while its lease expires and it starts
again elsewhere. The watcher is started in a subshell that exits at once, so it is not
the job's child (a job waiting for all its children would wait for it), and it ignores
the signals the worker stops a job with, which the job itself receives as they come.
The job is the process the caller started: its exit status and resource usage are its
own, and its standard input is /dev/null.
"""

from __future__ import annotations

from jobqueue.worker.limits import prlimit_options

TETHER = """\
exec 9<&0 </dev/null
( ( trap '' HUP INT TERM; read -r _ <&9; kill -9 0 ) & )
exec "$@" 9<&-
"""


def command(rlimits: dict[str, int], argv: list[str]) -> list[str]:
    return ["prlimit", *prlimit_options(rlimits), "--", "/bin/sh", "-c", TETHER, "sh", *argv]
