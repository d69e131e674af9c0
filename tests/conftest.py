"""Shared fixtures: the controller's address and CA, and an API session.

Tests talk to the cluster the way users and workers do: HTTPS from the control
machine, verified against the CA the deploy created (read from the controller).
"""

import json
import os
import tempfile
import time
import tomllib
import uuid
from pathlib import Path

import pytest
import requests
import testinfra.utils.ansible_runner
from jobqueue import https
from jobqueue.states import FINISHED

CA_PATH = "/etc/jobqueue/tls/ca.crt"
ADMIN_CLIENT = "admin-client.toml"  # in build/: playbooks/users.yml writes it
# Checks marked `lengthy` run only with this set to 1 (scripts/test-molecule.sh says
# which and why): under emulation CI's time limit cannot hold them.
LENGTHY = "JOBQUEUE_LENGTHY_CHECKS"


def pytest_collection_modifyitems(config, items):
    # The admin's tasks last: they drain, stop, upgrade and restore the cluster that
    # the other checks need as it was deployed.
    items.sort(key=lambda item: "ops" in item.keywords)
    if os.environ.get(LENGTHY) == "1":
        return
    skip = pytest.mark.skip(reason=f"lengthy under emulation: {LENGTHY}=1 runs it")
    for item in items:
        if "lengthy" in item.keywords:
            item.add_marker(skip)


def address(host) -> str:
    """Private address of a host (inventory variable jobqueue_address)."""
    variables = host.ansible.get_variables()
    return variables.get("jobqueue_address") or variables["inventory_hostname"]


def worker_state_dir(host) -> str:
    """A worker's own state directory (roles/worker's worker_work_dir)."""
    return host.ansible.get_variables().get("worker_work_dir", "/var/lib/jobqueue-worker")


@pytest.fixture()
def ca_file(host):
    """The CA the admin's client verifies the controller against (the deploy's own or
    the lab's), else the one the deploy made on the controller, as a local file."""
    client = build_dir() / ADMIN_CLIENT
    bundle = admin_client().get("ca_bundle") if client.exists() else None
    if bundle:
        yield bundle
        return
    content = host.file(CA_PATH).content
    with tempfile.NamedTemporaryFile(suffix=".crt", delete=False) as out:
        out.write(content)
    yield out.name
    os.unlink(out.name)


@pytest.fixture()
def base_url(host) -> str:
    return f"https://{address(host)}"


def build_dir() -> Path:
    """Where the deploy wrote build/ for this run (the scenario's own, under Molecule)."""
    ephemeral = os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY")
    if ephemeral:
        return Path(ephemeral) / "build"
    return Path(__file__).resolve().parent.parent / "build"


def admin_client() -> dict:
    """The admin's client settings the deploy wrote (url, token, ca_bundle)."""
    with open(build_dir() / ADMIN_CLIENT, "rb") as f:
        return tomllib.load(f)


@pytest.fixture(scope="session")
def admin():
    """requests session with the admin's token and CA, from build/admin-client.toml."""
    conf = admin_client()
    session = https.session(conf["ca_bundle"], user_agent="jobqueue-tests")
    session.headers["Authorization"] = f"Bearer {conf['token']}"
    session.base = conf["url"].rstrip("/") + "/api/v1"
    yield session
    session.close()


@pytest.fixture(scope="session")
def worker_names() -> set[str]:
    """Inventory names of the scenario's workers (what jobs report as their worker)."""
    runner = testinfra.utils.ansible_runner.AnsibleRunner(os.environ["MOLECULE_INVENTORY_FILE"])
    return set(runner.get_hosts("workers"))


def submit(admin, spec, files) -> str:
    """Submit a job through the public API as the admin; return its id. As the client
    does, with an idempotency key, and again once if the connection broke first (Apache
    closes an idle keep-alive connection as requests reuses it) or no answer came in
    time (a controller whose processes are starting, as in an upgrade)."""
    key = uuid.uuid4().hex
    for attempt in (1, 2):
        try:
            response = admin.post(f"{admin.base}/jobs", data={"spec": json.dumps(spec)},
                                  files=[("files", (name, content)) for name, content in files],
                                  headers={"Idempotency-Key": key}, timeout=60)
            break
        except (requests.ConnectionError, requests.Timeout):
            if attempt == 2:
                raise
    assert response.status_code in (200, 201), response.text  # 200: the first one's job
    return response.json()["id"]


def wait(admin, job_id, timeout=600) -> dict:
    """Poll a job until it has finished; fail the test on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = admin.get(f"{admin.base}/jobs/{job_id}", timeout=30).json()
        if job["state"] in FINISHED:
            return job
        time.sleep(3)
    pytest.fail(f"job {job_id} still {job['state']} after {timeout} s")
