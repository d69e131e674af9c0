"""The queue seam: a new backend is one module, with its own settings table, and needs
no edit anywhere else; the controller takes it by name."""

from __future__ import annotations

import io
import sys
import textwrap

import pytest

import jobqueue.queue
from jobqueue.config import ConfigError
from jobqueue.controller import settings as settings_module
from jobqueue.controller.app import create_app
from jobqueue.localcluster import create_users

# A whole backend, as someone adding HTCondor or PBS would write it (minus the scheduler).
MODULE = '''
from dataclasses import dataclass

from jobqueue.queue.base import QueueBackend


class Recorder(QueueBackend):
    """Hands every job to a list; a real one would call its scheduler here."""

    name = "recorder"

    @dataclass(frozen=True)
    class Settings:
        partition: str = "main"
        max_jobs: int = 10

    def __init__(self, session_factory, settings, events, own):
        self.own = own
        self.handed = []

    def enqueued(self, session, job):
        self.handed.append((job.id, self.own.partition))

    def cancel(self, session, job):
        pass

    def sync(self):
        pass
'''


@pytest.fixture
def recorder_module(tmp_path, monkeypatch):
    """The module dropped beside the package's own: nothing else is touched."""
    (tmp_path / "recorder.py").write_text(textwrap.dedent(MODULE))
    monkeypatch.setattr(jobqueue.queue, "__path__", [*jobqueue.queue.__path__, str(tmp_path)])
    yield
    sys.modules.pop("jobqueue.queue.recorder", None)


def test_a_backend_is_one_module_with_its_own_settings_table(recorder_module, tmp_path):
    assert set(jobqueue.queue.backends()) == {"dispatcher", "recorder", "slurm"}
    config = tmp_path / "controller.toml"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\nqueue_backend = "recorder"\n\n'
                      '[queue.recorder]\npartition = "gpu"\nmax_jobs = "4"\n')
    settings = settings_module.load(str(config))
    tokens = create_users(settings, ("alice", "user"))
    app = create_app(settings)
    backend = app.extensions["jobqueue"].backend
    assert (backend.own.partition, backend.own.max_jobs) == ("gpu", 4)
    http = app.test_client()
    response = http.post("/api/v1/jobs", headers={"Authorization": f"Bearer {tokens['alice']}"},
                         data={"spec": '{"entry": "main.py"}',
                               "files": [(io.BytesIO(b"pass\n"), "main.py")]},
                         content_type="multipart/form-data")
    assert response.status_code == 201
    assert backend.handed == [(response.get_json()["id"], "gpu")]
    # Not a queue workers pull from: the worker API is not served.
    assert http.post("/api/v1/worker/claim", json={}).status_code == 404


def test_a_wrong_backend_setting_names_its_table(recorder_module, tmp_path):
    settings = settings_module.ControllerSettings(
        data_dir=str(tmp_path), queue_backend="recorder", queue={"recorder": {"partiton": "x"}})
    with pytest.raises(ConfigError, match=r"\[queue.recorder\]: unknown setting\(s\): partiton"):
        create_app(settings)
    settings = settings_module.ControllerSettings(
        data_dir=str(tmp_path), queue_backend="recorder", queue={"recorder": {"max_jobs": "x"}})
    with pytest.raises(ConfigError, match=r"\[queue.recorder\] max_jobs"):
        create_app(settings)


def test_an_unknown_backend_lists_the_known_ones(tmp_path):
    settings = settings_module.ControllerSettings(data_dir=str(tmp_path), queue_backend="pbs")
    with pytest.raises(ConfigError, match="unknown backend 'pbs' .known: dispatcher"):
        create_app(settings)


def test_the_dispatcher_takes_no_settings_table(tmp_path):
    settings = settings_module.ControllerSettings(data_dir=str(tmp_path),
                                                  queue={"dispatcher": {"x": 1}})
    with pytest.raises(ConfigError, match=r"\[queue.dispatcher\]: the dispatcher backend takes"):
        create_app(settings)
