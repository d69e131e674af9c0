"""`Client.map(f, xs)` end to end: a real controller and worker, f sent as its file,
results in order, the failing input named, the remaining jobs cancelled."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from jobqueue.client.cluster_map import source_file_of
from jobqueue.mapper import MapError
from conftest import Cluster

pytestmark = pytest.mark.e2e

FUNCTIONS = '''
import math
import time

SLOW = 625.0  # takes a while: a test's later inputs are still to run when one fails


def root(x):
    if x < 0:
        raise ValueError(f"no real root of {x}")
    if x == SLOW:
        time.sleep(2)
    return math.sqrt(x)

if __name__ == "__main__":
    raise SystemExit("the job must not run this")
'''


@pytest.fixture
def functions(tmp_path):
    path = tmp_path / "lab_functions.py"
    path.write_text(FUNCTIONS)
    spec = importlib.util.spec_from_file_location("lab_functions", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules["lab_functions"] = module
    yield module
    sys.modules.pop("lab_functions", None)


def test_map_runs_f_across_the_cluster_in_order(cluster, functions):
    c: Cluster = cluster()
    c.start_worker("w1", cpus=2)
    c.start_worker("w2")
    xs = [float(n * n) for n in range(30)]
    assert c.client.map(functions.root, xs, chunk_size=7, timeout=120) == list(range(30))
    jobs = c.client.list()
    # One array of a task per chunk of 7 inputs, every task run once.
    assert len(jobs) == 5 and {j["name"] for j in jobs} == {"map-root"}
    assert sorted(j["array"]["index"] for j in jobs) == list(range(5))
    assert len({j["array"]["id"] for j in jobs}) == 1
    assert all(j["attempts"] == 1 for j in jobs)
    assert {j["worker"] for j in jobs} == {"w1", "w2"}


def test_map_names_the_failing_input_and_cancels_the_rest(cluster, functions):
    c: Cluster = cluster()
    c.start_worker("w1")
    xs = [4.0, 9.0, -1.0, 16.0] + [functions.SLOW] * 12
    with pytest.raises(MapError) as raised:
        c.client.map(functions.root, xs, chunk_size=2, timeout=120)
    assert raised.value.index == 2 and raised.value.exc_type == "ValueError"
    assert "no real root of -1.0" in str(raised.value)
    states = [j["state"] for j in c.client.list()]
    assert "queued" not in states and "cancelled" in states


UNGUARDED = '''
import os

SETTING = os.environ["LAB_SETTING"]  # set on the laptop, not in the job

def double(x):
    return 2 * x
'''


def test_a_job_that_fails_before_f_runs_is_reported_with_its_own_error(
        cluster, tmp_path, monkeypatch):
    """A module whose top level fails in the job (not guarded, or relying on the
    laptop): the error says so, not only "exited with status 1"."""
    monkeypatch.setenv("LAB_SETTING", "here")
    path = tmp_path / "unguarded.py"
    path.write_text(UNGUARDED)
    spec = importlib.util.spec_from_file_location("unguarded", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setitem(sys.modules, "unguarded", module)
    c: Cluster = cluster()
    c.start_worker("w1")
    with pytest.raises(MapError) as raised:
        c.client.map(module.double, [1, 2], timeout=120)
    assert "exited with status 1" in str(raised.value)
    assert "KeyError: 'LAB_SETTING'" in str(raised.value)


def test_map_wants_a_function_it_can_send():
    with pytest.raises(TypeError, match="top level"):
        source_file_of(lambda x: x)

    def inner(x):
        return x

    with pytest.raises(TypeError, match="top level"):
        source_file_of(inner)
