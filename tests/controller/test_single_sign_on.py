"""Single sign-on for the web page, end to end: Apache's mod_auth_openidc on the
controller, a real OpenID provider (node-oidc-provider, ./oidc) on the machine that runs
the VMs, and the browser's side played by an HTTP session that follows the redirects
and fills in the provider's sign-in and consent forms."""

import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from conftest import admin_client, build_dir
from jobqueue import https

testinfra_hosts = ["ansible://controllers"]

SSO_CONF = "/etc/apache2/jobqueue-sso.conf"
PROVIDER = Path(__file__).parent / "oidc"


def _directive(conf: str, name: str) -> str:
    return re.search(rf"^{name} (\S+)$", conf, re.MULTILINE).group(1)


@pytest.fixture(scope="module")
def provider(host):
    """The provider the controller was deployed with, started where its address points."""
    with host.sudo():
        if not host.file(SSO_CONF).exists:
            pytest.skip("single sign-on is off (controller_sso)")
        conf = host.file(SSO_CONF).content_string
    issuer = _directive(conf, "OIDCProviderMetadataURL").split("/.well-known/", 1)[0]
    workdir = build_dir() / "oidc-provider"
    workdir.mkdir(parents=True, exist_ok=True)
    for name in ("package.json", "package-lock.json", "provider.mjs"):
        shutil.copy(PROVIDER / name, workdir / name)
    subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=workdir,
                   check=True, timeout=300)
    process = subprocess.Popen(
        ["node", "provider.mjs", issuer, _directive(conf, "OIDCClientID"),
         _directive(conf, "OIDCClientSecret"), _directive(conf, "OIDCRedirectURI")],
        cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # Its warnings about development settings come first.
        while "listening on" not in (line := process.stdout.readline()):
            assert line, "the test provider did not start"
        yield issuer
    finally:
        process.terminate()
        process.wait(10)


def _session(ca_file):
    return https.session(ca_file, user_agent="jobqueue-tests")


def _sign_in(ca_file, issuer: str, login: str):
    """A browser's way through: the controller's /sso/login sends it to the provider,
    which asks who it is and whether to tell the controller; the answer goes back."""
    browser = _session(ca_file)
    page = browser.get(f"{admin_client()['url']}/sso/login", timeout=120)
    assert page.url.startswith(f"{issuer}/interaction/"), page.url
    consent = browser.post(page.url, data={"prompt": "login", "login": login,
                                           "password": "any"}, timeout=120)
    assert consent.url.startswith(f"{issuer}/interaction/"), consent.url
    answer = browser.post(consent.url, data={"prompt": "consent"}, timeout=120)
    return browser, answer


def test_a_user_signs_in_through_the_labs_provider(host, provider, ca_file):
    with host.sudo():
        host.run("/usr/local/sbin/jobqueue-admin create-user sso-alice --role user")
    browser, page = _sign_in(ca_file, provider, "sso-alice")
    base = admin_client()["url"]
    assert page.status_code == 200 and page.url == f"{base}/", (page.url, page.text[:300])
    me = browser.get(f"{base}/api/v1/me", timeout=60).json()  # the session cookie alone
    assert me["name"] == "sso-alice" and me["token"]["label"] == "web page, single sign-on"
    token = browser.cookies.get("jobqueue_session", domain=urlsplit(base).hostname)
    assert browser.delete(f"{base}/api/v1/session", timeout=60).status_code == 200
    with _session(ca_file) as other:  # signing out revoked it
        again = other.get(f"{base}/api/v1/me", headers={"Authorization": f"Bearer {token}"},
                          timeout=60)
    assert again.status_code == 401


def test_an_identity_without_an_account_is_refused(provider, ca_file):
    browser, answer = _sign_in(ca_file, provider, "sso-stranger")
    assert answer.status_code == 403 and "no account here yet" in answer.json()["message"]
    assert "jobqueue_session" not in browser.cookies


def test_only_the_provider_can_vouch(provider, ca_file):
    """Apache sends an unknown browser to the provider before the app sees it; a header
    claiming an identity changes nothing."""
    with _session(ca_file) as browser:
        answer = browser.get(f"{admin_client()['url']}/sso/login", allow_redirects=False,
                             headers={"Remote-User": "sso-alice"}, timeout=60)
    assert answer.status_code == 302
    assert answer.headers["Location"].startswith(f"{provider}/auth?")
