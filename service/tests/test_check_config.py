"""`python -m jobqueue.check_config`, the roles' `validate:` for the service's config
files: what the service would refuse at start-up fails the deploy, naming it."""

from __future__ import annotations

import subprocess
import sys

import pytest

WORKER = 'controller_url = "https://jobs.example.org"\ntoken = "jq_worker_token"\n'
CONTROLLER = 'queue_backend = "slurm"\n[queue.slurm]\npartition = "batch"\n'


def check(kind: str, path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-I", "-m", "jobqueue.check_config", kind, str(path)],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("kind, text, says", [
    ("worker", WORKER + "slotz = 2\n", "unknown setting(s): slotz"),
    ("worker", WORKER + "cpus = \"many\"\n", "setting 'cpus': expected int"),
    ("worker", WORKER + "slots = -1\n", "'slots' must be >= 0"),
    ("controller", CONTROLLER + "partiton = \"x\"\n",
     "[queue.slurm]: unknown setting(s): partiton"),
    ("controller", 'queue_backend = "pbs"\n', "unknown backend 'pbs'"),
    ("controller", 'default_walltime = 90000\nmax_walltime = 3600\n', "'default_walltime'"),
    ("controller", 'max_job_cpus = [\n', "Invalid value"),  # not TOML
    ("worker", WORKER.replace("token =", "token_file = ") + "\n", "cannot read it"),
])
def test_what_the_service_would_refuse_fails_naming_it(tmp_path, kind, text, says):
    path = tmp_path / f"{kind}.toml"
    path.write_text(text)
    result = check(kind, path)
    assert result.returncode == 1 and says in result.stderr, result.stderr
    assert str(path) in result.stderr and "Traceback" not in result.stderr


def test_what_the_service_accepts_passes(tmp_path):
    for kind, text in (("worker", WORKER), ("controller", CONTROLLER)):
        path = tmp_path / f"{kind}.toml"
        path.write_text(text)
        result = check(kind, path)
        assert result.returncode == 0 and result.stderr == "", result.stderr


def test_a_missing_file_fails(tmp_path):
    result = check("worker", tmp_path / "nowhere.toml")
    assert result.returncode == 1 and "No such file" in result.stderr
