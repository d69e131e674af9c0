"""jobqueue.mapper: order, real parallelism, failures, closures, CPU count, serial fallback."""

from __future__ import annotations

import os
import time

import pytest

from jobqueue import mapper


@pytest.fixture(autouse=True)
def _clean_cpu_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("JOBQUEUE_CPUS", "SLURM_CPUS_PER_TASK", "SLURM_CPUS_ON_NODE"):
        monkeypatch.delenv(name, raising=False)


def test_order_is_preserved_with_uneven_work() -> None:
    # Early inputs sleep longest, so they finish last; the result must still be in input order.
    def slow_square(x: int) -> int:
        time.sleep(0.002 * (20 - x))
        return x * x

    assert mapper.map(slow_square, range(20), cpus=2, chunksize=1) == [x * x for x in range(20)]


def test_runs_in_several_processes() -> None:
    def pid_after_a_pause(_: int) -> int:
        time.sleep(0.05)
        return os.getpid()

    pids = mapper.map(pid_after_a_pause, range(8), cpus=2, chunksize=1)
    assert len(set(pids)) == 2
    assert os.getpid() not in pids


def test_lambda_and_closure() -> None:
    offset = 10
    assert mapper.map(lambda x: x + offset, [1, 2, 3], cpus=2) == [11, 12, 13]

    def make_scaler(k: int):
        return lambda x: x * k

    assert mapper.map(make_scaler(3), range(5), cpus=2) == [0, 3, 6, 9, 12]


def test_generator_input_is_materialised() -> None:
    assert mapper.map(str, (i for i in range(7)), cpus=2) == [str(i) for i in range(7)]


def test_empty_input() -> None:
    assert mapper.map(str, [], cpus=4) == []


def test_exception_names_the_failing_input() -> None:
    def fails_on_seven(x: int) -> int:
        if x == 7:
            raise ValueError(f"seven is not allowed (got {x})")
        return x

    with pytest.raises(mapper.MapError) as caught:
        mapper.map(fails_on_seven, range(20), cpus=2)
    err = caught.value
    assert err.index == 7
    assert err.item_repr == "7"
    assert err.exc_type == "ValueError"
    assert "seven is not allowed (got 7)" in err.exc_message
    assert "input 7" in str(err) and "ValueError" in str(err)
    assert isinstance(err.original, ValueError)
    assert err.__cause__ is err.original
    assert "fails_on_seven" in err.remote_traceback


def test_exception_that_cannot_be_rebuilt_still_reports_type_and_message() -> None:
    class NeedsTwoArgs(Exception):
        def __init__(self, a: str, b: int) -> None:
            super().__init__(a)
            self.b = b

    def fails(x: int) -> int:
        if x == 2:
            raise NeedsTwoArgs("odd failure", 1)
        return x

    with pytest.raises(mapper.MapError) as caught:
        mapper.map(fails, range(4), cpus=2, chunksize=1)
    assert caught.value.index == 2
    assert "NeedsTwoArgs" in caught.value.exc_type
    assert caught.value.exc_message == "odd failure"


def test_failure_stops_the_pool_promptly() -> None:
    def fail_fast_or_sleep(x: int) -> int:
        if x == 0:
            raise RuntimeError("boom")
        time.sleep(30)
        return x

    started = time.monotonic()
    with pytest.raises(mapper.MapError) as caught:
        mapper.map(fail_fast_or_sleep, range(4), cpus=2, chunksize=1)
    assert caught.value.index == 0
    assert time.monotonic() - started < 10


def test_a_dying_process_is_reported() -> None:
    def exits_on_three(x: int) -> int:
        if x == 3:
            os._exit(5)
        return x

    with pytest.raises(mapper.MapError) as caught:
        mapper.map(exits_on_three, range(6), cpus=2, chunksize=1)
    assert caught.value.index == 3
    assert "exited (5)" in str(caught.value)


def test_unpicklable_result_is_reported() -> None:
    with pytest.raises(mapper.MapError) as caught:
        mapper.map(lambda x: lambda: x, range(3), cpus=2, chunksize=1)
    assert caught.value.index is not None
    assert "could not be sent back" in str(caught.value)


def test_serial_fallback_with_one_cpu_runs_in_this_process() -> None:
    assert mapper.map(lambda _: os.getpid(), range(5), cpus=1) == [os.getpid()] * 5
    # One item never needs a pool either.
    assert mapper.map(lambda _: os.getpid(), [0], cpus=8) == [os.getpid()]


def test_serial_fallback_reports_failures_the_same_way() -> None:
    with pytest.raises(mapper.MapError) as caught:
        mapper.map(lambda x: 1 // (x - 1), range(3), cpus=1)
    assert caught.value.index == 1
    assert isinstance(caught.value.__cause__, ZeroDivisionError)


def test_nested_map_runs_serially_inside_a_child() -> None:
    result = mapper.map(lambda x: mapper.map(lambda y: x * y, range(3), cpus=2), range(3), cpus=2)
    assert result == [[0, 0, 0], [0, 1, 2], [0, 2, 4]]


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        mapper.map(str, [1, 2], cpus=0)
    with pytest.raises(ValueError):
        mapper.map(str, [1, 2], cpus=2, chunksize=0)


def test_cpus_environment_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    affinity = len(os.sched_getaffinity(0))
    assert mapper.cpus() == affinity

    monkeypatch.setenv("SLURM_CPUS_ON_NODE", "5")
    assert mapper.cpus() == 5
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "4")
    assert mapper.cpus() == 4
    monkeypatch.setenv("JOBQUEUE_CPUS", "3")
    assert mapper.cpus() == 3

    # Unusable values are skipped rather than trusted.
    monkeypatch.setenv("JOBQUEUE_CPUS", "0")
    assert mapper.cpus() == 4
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "lots")
    assert mapper.cpus() == 5


def test_default_cpus_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBQUEUE_CPUS", "1")
    # One CPU given to the job: everything runs in this process.
    assert mapper.map(lambda _: os.getpid(), range(4)) == [os.getpid()] * 4

    monkeypatch.setenv("JOBQUEUE_CPUS", "2")

    def pid_after_a_pause(_: int) -> int:
        time.sleep(0.05)
        return os.getpid()

    assert len(set(mapper.map(pid_after_a_pause, range(6), chunksize=1))) == 2
