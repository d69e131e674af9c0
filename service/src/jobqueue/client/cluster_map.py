"""`Client.map(f, xs)`: f over many inputs across the cluster, as dispy users do, with
the service's durability and auth underneath.

The inputs are cut into chunks, one job each; a job evaluates f over its chunk on all
the CPUs it was given (`jobqueue.mapper`) and writes the results. `f` travels as the
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
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobqueue.mapper import MapError

if TYPE_CHECKING:
    from jobqueue.client.api import Client

MODULE = "jobqueue_map_f.py"
INPUT = "map-input.pickle"
OUTPUT = "map-output.pickle"
RUNNER = "jobqueue_map_run.py"
MAX_JOBS = 64  # chunks by default: few enough jobs that each carries real work

# Run in the job: f over this chunk on the job's CPUs; what happened, into OUTPUT.
RUNNER_SOURCE = f'''\
import importlib.util, pickle, sys, traceback
from jobqueue import mapper

spec = importlib.util.spec_from_file_location("jobqueue_map_f", "{MODULE}")
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
f = getattr(module, sys.argv[1])
with open("{INPUT}", "rb") as fh:
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
    runner = RUNNER_SOURCE.encode()
    jobs: dict[str, int] = {}
    try:
        for n, first in enumerate(starts):
            files = {MODULE: module, RUNNER: runner,
                     INPUT: pickle.dumps((first, items[first:first + size]))}
            job = client.submit(files, {"entry": RUNNER, "args": [f.__name__], "cpus": cpus,
                                        "name": f"{name}-{n}", **spec})
            jobs[job["id"]] = first
        results: list[Any] = [None] * len(items)
        for job in client.as_completed(list(jobs), timeout=timeout):
            first = jobs[job["id"]]
            outcome = _outcome(client, job)
            if "error" in outcome:
                raise MapError(*outcome["error"])
            results[first:first + len(outcome["results"])] = outcome["results"]
        return results
    except BaseException:
        for job_id in jobs:  # the rest is wasted work now
            # Already finished, or the controller is gone: nothing to stop.
            with contextlib.suppress(Exception):
                client.cancel(job_id)
        raise


def _outcome(client: Client, job: dict[str, Any]) -> dict[str, Any]:
    if job.get("state") == "succeeded":
        return pickle.loads(client.read_file(job["id"], OUTPUT))  # from one's own job
    stderr = client.log(job["id"]).get("stderr", "").strip().splitlines()
    reason = job.get("message") or (stderr[-1] if stderr else "no message")
    return {"error": (None, f"job {job['id']}", "JobFailed",
                      f"the job ended {job.get('state')}: {reason}", "\n".join(stderr[-20:]))}


__all__ = ["cluster_map", "source_file_of"]
