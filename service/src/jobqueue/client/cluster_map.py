"""`Client.map(f, xs)`: f over many inputs across the cluster, as dispy users do, with
the service's durability and auth underneath.

The inputs are cut into chunks, submitted as one job array: a task per chunk, which
evaluates f over its chunk on all the CPUs it was given (`jobqueue.mapper`) and writes
the results. The chunks travel in one upload, a file each; every task receives all of
them (an array's tasks share one input) and reads its own. `f` travels as the
file it is defined in, which the job imports under another name, as multiprocessing's
spawn does: so f is a function defined with `def` at the top level of a module or
script, and whatever that file imports at its top must exist on the workers. Inputs and
results travel pickled: the results are unpickled here, and come from your own jobs.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import pickle
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobqueue.client import polling
from jobqueue.client.errors import WaitTimeout
from jobqueue.mapper import MapError
from jobqueue.states import FINISHED

if TYPE_CHECKING:
    from jobqueue.client.api import Client

MODULE = "jobqueue_map_f.py"
INPUT = "map-input-{}.pickle"  # the chunk of the task of that index
OUTPUT = "map-output.pickle"
RUNNER = "jobqueue_map_run.py"
MAX_JOBS = 64  # chunks by default: few enough tasks that each carries real work

# Run in the job: f over this chunk on the job's CPUs; what happened, into OUTPUT.
RUNNER_SOURCE = f'''\
import importlib.util, os, pickle, sys, traceback
from jobqueue import mapper

spec = importlib.util.spec_from_file_location("jobqueue_map_f", "{MODULE}")
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
f = getattr(module, sys.argv[1])
with open("{INPUT}".format(os.environ["JOBQUEUE_ARRAY_TASK_ID"]), "rb") as fh:
    first, items = pickle.load(fh)
try:
    outcome = {{"results": mapper.map(f, items)}}
except mapper.MapError as exc:
    at = None if exc.index is None else first + exc.index
    outcome = {{"error": (at, exc.item_repr, exc.exc_type, exc.exc_message,
                          exc.remote_traceback)}}
with open("{OUTPUT}", "wb") as fh:
    pickle.dump(outcome, fh)
'''


def source_file_of(f: Callable) -> Path:
    """The file defining `f`, which must be a top-level `def` so the job can find it."""
    if not inspect.isfunction(f) or f.__name__ == "<lambda>" or f.__closure__ \
            or f.__qualname__ != f.__name__:
        raise TypeError(f"map needs a function defined with def at the top level of a module "
                        f"or script (it is sent as that file); got {f!r}")
    path = inspect.getsourcefile(f)
    if path is None or not Path(path).is_file():
        raise TypeError(f"map cannot find the file that defines {f.__name__}")
    return Path(path)


def cluster_map(client: Client, f: Callable, xs: Iterable[Any], *, chunk_size: int | None = None,
                cpus: int = 1, name: str | None = None, timeout: float | None = None,
                **spec: Any) -> list[Any]:
    module = source_file_of(f).read_bytes()
    items = list(xs)
    if not items:
        return []
    size = chunk_size or math.ceil(len(items) / MAX_JOBS)
    if size < 1:
        raise ValueError("chunk_size must be at least 1")
    starts = range(0, len(items), size)
    name = name or f"map-{f.__name__}"
    files = {MODULE: module, RUNNER: RUNNER_SOURCE.encode()}
    for n, first in enumerate(starts):
        files[INPUT.format(n)] = pickle.dumps((first, items[first:first + size]))
    made = client.submit(files, {"entry": RUNNER, "args": [f.__name__], "cpus": cpus,
                                 "name": name, **spec}, array=f"0-{len(starts) - 1}")
    # Task n's job id -> the index of its chunk's first input (ids come in index order).
    jobs = dict(zip(made["jobs"], starts, strict=True))
    try:
        results: list[Any] = [None] * len(items)
        for job in _as_completed(client, made["array"]["id"], timeout):
            first = jobs[job["id"]]
            outcome = _outcome(client, job)
            if "error" in outcome:
                raise MapError(*outcome["error"])
            results[first:first + len(outcome["results"])] = outcome["results"]
        return results
    except BaseException:
        # The rest is wasted work now; if the controller is gone, nothing can be stopped.
        with contextlib.suppress(Exception):
            client.cancel_array(made["array"]["id"])
        raise


def _as_completed(client: Client, array_id: str, timeout: float | None
                  ) -> Iterator[dict[str, Any]]:
    """Each task of the array once it has finished, polling all of them in one request."""
    seen: set[str] = set()
    outage = polling.Outage()
    for _ in polling.every(timeout):
        with outage:
            tasks = client.list(array=array_id)
        if not outage.ok:
            continue
        for job in tasks:
            if job["state"] in FINISHED and job["id"] not in seen:
                seen.add(job["id"])
                yield job
        if len(seen) == len(tasks):
            return
    raise WaitTimeout(client.array(array_id), timeout or 0.0)


def _outcome(client: Client, job: dict[str, Any]) -> dict[str, Any]:
    if job.get("state") == "succeeded":
        return pickle.loads(client.read_file(job["id"], OUTPUT))  # from one's own job
    stderr = client.log(job["id"]).get("stderr", "").strip().splitlines()
    # What the system says (exit status, limit), then the job's own last word: the
    # error that ended it, which an unguarded script's traceback carries.
    said = f" ({job['message']})" if job.get("message") else ""
    last = f": {stderr[-1]}" if stderr else ""
    return {"error": (None, f"job {job['id']}", "JobFailed",
                      f"the job ended {job.get('state')}{said}{last}", "\n".join(stderr[-20:]))}


__all__ = ["cluster_map", "source_file_of"]
