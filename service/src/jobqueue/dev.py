"""`jobqueue dev`: a controller on SQLite plus one local worker, for development and demos.

Creates the database, a user and a worker with their tokens on first start, writes a
client config for that user, then runs both until Ctrl-C or SIGTERM, and stops them.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import signal
import socket
import sys
import time
from pathlib import Path

from jobqueue.client.config import write_config, write_private
from jobqueue.controller.tokens import get_or_create_user, issue_token
from jobqueue.controller.db import make_engine, make_session_factory, migrate
from jobqueue.controller.settings import ControllerSettings
from jobqueue.localcluster import LocalCluster


def _token(sessions, data_dir: Path, name: str, role: str) -> str:
    """The token kept in `data_dir`, issued on first use."""
    path = data_dir / f"{name}.token"
    if path.exists():
        path.chmod(0o600)  # kept by an older version with the umask's mode
        return path.read_text().strip()
    with sessions.begin() as session:
        user, _ = get_or_create_user(session, name, role)
        token = issue_token(session, user, "jobqueue dev")
    write_private(path, token + "\n")
    return token


def _port_in_use(port: int) -> bool:
    if port == 0:
        return False
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _interrupt(*_args) -> None:
    raise KeyboardInterrupt  # SIGTERM stops like Ctrl-C: through the `finally` below


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jobqueue dev", description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.path.expanduser("~/.local/share/jobqueue-dev"),
                        help="the database, job files, tokens and logs")
    parser.add_argument("--work-dir", default=os.path.expanduser("~/.cache/jobqueue-dev/work"),
                        help="where the worker runs jobs: keep it out of --data-dir")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--cpus", type=int, default=0, help="worker CPUs (0: all)")
    args = parser.parse_args(argv)

    data_dir = Path(args.data_dir).resolve()
    work_dir = Path(args.work_dir).resolve()
    if work_dir.is_relative_to(data_dir) or data_dir.is_relative_to(work_dir):
        parser.error(f"--work-dir {work_dir} and --data-dir {data_dir} must not hold one "
                     "another: jobs would reach the database and the tokens by relative paths")
    if _port_in_use(args.port):
        parser.error(f"port {args.port} is in use (another jobqueue dev?): give --port")
    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir.chmod(0o700)
    # One instance per data directory, held until this process ends: a second one
    # would share the database and work dir, and hand the first one's jobs back.
    lock = os.open(data_dir / "dev.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        parser.error(f"another jobqueue dev runs on {data_dir}: stop it, or give this one "
                     "its own --data-dir and --work-dir")
    settings = ControllerSettings(data_dir=str(data_dir / "controller"))
    engine = make_engine(settings.database_url)
    migrate(engine)
    sessions = make_session_factory(engine)
    user_token = _token(sessions, data_dir, "dev", "admin")
    worker_token = _token(sessions, data_dir, "dev-worker", "worker")
    engine.dispose()

    signal.signal(signal.SIGTERM, _interrupt)
    cluster = None
    try:
        cluster = LocalCluster(data_dir, settings, port=args.port)
        cluster.start_worker("dev-worker", worker_token, cpus=args.cpus, work_dir=work_dir)
        client_config = data_dir / "client.toml"
        write_config(client_config, cluster.url, user_token)
        print(f"jobqueue dev: controller {cluster.url}, one worker; Ctrl-C stops both.\n"
              "  Jobs run as you, unconfined (runner = local): for trusted code only.\n"
              f"  web page: {cluster.url}/ (sign in with the token in {data_dir}/dev.token)\n"
              f"  export JOBQUEUE_CLIENT_CONFIG={client_config}\n"
              f"  jobqueue submit my_script.py --wait\n"
              f"  jobs run in {work_dir}; logs: {data_dir}/*.log", flush=True)
        while all(p.poll() is None for p in (cluster.controller, *cluster.workers.values())):
            time.sleep(0.5)
        print("jobqueue dev: a process stopped:\n" + cluster.logs(), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):  # a second signal must not cut this
            signal.signal(signum, signal.SIG_IGN)
        if cluster is not None:
            cluster.stop()


if __name__ == "__main__":
    sys.exit(main())
