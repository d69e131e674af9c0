"""The controller as clients see it: HTTPS with the deploy's CA, auth, headers."""

import json
import re
import socket
import ssl
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from conftest import address, admin_client
from jobqueue import https

testinfra_hosts = ["ansible://controllers"]


def test_apache_enabled_and_running(host):
    apache = host.service("apache2")
    assert apache.is_enabled
    assert apache.is_running


def test_apache_config_is_valid(host):
    with host.sudo():
        result = host.run("apache2ctl configtest")
    assert result.rc == 0, result.stderr


def test_wsgi_daemon_runs_as_service_user(host):
    assert host.process.filter(user="jobqueue"), "no process of user jobqueue (mod_wsgi daemon)"


def test_config_file_is_private(host):
    config = host.file("/etc/jobqueue/controller.toml")
    assert config.user == "root"
    assert config.group == "jobqueue"
    assert config.mode == 0o640


def test_healthz_over_https_with_deploy_ca(base_url, ca_file):
    # Often the host's first request: the mod_wsgi daemon imports the application
    # now, which under emulation on a busy machine took more than 30 s.
    response = requests.get(f"{base_url}/healthz", verify=ca_file, timeout=120)
    assert response.status_code == 200


def test_certificate_is_not_trusted_without_the_ca(base_url):
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{base_url}/healthz", timeout=30)


def test_http_only_redirects(host):
    response = requests.get(f"http://{address(host)}/api/v1/jobs", allow_redirects=False,
                            timeout=30)
    assert response.status_code in (301, 308)
    assert response.headers["Location"] == f"https://{address(host)}/api/v1/jobs"


def test_api_without_token_is_401(base_url, ca_file):
    response = requests.get(f"{base_url}/api/v1/jobs", verify=ca_file, timeout=30)
    assert response.status_code == 401
    assert "error" in response.json()


def test_api_with_bad_token_is_401(base_url, ca_file):
    response = requests.get(f"{base_url}/api/v1/jobs", verify=ca_file, timeout=30,
                            headers={"Authorization": "Bearer not-a-token"})
    assert response.status_code == 401


def test_security_headers(base_url, ca_file):
    headers = requests.get(f"{base_url}/healthz", verify=ca_file, timeout=30).headers
    assert headers["Strict-Transport-Security"].startswith("max-age=")
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["Referrer-Policy"] == "no-referrer"
    # One policy, not the app's and Apache's side by side.
    assert headers["Content-Security-Policy"].count("default-src") == 1
    assert "Apache/" not in headers.get("Server", "")


def test_tls_1_2_only_where_the_inventory_admits_it(host, ca_file):
    # The default is TLS 1.3 only; a lab with older clients adds +TLSv1.2.
    protocols = host.ansible.get_variables().get("controller_tls_protocols", "-all +TLSv1.3")
    context = ssl.create_default_context(cafile=ca_file)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    with socket.create_connection((address(host), 443), timeout=30) as sock:
        if "+TLSv1.2" in protocols.split():
            with context.wrap_socket(sock, server_hostname=address(host)) as tls:
                assert tls.version() == "TLSv1.2"
        else:
            with pytest.raises(ssl.SSLError):
                context.wrap_socket(sock, server_hostname=address(host))


def test_database_backend_and_schema_current(host):
    variables = host.ansible.get_variables()
    backend = variables.get("controller_db_backend", "sqlite")
    with host.sudo():
        config = host.file("/etc/jobqueue/controller.toml").content_string
        migrate = host.run("/usr/local/sbin/jobqueue-admin migrate")
    expected = "postgresql+psycopg://" if backend == "postgresql" else "sqlite:///"
    assert f'database_url = "{expected}' in config
    assert migrate.rc == 0, migrate.stderr
    assert json.loads(migrate.stdout)["changed"] is False


def test_admin_cli_users_and_tokens(host):
    with host.sudo():
        created = host.run("/usr/local/sbin/jobqueue-admin create-user verify-user --role user")
        token = host.run("/usr/local/sbin/jobqueue-admin issue-token verify-user").stdout.strip()
        good = host.run(f"echo {token} | /usr/local/sbin/jobqueue-admin check-token verify-user")
        bad = host.run("echo nope | /usr/local/sbin/jobqueue-admin check-token verify-user")
        host.run("/usr/local/sbin/jobqueue-admin revoke-tokens verify-user")
    assert created.rc == 0, created.stderr
    assert good.rc == 0
    assert bad.rc == 1


