"""The shared install role: the application in its virtualenv from the
wheelhouse, the service user and its directory, and the install marker that
makes a second run a no-op."""

testinfra_hosts = ["ansible://apps"]

INSTALL_DIR = "/opt/jqapp"
VENV = f"{INSTALL_DIR}/venv"


def test_service_user_is_a_nologin_system_user(host):
    user = host.user("jqapp")
    assert user.exists
    assert user.shell == "/usr/sbin/nologin"
    assert user.uid < 1000
    assert user.home == "/var/lib/jqapp"


def test_home_directory_is_private_to_the_user(host):
    home = host.file("/var/lib/jqapp")
    assert home.is_directory
    assert (home.user, home.group, home.mode) == ("jqapp", "jqapp", 0o750)


def test_application_imports_from_the_virtualenv(host):
    result = host.run(f"{VENV}/bin/python -c 'import jobqueue, sys; print(jobqueue.__file__)'")
    assert result.rc == 0, result.stderr
    assert result.stdout.strip().startswith(f"{VENV}/lib/")


def test_server_and_worker_extras_installed(host):
    # jobqueue[server,worker]: what the controller and a confined worker need, beyond
    # the client's requests.
    modules = "flask, sqlalchemy, alembic, psycopg, prometheus_client, jeepney, requests"
    result = host.run(f"{VENV}/bin/python -c 'import {modules}'")
    assert result.rc == 0, result.stderr


def test_entry_points_installed(host):
    for command in ("jobqueue", "jobqueue-admin", "jobqueue-worker"):
        assert host.file(f"{VENV}/bin/{command}").is_executable


def test_install_is_keyed_by_the_wheelhouse_checksum(host):
    markers = host.run(f"ls -1a {VENV} | grep '^.wheelhouse-'").stdout.split()
    assert len(markers) == 1
    checksum = markers[0].removeprefix(".wheelhouse-")
    archive = host.run(f"sha1sum {INSTALL_DIR}/wheelhouse.tar").stdout.split()[0]
    assert checksum == archive


def test_wheelhouse_unpacked_beside_the_venv(host):
    # Every dependency came from the unpacked wheelhouse next to the venv.
    wheels = host.run(f"ls {INSTALL_DIR}/wheelhouse").stdout.split()
    assert any(w.startswith("jobqueue-") for w in wheels)
    assert any(w.lower().startswith("flask-") for w in wheels)
