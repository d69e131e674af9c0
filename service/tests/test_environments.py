"""Software environments: the lab declares them (the controller's `environments`),
workers offer them (their `environments`: name -> virtualenv), a job names one and runs
with that environment's Python and programs, only on a worker that offers it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from jobqueue.config import ConfigError
from jobqueue.controller.settings import ControllerSettings


def claim_with(stack, environments, who="w1"):
    body = {"worker": who, "cpus": 1, "wait": 0,
            "capacity": {"cpus": 1, "environments": environments}}
    return stack.http.post("/api/v1/worker/claim", json=body, headers=stack.headers(who))


def test_an_environment_the_service_does_not_declare_is_refused_naming_those_it_does(
        make_stack):
    stack = make_stack(environments=["analysis", "refl1d"])
    response = stack.submit(spec={"entry": "main.py", "environment": "conda-old"})
    assert response.status_code == 400
    assert response.get_json()["message"] == (
        "spec field 'environment': 'conda-old' is not one of this service's environments "
        "(analysis, refl1d)")
    assert stack.jobs() == []


def test_a_job_in_an_environment_goes_only_to_a_worker_offering_it(make_stack):
    stack = make_stack(environments=["analysis"])
    job = stack.submit_ok(spec={"entry": "main.py", "environment": "analysis"})
    assert job["environment"] == "analysis"
    assert claim_with(stack, []).status_code == 204
    assert stack.claim().status_code == 204  # a worker that says nothing offers none
    shown = stack.job(job["id"])
    assert shown["pending_reason"] == ("no worker offers the environment 'analysis' yet: it "
                                       "waits for one that does")
    claimed = claim_with(stack, ["analysis"], who="w2")
    assert claimed.status_code == 200 and claimed.get_json()["id"] == job["id"]


def test_a_job_without_one_runs_anywhere_and_the_default_applies(make_stack):
    stack = make_stack(environments=["analysis"], default_environment="analysis")
    assert stack.submit_ok()["environment"] == "analysis"
    plain = make_stack(environments=["analysis"]).submit_ok()
    assert plain["environment"] is None


def test_a_default_environment_must_be_declared():
    with pytest.raises(ConfigError, match="'default_environment'"):
        ControllerSettings(environments=["a"], default_environment="b")


def test_workers_say_which_environments_they_offer(make_stack):
    stack = make_stack(environments=["analysis"])
    claim_with(stack, ["analysis", "analysis", "other"])
    workers = stack.http.get("/api/v1/workers", headers=stack.headers("root")).get_json()
    assert workers[0]["environments"] == ["analysis", "other"]
    bad = claim_with(stack, "analysis")
    assert bad.status_code == 400 and "capacity.environments" in bad.get_json()["message"]


PROBE = """\
import json, os, subprocess, sys
print(json.dumps({"prefix": sys.prefix, "virtual_env": os.environ.get("VIRTUAL_ENV"),
                  "python_on_path": subprocess.run(["sh", "-c", "command -v python"],
                                                   capture_output=True, text=True).stdout.strip()}))
"""


@pytest.mark.e2e
def test_a_job_runs_with_its_environments_python_and_programs(cluster, tmp_path):
    venv = tmp_path / "envs" / "analysis"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    c = cluster(environments=["analysis"])
    c.start_worker("w1", environments={"analysis": str(venv)})
    inside = c.submit(PROBE, environment="analysis")
    outside = c.submit(PROBE)
    for job in (inside, outside):
        assert c.client.wait(job, timeout=60, interval=0.1)["state"] == "succeeded", c.logs()
    seen = json.loads(c.client.log(inside)["stdout"])
    assert seen == {"prefix": str(venv), "virtual_env": str(venv),
                    "python_on_path": f"{venv}/bin/python"}
    assert json.loads(c.client.log(outside)["stdout"])["prefix"] == sys.prefix
