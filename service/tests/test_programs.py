"""Jobs beyond a Python script: any program among the inputs (a script with a #! line,
a binary) and environment variables the submitter sets (`env`, `--export`)."""

from __future__ import annotations

import shutil

import pytest

from jobqueue.client import cli

SHELL_JOB = """\
#!/bin/sh
echo "args: $*"
echo "greeting: $GREETING"
echo "home: $HOME job: $JOBQUEUE_JOB_ID threads: $OMP_NUM_THREADS"
"""


@pytest.mark.parametrize("env, says", [
    ("x", "'env' must be an object of names to string values"),
    ({"N": 1}, "'env' must be an object of names to string values"),
    ({"1ABC": "x"}, "'1ABC' is not a variable name"),
    ({"A-B": "x"}, "'A-B' is not a variable name"),
    ({"JOBQUEUE_JOB_ID": "x"}, "JOBQUEUE_JOB_ID is set by the worker"),
    ({"HOME": "/root"}, "HOME is set by the worker"),
    ({"A": "x" * 4097}, "the value of A must be at most 4096 characters"),
    ({"A": "a\0b"}, "without NUL"),
    ({f"V{i}": "" for i in range(101)}, "at most 100 variables"),
])
def test_a_bad_environment_is_refused_naming_the_variable(stack, env, says):
    response = stack.submit(spec={"entry": "main.py", "env": env})
    assert response.status_code == 400 and says in response.get_json()["message"]
    assert stack.jobs() == []


def test_the_environment_is_kept_and_shown(stack):
    job = stack.submit_ok(spec={"entry": "main.py", "env": {"GREETING": "hi there"},
                                "array": "0-1"})
    for task in job["jobs"]:
        assert stack.job(task)["env"] == {"GREETING": "hi there"}
    assert stack.claim_ok()["env"] == {"GREETING": "hi there"}  # what the worker gets


@pytest.mark.e2e
def test_a_shell_script_runs_as_a_program_with_its_arguments_and_environment(cluster):
    c = cluster()
    c.start_worker("w1")
    job = c.client.submit({"run.sh": SHELL_JOB.encode()},
                          {"entry": "run.sh", "args": ["a b", "-c"],
                           "env": {"GREETING": "hello", "OMP_NUM_THREADS": "7"}})["id"]
    done = c.client.wait(job, timeout=60, interval=0.1)
    assert done["state"] == "succeeded", c.logs()
    out = c.client.log(job)["stdout"].splitlines()
    assert out[:2] == ["args: a b -c", "greeting: hello"]
    assert out[2].endswith(f"job: {job} threads: 7") and "home: /" in out[2]


@pytest.mark.e2e
def test_a_binary_among_the_inputs_runs(cluster):
    c = cluster()
    c.start_worker("w1")
    program = open(shutil.which("echo"), "rb").read()
    job = c.client.submit({"bin/echo": program},
                          {"entry": "bin/echo", "args": ["from", "a", "binary"]})["id"]
    done = c.client.wait(job, timeout=60, interval=0.1)
    assert done["state"] == "succeeded", c.logs()
    assert c.client.log(job)["stdout"] == "from a binary\n"


def test_export_takes_a_value_or_this_shells(monkeypatch):
    monkeypatch.setenv("FROM_SHELL", "x=1")
    monkeypatch.delenv("NOT_SET", raising=False)
    args = cli.build_parser().parse_args(
        ["submit", "run.sh", "--export", "A=b=c", "--export", "FROM_SHELL", "--export", "E="])
    assert dict(args.export) == {"A": "b=c", "FROM_SHELL": "x=1", "E": ""}
    assert cli.main(["submit", "run.sh", "--export", "NOT_SET"]) == cli.EXIT_USAGE
