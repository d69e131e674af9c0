"""Fork-based parallel map that preserves order and reports failures with their input."""

from __future__ import annotations

import builtins
import contextlib
import math
import multiprocessing
import os
import pickle
import signal
import traceback
from collections.abc import Callable, Iterable, Sequence
from multiprocessing.connection import Connection, wait
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")

# Read in this order; the first valid positive integer wins.
CPU_ENV_VARS = ("JOBQUEUE_CPUS", "SLURM_CPUS_PER_TASK", "SLURM_CPUS_ON_NODE")

_REPR_LIMIT = 200

# True inside a mapper child: daemonic children cannot fork their own pool, so nested
# calls to map() run serially instead of failing.
_in_child = False


class MapError(Exception):
    """``f`` raised (or its process died) while evaluating one of the inputs.

    Attributes: ``index`` of the failing input (None when unknown), ``item_repr``,
    ``exc_type`` (qualified name of the original exception type), ``exc_message``,
    ``remote_traceback`` (text, from the child process) and ``original`` (the original
    exception when it could be passed back, else None). The original is also the
    ``__cause__`` of this error.
    """

    def __init__(
        self,
        index: int | None,
        item_repr: str,
        exc_type: str,
        exc_message: str,
        remote_traceback: str = "",
        original: BaseException | None = None,
    ) -> None:
        self.index = index
        self.item_repr = item_repr
        self.exc_type = exc_type
        self.exc_message = exc_message
        self.remote_traceback = remote_traceback
        self.original = original
        where = f"input {index} ({item_repr})" if index is not None else item_repr
        super().__init__(f"f failed on {where}: {exc_type}: {exc_message}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            type(self),
            (
                self.index,
                self.item_repr,
                self.exc_type,
                self.exc_message,
                self.remote_traceback,
                None,
            ),
        )


class RemoteTraceback(Exception):
    """Carries a child's traceback text so it is shown when the chained error is printed."""

    def __str__(self) -> str:
        return "\n" + str(self.args[0])