def _waiting_room_on(host) -> bool:
    with host.sudo():
        config = host.file("/etc/jobqueue/controller.toml").content_string
    return 'queue_backend = "dispatcher"' in config


def test_waiting_room_runs_confined_with_its_sockets(host):
    room = host.service("jobqueue-waiting-room")
    if not _waiting_room_on(host):
        assert not room.is_enabled
        return
    assert room.is_enabled and room.is_running
    with host.sudo():
        show = host.run("systemctl show -p User,NoNewPrivileges,ProtectSystem,"
                        "CapabilityBoundingSet jobqueue-waiting-room").stdout.split()
    assert {"User=jobqueue", "NoNewPrivileges=yes", "ProtectSystem=strict",
            "CapabilityBoundingSet="} <= set(show)
    wake = host.file("/run/jobqueue-waiting-room/wake.sock")
    assert wake.is_socket and wake.user == "jobqueue" and wake.mode == 0o600
    assert host.file("/run/jobqueue-waiting-room/http.sock").is_socket
    assert host.file("/run/jobqueue-waiting-room/key").mode == 0o600
    # One Apache thread per waiting worker, the rest for users.
    mpm = host.file("/etc/apache2/conf-enabled/jobqueue-mpm.conf").content_string
    assert int(re.search(r"MaxRequestWorkers (\d+)", mpm).group(1)) >= 1024


def test_a_wait_needs_a_ticket_from_a_claim(host, base_url, ca_file):
    if not _waiting_room_on(host):
        pytest.skip("the slurm queue has no waiting room")
    forged = "1.0.d29ya2VyMQ==." + "0" * 64  # worker1's name, signed with no key
    for headers in ({}, {"Jobqueue-Wait-Ticket": forged}):
        response = requests.get(f"{base_url}/api/v1/worker/wait", headers=headers,
                                verify=ca_file, timeout=30)
        assert response.status_code == 401, response.text
        assert response.json()["error"] == "unauthorized"


def test_postgresql_connections_stay_within_the_pools(host, ca_file):
    """60 requests at once, more than the WSGI threads: each process keeps at most its
    pool of connections (the rest wait for one), every request is answered, and the
    pools of all processes fit the server's max_connections."""
    with host.sudo():
        config = host.file("/etc/jobqueue/controller.toml").content_string
        site = host.file("/etc/apache2/sites-available/jobqueue.conf").content_string
    if "postgresql+psycopg://" not in config:
        pytest.skip("the controller is on SQLite")
    pool = int(re.search(r"^database_pool_size = (\d+)$", config, re.MULTILINE).group(1))
    processes = int(re.search(r"WSGIDaemonProcess jobqueue .*processes=(\d+)", site).group(1))
    user = re.search(r'postgresql\+psycopg://([^:]+):', config).group(1)
    count = f"psql -tA -c \"SELECT count(*) FROM pg_stat_activity WHERE usename = '{user}'\""
    conf = admin_client()

    def read(_) -> int:
        with https.session(ca_file, user_agent="jobqueue-tests") as session:
            return session.get(f"{conf['url']}/api/v1/jobs?limit=5", timeout=120,
                               headers={"Authorization": f"Bearer {conf['token']}"}).status_code

    with ThreadPoolExecutor(60) as pool_of_users:
        answers = pool_of_users.map(read, range(60))
        with host.sudo("postgres"):  # while the requests are answered
            seen = host.check_output(f"for i in $(seq 30); do {count}; sleep 0.2; done")
        statuses = list(answers)
    with host.sudo("postgres"):
        allowed = int(host.check_output("psql -tA -c 'SHOW max_connections'"))
    assert statuses == [200] * 60
    most = max(int(n) for n in seen.split())
    assert most <= processes * pool + 2, (most, processes, pool)  # 2: the waiting room's
    assert processes * pool + 20 <= allowed
