"""`jobqueue-worker --one-job`: what it does before the job itself (the job's run under
a real Slurm is in test_slurm.py)."""

from __future__ import annotations

import pytest

from jobqueue.worker import one_job
from jobqueue.worker.settings import WorkerSettings


class CountingRunner:
    """A runner whose confinement check only counts its calls (or fails)."""

    def __init__(self, fails: bool = False):
        self.checks = 0
        self.fails = fails

    def self_check(self) -> None:
        self.checks += 1
        if self.fails:
            raise RuntimeError("confinement is not in force")


@pytest.fixture
def boot(tmp_path, monkeypatch):
    boot_id = tmp_path / "boot_id"
    boot_id.write_text("first-boot\n")
    monkeypatch.setattr(one_job, "BOOT_ID", boot_id)
    return boot_id


def node_job(tmp_path, runner, external_id="1"):
    settings = WorkerSettings(controller_url="https://controller.invalid", token="t",
                              work_dir=str(tmp_path / "work"))
    (tmp_path / "work").mkdir(exist_ok=True)
    return one_job.OneJob(settings, "job-1", external_id, api=object(), runner=runner)


def test_confinement_is_checked_once_per_boot_and_after_a_deploy(tmp_path, boot):
    runner = CountingRunner()
    node_job(tmp_path, runner, "1")._check_confinement()
    node_job(tmp_path, runner, "2")._check_confinement()
    assert runner.checks == 1
    boot.write_text("second-boot\n")  # the node rebooted
    node_job(tmp_path, runner, "3")._check_confinement()
    assert runner.checks == 2
    (tmp_path / "work" / one_job.CONFINEMENT_CHECKED).unlink()  # what a deploy does
    node_job(tmp_path, runner, "4")._check_confinement()
    assert runner.checks == 3


def test_a_failed_check_leaves_no_mark_and_runs_again(tmp_path, boot):
    runner = CountingRunner(fails=True)
    for external_id in ("1", "2"):
        with pytest.raises(RuntimeError):
            node_job(tmp_path, runner, external_id)._check_confinement()
    assert runner.checks == 2
    assert not (tmp_path / "work" / one_job.CONFINEMENT_CHECKED).exists()
