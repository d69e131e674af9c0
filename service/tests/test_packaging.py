"""A client-only install: `pip install 'jobqueue[client]'` from the built wheel, into a
fresh virtualenv, gets the client, the CLI, the mapper and the worker daemon without
the server's dependencies, and works against a real controller."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from wheel_repack import closure, repack

from jobqueue.extras import SERVER_MODULES

SERVICE = Path(__file__).resolve().parents[1]
# pip without the machine's pip.conf: only the wheels made here, no index, no constraints.
PIP_ENV = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")} | {
    "PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def _run(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, **kwargs)


@pytest.fixture(scope="module")
def client_venv(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("client-install")
    # Built from a copy, as scripts/build-wheelhouse.sh does: no build/ left in service/.
    source, wheels = tmp / "source", tmp / "wheels"
    source.mkdir()
    shutil.copy(SERVICE / "pyproject.toml", source)
    shutil.copytree(SERVICE / "src", source / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    # As the wheelhouse is built: setuptools for the build comes from the index (or
    # pip's cache), the venv's own is too old to build wheels.
    built = _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                  "--wheel-dir", str(wheels), str(source)])
    assert built.returncode == 0, built.stderr
    (wheel,) = wheels.glob("jobqueue-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        meta = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        lines = archive.read(meta).decode().splitlines()
    requires = [line.split(":", 1)[1].strip() for line in lines
                if line.startswith("Requires-Dist:")]
    # The client's dependencies, as wheels of what this virtualenv has installed.
    for dist in closure(requires, extras=("client",)):
        repack(dist, wheels)

    venv = tmp / "venv"
    made = _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    assert made.returncode == 0, made.stderr
    installed = _run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"),
                      "install", "--quiet", "--no-index", "--find-links", str(wheels),
                      "jobqueue[client]"], env=PIP_ENV)
    assert installed.returncode == 0, installed.stderr
    return venv


def _env(**extra: str) -> dict[str, str]:
    """No PYTHONPATH or client settings from outside: only the venv's own packages."""
    env = {k: v for k, v in os.environ.items()
           if k != "PYTHONPATH" and not k.startswith("JOBQUEUE_")}
    return env | {"XDG_CONFIG_HOME": os.devnull} | extra


@pytest.fixture
def database_url(tmp_path) -> str:
    # What is installed does not depend on the database: SQLite only.
    return f"sqlite:///{tmp_path}/jobqueue.db"


def test_the_client_install_has_none_of_the_servers_dependencies(client_venv: Path) -> None:
    probe = ("import importlib.util, json, jobqueue; print(json.dumps({'file': jobqueue.__file__,"
             f" 'found': [m for m in {sorted(SERVER_MODULES)!r}"
             " if importlib.util.find_spec(m)]}))")
    result = _run([str(client_venv / "bin" / "python"), "-c", probe], env=_env())
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["file"].startswith(str(client_venv)), "jobqueue came from outside the venv"
    assert found["found"] == []
    # All of the client side imports without them.
    modules = ("jobqueue.client", "jobqueue.client.cli", "jobqueue.client.cluster_map",
               "jobqueue.mapper", "jobqueue.worker.main", "jobqueue.states", "jobqueue.config")
    imported = _run([str(client_venv / "bin" / "python"), "-c",
                     f"import importlib; [importlib.import_module(m) for m in {modules!r}]"],
                    env=_env())
    assert imported.returncode == 0, imported.stderr


def test_the_cli_runs(client_venv: Path) -> None:
    jobqueue = str(client_venv / "bin" / "jobqueue")
    version = _run([jobqueue, "--version"], env=_env())
    assert version.returncode == 0, version.stderr
    assert version.stdout.split() == ["jobqueue", "0.1.0"]
    helped = _run([jobqueue, "submit", "--help"], env=_env())
    assert helped.returncode == 0, helped.stderr
    assert "--cpus" in helped.stdout
    completion = _run([jobqueue, "completion", "bash"], env=_env())
    assert completion.returncode == 0, completion.stderr
    assert "complete -F _jobqueue jobqueue" in completion.stdout


@pytest.mark.parametrize("argv, command", [
    (["jobqueue", "dev"], "jobqueue dev"),
    (["jobqueue", "dev", "--port", "0"], "jobqueue dev"),
    (["jobqueue-admin", "list-users"], "jobqueue-admin"),
])
def test_server_commands_say_what_to_install(client_venv: Path, argv, command) -> None:
    result = _run([str(client_venv / "bin" / argv[0]), *argv[1:]], env=_env())
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert f"{command} needs the server: pip install 'jobqueue[server]'" in result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr


@pytest.mark.e2e
def test_submit_from_the_client_install_to_a_real_controller(
    client_venv: Path, cluster, tmp_path: Path
) -> None:
    c = cluster()
    # The worker daemon also runs from the client install: it needs no more than that.
    c.start_worker("w1", daemon_python=str(client_venv / "bin" / "python"))
    script = tmp_path / "hello.py"
    script.write_text("import sys\nprint('hello from', sys.argv[1])\n")
    env = _env(JOBQUEUE_URL=c.url, JOBQUEUE_TOKEN=c.tokens["alice"])
    jobqueue = str(client_venv / "bin" / "jobqueue")
    submitted = _run([jobqueue, "submit", str(script), "--wait", "--timeout", "60", "--json",
                      "--", "laptop"], env=env)
    assert submitted.returncode == 0, submitted.stderr + c.logs()
    job = json.loads(submitted.stdout)
    assert job["state"] == "succeeded"
    log = _run([jobqueue, "log", job["id"]], env=env)
    assert log.returncode == 0, log.stderr
    assert log.stdout == "hello from laptop\n"


def test_the_server_modules_are_those_of_the_server_extra() -> None:
    # jobqueue.extras tells a missing server dependency by these names: the same list.
    project = tomllib.loads((SERVICE / "pyproject.toml").read_text())["project"]
    server = {Requirement(r).name.lower() for r in project["optional-dependencies"]["server"]}
    assert server <= SERVER_MODULES
    assert not any(Requirement(r).name.lower() in SERVER_MODULES
                   for r in project["dependencies"])
