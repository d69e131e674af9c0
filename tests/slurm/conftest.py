"""Slurm's checks run where roles/slurm deployed it (its own scenario and the slurm
one); elsewhere (the cluster scenario, which reads every test) they are skipped."""

import pytest


@pytest.fixture(autouse=True)
def slurm_deployed(host):
    if not host.file("/etc/slurm/slurm.conf").exists:
        pytest.skip("Slurm is not deployed on these hosts")