def cpus() -> int:
    """CPUs this job may use: JOBQUEUE_CPUS, else Slurm's allocation, else the CPU affinity."""
    for name in CPU_ENV_VARS:
        value = os.environ.get(name, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no sched_getaffinity on this platform
        return os.cpu_count() or 1


def map(
    f: Callable[[T], R],
    xs: Iterable[T],
    cpus: int | None = None,
    chunksize: int | None = None,
) -> list[R]:
    """Return ``[f(x) for x in xs]``, evaluated in parallel over ``cpus`` processes.

    ``cpus`` defaults to :func:`cpus`. ``chunksize`` is how many consecutive inputs a child
    takes at a time (default: enough for about four chunks per process). On the first failure
    the remaining work is stopped and :class:`MapError` is raised.
    """
    items = xs if isinstance(xs, Sequence) else builtins.list(xs)
    n_procs = _default_cpus() if cpus is None else int(cpus)
    if n_procs < 1:
        raise ValueError(f"cpus must be at least 1, got {cpus}")
    if chunksize is not None and int(chunksize) < 1:
        raise ValueError(f"chunksize must be at least 1, got {chunksize}")
    n_procs = min(n_procs, len(items))
    if n_procs <= 1 or _in_child or "fork" not in multiprocessing.get_all_start_methods():
        return _serial(f, items)
    if chunksize is None:
        chunksize = max(1, math.ceil(len(items) / (n_procs * 4)))
    return _parallel(f, items, n_procs, int(chunksize))


_default_cpus = cpus  # map()'s parameter shadows the function of the same name


def _serial(f: Callable[[T], R], items: Sequence[T]) -> list[R]:
    results = []
    for index, item in enumerate(items):
        try:
            results.append(f(item))
        except Exception as exc:
            raise MapError(
                index,
                _short_repr(item),
                _type_name(type(exc)),
                str(exc),
                traceback.format_exc(),
                exc,
            ) from exc
    return results


def _parallel(f: Callable[[T], R], items: Sequence[T], n_procs: int, chunksize: int) -> list[R]:
    ctx = multiprocessing.get_context("fork")
    chunks = [
        (start, min(start + chunksize, len(items))) for start in range(0, len(items), chunksize)
    ]
    next_chunk = 0
    results: list[Any] = [None] * len(items)
    done = 0
    # One duplex pipe per child: the parent hands a child its next chunk only after the child
    # returned its previous one, so it always knows which inputs a child is working on.
    procs: list[Any] = []
    conns: dict[Connection, int] = {}
    in_flight: dict[int, tuple[int, int] | None] = {}
    try:
        for slot in range(n_procs):
            parent_end, child_end = ctx.Pipe(duplex=True)
            # fork context: f and items are inherited, never pickled.
            proc = ctx.Process(target=_child_main, args=(f, items, child_end), daemon=True)
            proc.start()
            child_end.close()
            procs.append(proc)
            conns[parent_end] = slot
            in_flight[slot] = None
        for conn, slot in conns.items():
            if next_chunk < len(chunks):
                in_flight[slot] = chunks[next_chunk]
                conn.send(chunks[next_chunk])
                next_chunk += 1
        sentinels = {proc.sentinel: slot for slot, proc in enumerate(procs)}
        waiting: list[Any] = [*conns, *sentinels]
        while done < len(chunks):
            for ready in wait(waiting):
                if isinstance(ready, Connection):
                    slot = conns[ready]
                    try:
                        message = ready.recv()
                    except EOFError:
                        if in_flight[slot] is not None:
                            _raise_died(procs[slot], in_flight[slot], items)
                        waiting.remove(ready)  # an idle child went away; nothing was lost
                        continue
                    if message[0] != "ok":
                        _raise_remote(message, items)
                    _, start, values = message
                    results[start : start + len(values)] = values
                    done += 1
                    in_flight[slot] = None
                    if next_chunk < len(chunks):
                        in_flight[slot] = chunks[next_chunk]
                        ready.send(chunks[next_chunk])
                        next_chunk += 1
                else:
                    # A child exited. Its pipe reports end-of-file (or its last message),
                    # which the branch above handles; stop watching the sentinel itself.
                    waiting.remove(ready)
        return results
    finally:
        for conn in conns:
            with contextlib.suppress(OSError):  # the child may be gone already
                conn.send(None)  # lets idle children exit cleanly
        for proc in procs:
            proc.join(timeout=0.05)
        for proc in procs:
            if proc.is_alive():
                proc.kill()  # a failure elsewhere: stop work in progress at once
            proc.join()
        for conn in conns:
            conn.close()


def _child_main(f: Callable[[Any], Any], items: Sequence[Any], conn: Connection) -> None:
    global _in_child
    _in_child = True
    # Ctrl-C reaches the whole process group; the parent handles it and stops the children.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        try:
            task = conn.recv()
        except EOFError:
            return
        if task is None:
            return
        start, stop = task
        values = []
        for index in range(start, stop):
            try:
                values.append(f(items[index]))
            except BaseException as exc:  # everything is reported to the parent
                conn.send(_failure(index, items[index], exc, traceback.format_exc()))
                return
        try:
            conn.send(("ok", start, values))
        except Exception as exc:  # pickling can fail with any error type
            bad = next((i for i, v in enumerate(values) if not _picklable(v)), 0)
            conn.send(
                _failure(
                    start + bad,
                    items[start + bad],
                    exc,
                    traceback.format_exc(),
                    f"its result could not be sent back to the parent: {exc}",
                )
            )
            return


def _failure(
    index: int, item: Any, exc: BaseException, tb_text: str, message: str | None = None
) -> tuple[Any, ...]:
    try:
        exc_bytes: bytes | None = pickle.dumps(exc)
    except Exception:  # fall back to type name, message and traceback text
        exc_bytes = None
    text = str(exc) if message is None else message
    return ("error", index, _short_repr(item), _type_name(type(exc)), text, tb_text, exc_bytes)


def _raise_remote(message: tuple[Any, ...], items: Sequence[Any]) -> None:
    _, index, item_repr, exc_type, exc_message, tb_text, exc_bytes = message
    original: BaseException | None = None
    if exc_bytes is not None:
        try:
            original = pickle.loads(exc_bytes)
        except Exception:  # rebuilding a foreign exception can fail any way
            original = None  # e.g. an exception class whose __init__ needs other arguments
    cause = original if original is not None else RemoteTraceback(tb_text)
    if original is not None:
        original.__cause__ = RemoteTraceback(tb_text)
    raise MapError(index, item_repr, exc_type, exc_message, tb_text, original) from cause


def _raise_died(proc: Any, chunk: tuple[int, int] | None, items: Sequence[Any]) -> None:
    proc.join(timeout=1)
    code = proc.exitcode
    how = f"was killed by signal {-code}" if code is not None and code < 0 else f"exited ({code})"
    if chunk is None:
        raise MapError(None, "a worker process", "ProcessDied", f"the process {how}")
    start, stop = chunk
    if stop - start == 1:
        raise MapError(start, _short_repr(items[start]), "ProcessDied", f"the process {how}")
    raise MapError(
        None,
        f"one of inputs {start}..{stop - 1}",
        "ProcessDied",
        f"the process {how}; use chunksize=1 to find the exact input",
    )


def _picklable(value: Any) -> bool:
    try:
        pickle.dumps(value)
    except Exception:  # any pickling error means the same here
        return False
    return True


def _short_repr(item: Any) -> str:
    try:
        text = repr(item)
    except Exception as exc:  # a broken __repr__ must not hide the real failure
        text = f"<unrepresentable {type(item).__name__}: {exc!r}>"
    if len(text) > _REPR_LIMIT:
        text = text[: _REPR_LIMIT - 3] + "..."
    return text


def _type_name(cls: type) -> str:
    module = cls.__module__
    return (
        cls.__qualname__ if module in ("builtins", "__main__") else f"{module}.{cls.__qualname__}"
    )
