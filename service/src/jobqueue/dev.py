"""`jobqueue dev`: a controller on SQLite plus one local worker, for development and demos.

Creates the database, a user and a worker with their tokens on first start, writes a
client config for that user, then runs both until Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import requests

from jobqueue.controller.auth import get_or_create_user, issue_token
from jobqueue.controller.db import make_engine, make_session_factory, migrate
from jobqueue.controller.settings import ControllerSettings


def _token(sessions, data_dir: Path, name: str, role: str) -> str:
    """The token kept in `data_dir`, issued on first use."""
    path = data_dir / f"{name}.token"
    if path.exists():
        return path.read_text().strip()
    with sessions.begin() as session:
        user, _ = get_or_create_user(session, name, role)
        token = issue_token(session, user, "jobqueue dev")
    path.write_text(token + "\n")
    path.chmod(0o600)
    return token


def _wait_until_up(url: str, process: subprocess.Popen, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit("jobqueue: error: the controller did not start")
        try:
            if requests.get(url + "/healthz", timeout=1).ok:
                return
        except requests.ConnectionError:
            time.sleep(0.1)
    raise SystemExit("jobqueue: error: the controller did not answer in time")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jobqueue dev", description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.path.expanduser("~/.local/share/jobqueue-dev"))
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--cpus", type=int, default=0, help="worker CPUs (0: all)")
    args = parser.parse_args(argv)

    data_dir = Path(args.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    settings = ControllerSettings(data_dir=str(data_dir / "controller"), lease_seconds=30)
    engine = make_engine(settings.database_url)
    migrate(engine)
    sessions = make_session_factory(engine)
    user_token = _token(sessions, data_dir, "dev", "admin")
    worker_token = _token(sessions, data_dir, "dev-worker", "worker")
    engine.dispose()

    url = f"http://127.0.0.1:{args.port}"
    client_config = data_dir / "client.toml"
    client_config.write_text(f'url = "{url}"\ntoken = "{user_token}"\n')
    env = dict(os.environ, JOBQUEUE_DATA_DIR=settings.data_dir, JOBQUEUE_LEASE_SECONDS="30",
               JOBQUEUE_CONFIG=str(data_dir / "controller.toml"))
    controller = subprocess.Popen([sys.executable, "-m", "jobqueue.controller.serve",
                                   "--port", str(args.port)], env=env)
    worker = None
    try:
        _wait_until_up(url, controller)
        worker_env = dict(os.environ, JOBQUEUE_WORKER_CONTROLLER_URL=url,
                          JOBQUEUE_WORKER_TOKEN=worker_token,
                          JOBQUEUE_WORKER_WORK_DIR=str(data_dir / "worker"),
                          JOBQUEUE_WORKER_CPUS=str(args.cpus),
                          JOBQUEUE_WORKER_CONFIG=str(data_dir / "worker.toml"))
        worker = subprocess.Popen([sys.executable, "-m", "jobqueue.worker.daemon"], env=worker_env)
        print(f"\njobqueue dev: controller {url}, one worker; Ctrl-C stops both.\n"
              f"  export JOBQUEUE_CLIENT_CONFIG={client_config}\n"
              f"  jobqueue submit my_script.py --wait\n", flush=True)
        while controller.poll() is None and worker.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        for process in (worker, controller):
            if process is not None and process.poll() is None:
                process.terminate()
                process.wait(60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
