"""A controller and workers as local processes on one machine: for end-to-end tests,
benchmarks and `jobqueue dev`. Production runs the controller under Apache instead."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

from jobqueue.controller.tokens import get_or_create_user, issue_token
from jobqueue.controller.db import make_engine, make_session_factory, migrate
from jobqueue.controller.settings import ControllerSettings


def create_users(settings: ControllerSettings, *names_roles: tuple[str, str]) -> dict[str, str]:
    """Migrate the schema and create users; return a fresh token for each."""
    engine = make_engine(settings.database_url)
    migrate(engine)
    tokens = {}
    with make_session_factory(engine).begin() as session:
        for name, role in names_roles:
            user, _ = get_or_create_user(session, name, role)
            tokens[name] = issue_token(session, user)
    engine.dispose()
    return tokens


class LocalCluster:
    def __init__(self, root: str | os.PathLike, settings: ControllerSettings, port: int = 0):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.settings = settings
        # Point the config paths at nothing, so files under /etc never leak in.
        nowhere = str(self.root / "no-such-config.toml")
        self.env = {**os.environ, "JOBQUEUE_CONFIG": nowhere, "JOBQUEUE_WORKER_CONFIG": nowhere,
                    **{f"JOBQUEUE_{k.upper()}": json.dumps(v) if isinstance(v, dict | list)
                       else str(v) for k, v in asdict(settings).items()}}
        self.env.pop("JOBQUEUE_FAULT", None)
        self.workers: dict[str, subprocess.Popen] = {}
        self.port = port
        self.start_controller()

    def start_controller(self, **env: str) -> subprocess.Popen:
        """Start the controller (again, on the same port); `env` adds to its environment."""
        with self._log("controller") as log:
            self.controller = subprocess.Popen(
                [sys.executable, "-m", "jobqueue.controller.serve", "--port", str(self.port)],
                env={**self.env, **env}, stdout=subprocess.PIPE, stderr=log, text=True)
        try:
            line = self.controller.stdout.readline()
            if "listening on" not in line:
                raise RuntimeError("the controller did not start:\n" + self.logs())
        except BaseException:
            self.controller.kill()
            self.controller.wait()
            raise
        self.url = line.split()[-1]
        self.port = int(self.url.rsplit(":", 1)[1])
        return self.controller

    def _log(self, name: str):
        return open(self.root / f"{name}.log", "ab")

    def start_worker(self, name: str, token: str, cpus: int = 1,
                     daemon_python: str = sys.executable, **settings) -> subprocess.Popen:
        """A worker daemon run by `daemon_python` (another virtualenv's, to test an install)."""
        overrides = {"controller_url": self.url, "token": token, "name": name, "cpus": cpus,
                     "work_dir": self.root / f"work-{name}", **settings}
        env = {**self.env, **{f"JOBQUEUE_WORKER_{k.upper()}":
                              json.dumps(v) if isinstance(v, dict | list) else str(v)
                              for k, v in overrides.items()}}
        with self._log(name) as log:
            process = subprocess.Popen([daemon_python, "-m", "jobqueue.worker.main"],
                                       env=env, stderr=log)
        self.workers[name] = process
        return process

    def start_scheduler(self, interval: float = 0.5) -> subprocess.Popen:
        """The reconcile loop of a batch-scheduler backend (`jobqueue-admin scheduler`),
        stopped with the rest."""
        with self._log("scheduler") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "jobqueue.controller.admin", "scheduler",
                 "--interval", str(interval)], env=self.env, stderr=log)
        self.workers["scheduler"] = process
        return process

    def write_node_config(self, path: Path, name: str, token: str, **settings) -> Path:
        """A worker settings file for `jobqueue-worker --one-job` on a Slurm node (here)."""
        values = {"controller_url": self.url, "token": token, "name": name,
                  "work_dir": str(self.root / f"node-{name}"), "python": sys.executable,
                  **settings}
        path.write_text("".join(f"{key} = {json.dumps(value)}\n"
                                for key, value in values.items()))
        return path

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
                         for p in sorted(self.root.glob("*.log")))

    def stop(self) -> None:
        processes = [*self.workers.values(), self.controller]
        for process in processes:
            if process.poll() is None:
                process.terminate()
        for process in processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
