"""A controller process keeps at most its pool of PostgreSQL connections: requests past
it wait for one, so every process's pool together fits the server's max_connections."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

from jobqueue.controller.app import create_app
from jobqueue.controller.db import make_engine
from jobqueue.controller.settings import ControllerSettings

# The pool's own connections, by the name they give the server (other tests' engines
# may still hold connections to the same database).
NAME = "jobqueue-pool-check"
POOL_CONNECTIONS = f"SELECT count(*) FROM pg_stat_activity WHERE application_name = '{NAME}'"


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_twelve_requests_at_once_share_a_pool_of_three(database_url):
    engine = make_engine(f"{database_url}?application_name={NAME}", pool_size=3)
    probe = create_engine(database_url, poolclass=NullPool)  # a connection per look
    done = threading.Event()
    seen = []

    def count_connections() -> None:
        while not done.is_set():
            with probe.connect() as conn:
                seen.append(conn.exec_driver_sql(POOL_CONNECTIONS).scalar_one())

    def request(_) -> int:
        with engine.connect() as conn:
            return conn.exec_driver_sql("SELECT 1 FROM pg_sleep(0.2)").scalar_one()

    watcher = threading.Thread(target=count_connections)
    watcher.start()
    try:
        with ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(request, range(12)))
    finally:
        done.set()
        watcher.join()
        engine.dispose()
        probe.dispose()
    assert answers == [1] * 12  # every request waited for a connection, none failed
    assert 2 <= max(seen) <= 3, seen


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_the_app_sizes_its_pool_from_the_setting(database_url, tmp_path):
    settings = ControllerSettings(database_url=database_url, data_dir=str(tmp_path),
                                  database_pool_size=7)
    app = create_app(settings)
    engine = app.extensions["jobqueue"].session_factory.kw["bind"]
    assert engine.pool.size() == 7
    engine.dispose()
