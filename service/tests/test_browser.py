"""The web page in a real headless Chromium, against a real controller and worker: sign
in, submit from the form, follow a job to its end, read its log, download its files,
cancel, page through the list, and nothing from the API ever runs as code.

Needs Debian's `chromium` and `chromium-driver` (scripts/test-service.sh installs them);
screenshots go to build/browser/ at the top of the repository."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from selenium import webdriver
from selenium.common.exceptions import (
    NoSuchElementException, StaleElementReferenceException, TimeoutException)
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from conftest import Cluster
from jobqueue.localcluster import create_users

pytestmark = pytest.mark.e2e

SCREENSHOTS = Path(__file__).resolve().parents[2] / "build" / "browser"
HOSTILE_NAME = '<img src=x onerror="document.title=\'pwned\'">'
BROWSER_ZONE = "Asia/Kolkata"  # UTC+5:30 all year
RESULT = "π ≈ 3.14159\n".encode() + bytes(range(256))

QUICK_JOB = f"""\
import os, sys
os.makedirs("out", exist_ok=True)
with open("out/result.bin", "wb") as fh:
    fh.write({RESULT!r})
print("hello from", sys.argv[1:])
print("to stderr", file=sys.stderr)
"""
SLOW_JOB = "import time\nprint('started', flush=True)\ntime.sleep(120)\n"
FOLDER_JOB = "print(open('data/input.txt').read().strip())\n"


def _binaries() -> tuple[str, str]:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        if os.environ.get("CI"):
            pytest.fail("CI must have chromium and chromium-driver (scripts/test-service.sh)")
        pytest.skip("chromium and chromedriver are not installed")
    return chromium, driver


class Page:
    """Chromium on the cluster's web page, with a download folder of its own."""

    def __init__(self, cluster: Cluster, root: Path):
        chromium, driver = _binaries()
        self.cluster = cluster
        self.downloads = root / "downloads"
        self.downloads.mkdir()
        options = webdriver.ChromeOptions()
        options.binary_location = chromium
        for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                    "--lang=en-US", "--window-size=1400,1000",
                    f"--user-data-dir={root / 'profile'}"):
            options.add_argument(arg)
        options.add_experimental_option("prefs", {
            "download.default_directory": str(self.downloads),
            "download.prompt_for_download": False})
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        # A zone far from UTC (and without summer time): the page must show local times.
        service = webdriver.ChromeService(executable_path=driver,
                                          env={**os.environ, "TZ": BROWSER_ZONE})
        self.driver = webdriver.Chrome(options=options, service=service)
        self.driver.execute_cdp_cmd("Browser.setDownloadBehavior", {
            "behavior": "allow", "downloadPath": str(self.downloads)})
        self.console: list[dict] = []

    def open(self, hash_: str = "#/") -> None:
        """Load the page afresh (a new address differing only in its hash would not)."""
        self.driver.get("about:blank")
        self.driver.get(self.cluster.url + "/" + hash_)

    def find(self, css: str, seconds: float = 10):
        """The element, once the page's scripts have made it (they run after the load)."""
        return WebDriverWait(self.driver, seconds, poll_frequency=0.05,
                             ignored_exceptions=(NoSuchElementException,)).until(
            lambda driver: driver.find_element(By.CSS_SELECTOR, css), f"no {css}")

    def wait(self, predicate, seconds: float = 20, what: str = ""):
        def check(_driver):
            try:
                return predicate()
            except (NoSuchElementException, StaleElementReferenceException, TimeoutException):
                return False  # not there yet, or redrawn by a refresh meanwhile
        return WebDriverWait(self.driver, seconds, poll_frequency=0.1).until(
            check, f"{what}\n{self.cluster.logs()}")

    def text(self, css: str) -> str:
        return self.find(css).text

    def sign_in(self, token: str, wait: bool = True) -> None:
        self.open()
        # Whoever was signed in (the browser's sign-in serves every tab) signs out.
        self.wait(lambda: self.find("#who").is_displayed() or self.find("#sign-in").is_displayed())
        if self.find("#who").is_displayed():
            self.find("#sign-out").click()
        self.find("#token").send_keys(token)
        self.find("#sign-in button").click()
        if wait:  # signed in, the token kept for the tab, before any other page load
            self.wait(lambda: self.find("#who").is_displayed(), what="never signed in")

    def row(self, job_id: str):
        return self.find(f'#jobs tr[data-id="{job_id}"]')

    def downloaded(self, name: str, seconds: float = 15) -> bytes:
        path = self.downloads / name
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if path.is_file() and not path.with_name(name + ".crdownload").exists():
                return path.read_bytes()
            time.sleep(0.1)
        raise AssertionError(f"{name} was never downloaded: {list(self.downloads.iterdir())}")

    def browser_log(self) -> list[dict]:
        self.console += self.driver.get_log("browser")
        return self.console

    def csp_violations(self) -> list[str]:
        return [e["message"] for e in self.browser_log() if "Content Security Policy" in
                e["message"]]

    def screenshot(self, name: str) -> None:
        """The whole page, however long, as build/browser/NAME."""
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        size = self.driver.get_window_size()
        height = self.driver.execute_script("return document.documentElement.scrollHeight")
        self.driver.set_window_size(size["width"], max(size["height"], height + 120))
        self.driver.save_screenshot(str(SCREENSHOTS / name))
        self.driver.set_window_size(size["width"], size["height"])

    def close(self) -> None:
        self.driver.quit()


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    _binaries()
    root = tmp_path_factory.mktemp("browser")
    # Single sign-on on: the signed-out page offers it beside the token.
    cluster = Cluster(root, f"sqlite:///{root}/jobqueue.db", single_sign_on="existing")
    try:
        cluster.start_worker("w1", cpus=2)
        page = Page(cluster, root)
        try:
            yield page
        finally:
            page.close()
    finally:
        cluster.stop()


def _job_id_from_address(page: Page) -> str:
    page.wait(lambda: "#/jobs/" in page.driver.current_url, what="no job page")
    return page.driver.current_url.rsplit("/", 1)[1]


def test_a_wrong_token_is_refused_with_a_message(page):
    page.sign_in("not-a-token", wait=False)
    error = page.wait(lambda: page.find("#error").is_displayed() and page.find("#error"),
                      what="no error shown")
    assert "Sign-in failed" in error.text and "invalid, expired or revoked token" in error.text
    assert page.find("#sign-in").is_displayed() and not page.find("#nav").is_displayed()
    assert page.driver.execute_script("return sessionStorage.length") == 0


def test_the_page_breaks_no_rule_of_its_content_security_policy(page):
    page.sign_in(page.cluster.tokens["alice"])
    page.wait(lambda: page.find("#jobs").is_displayed() or page.find("#no-jobs").is_displayed(),
              what="the list never showed")
    page.find("#nav a[href='#/submit']").click()
    page.wait(lambda: page.find("#submit-form"))
    page.find("#api-link").click()
    page.wait(lambda: len(page.driver.find_elements(By.CSS_SELECTOR, "#routes tbody tr")) > 5)
    assert page.csp_violations() == []
    # The check can see a violation: an inline style, refused by the policy.
    page.driver.execute_script(
        "const s = document.createElement('style'); s.textContent = 'body {}';"
        "document.head.append(s)")
    page.wait(lambda: page.csp_violations(), what="an inline style was not reported")
    page.console.clear()


def test_the_state_filter_offers_every_state_of_states_py(page):
    from jobqueue.states import JobState

    page.sign_in(page.cluster.tokens["alice"])
    options = page.find("#filter-state").find_elements(By.TAG_NAME, "option")
    values = [option.get_attribute("value") for option in options]
    assert values == ["", "unfinished", "finished", *(state.value for state in JobState)]


def test_the_api_description_opens_and_downloads_with_the_token(page):
    page.open("#/api")
    routes = page.wait(lambda: page.driver.find_elements(By.CSS_SELECTOR, "#routes tbody tr"))
    assert any("/api/v1/jobs/{job_id}/cancel" in r.text for r in routes)
    page.find("#download-openapi").click()
    document = json.loads(page.downloaded("openapi.json"))
    assert document["openapi"].startswith("3.") and "/api/v1/jobs" in document["paths"]


def test_submit_a_script_follow_it_read_its_log_and_download_a_result(page, tmp_path):
    script = tmp_path / "quick.py"
    script.write_text(QUICK_JOB)
    page.open("#/submit")
    page.find("#script-file").send_keys(str(script))
    page.wait(lambda: page.find("#entry").get_attribute("value") == "quick.py")
    page.find("#args").send_keys("one\ntwo words")
    page.find("#name").send_keys("quick from the form")
    page.find("#cpus").clear()
    page.find("#cpus").send_keys("1")
    page.find("#walltime").send_keys("0:05:00")
    page.find("#submit-job").click()
    job_id = _job_id_from_address(page)

    page.open("#/")
    page.wait(lambda: page.row(job_id).get_attribute("data-state") == "succeeded", 40,
              "the job never showed as succeeded in the list")
    cells = [td.text for td in page.row(job_id).find_elements(By.TAG_NAME, "td")]
    assert [cells[0], cells[1], cells[6]] == ["quick from the form", "succeeded", "1"]
    job = page.cluster.client.get(job_id)
    for column, field in ((3, "created_at"), (4, "started_at")):
        when = dt.datetime.fromisoformat(job[field])
        # The browser's Date keeps milliseconds: 22.9996 s may show as 23.
        shown = {t.astimezone(ZoneInfo(BROWSER_ZONE)).strftime("%m/%d/%Y, %I:%M:%S %p GMT+5:30")
                 for t in (when, when + dt.timedelta(microseconds=999))}
        assert cells[column] in shown, (field, cells[column], shown)

    page.row(job_id).find_element(By.CSS_SELECTOR, "a.job-name").click()
    page.wait(lambda: "hello from ['one', 'two words']" in page.text("#log-stdout"),
              what="stdout never showed")
    page.wait(lambda: page.text("#log-stderr").strip() == "to stderr",
              what="stderr never showed")
    fields = page.text("#job-fields")
    assert "300 s" in fields and "quick.py" in fields and "two words" in fields
    cpu = page.text('#job-fields tr[data-field="accounting.cpu_seconds"] td')
    assert re.fullmatch(r"\d+ s \(\d+(\.\d{1,3})? s\)", cpu), cpu
    page.screenshot("job-page.png")

    folder = page.wait(lambda: page.find("#files a.folder"), what="no out/ folder")
    assert folder.text == "out/"
    folder.click()
    page.find('#files tr[data-path="out/result.bin"] button.download').click()
    assert page.downloaded("result.bin") == RESULT
    page.find("#download-results").click()
    assert page.downloaded(f"{job_id}-results.tar.gz")[:2] == b"\x1f\x8b"


def test_the_form_shows_why_a_job_is_refused(page, tmp_path):
    script = tmp_path / "big.py"
    script.write_text("print('never runs')\n")
    page.open("#/submit")
    page.find("#script-file").send_keys(str(script))
    page.find("#walltime").send_keys("an hour")
    page.find("#submit-job").click()
    page.wait(lambda: "wall time: give seconds" in page.text("#error"), what="no form error")
    page.find("#walltime").clear()
    page.find("#cpus").clear()
    page.find("#cpus").send_keys("3")  # the only worker has 2
    page.find("#submit-job").click()
    page.wait(lambda: "no worker can run it" in page.text("#error"), what="no API error")
    assert "#/submit" in page.driver.current_url
    assert all(j["name"] != "big.py" for j in page.cluster.client.list())


def test_submit_a_folder_with_its_entry_script(page, tmp_path):
    folder = tmp_path / "analysis"
    (folder / "data").mkdir(parents=True)
    (folder / "main.py").write_text(FOLDER_JOB)
    (folder / "data" / "input.txt").write_text("read from the folder\n")
    page.open("#/submit")
    page.find("#kind-folder").click()
    page.find("#folder-files").send_keys(str(folder))
    page.wait(lambda: page.find("#entry").get_attribute("value") == "main.py")
    assert "2 file(s)" in page.text("#upload-summary")
    page.screenshot("submit.png")
    page.find("#submit-job").click()
    job_id = _job_id_from_address(page)
    page.wait(lambda: "read from the folder" in page.text("#log-stdout"), 40,
              "the folder job's output never showed")
    job = page.cluster.client.get(job_id)
    assert job["name"] == "analysis" and job["entry"] == "main.py"


def test_a_job_name_full_of_markup_shows_as_text(page):
    job_id = page.cluster.submit("print('hi')\n", name=HOSTILE_NAME)
    page.open("#/")
    page.wait(lambda: page.row(job_id).find_element(By.CSS_SELECTOR, "a.job-name").text
              == HOSTILE_NAME, what="the name does not show as text")
    page.open(f"#/jobs/{job_id}")
    page.wait(lambda: page.text("#job-title .job-name") == HOSTILE_NAME)
    assert page.driver.find_elements(By.TAG_NAME, "img") == []
    assert page.driver.title == "jobqueue"
    assert page.csp_violations() == []


def test_a_jobs_page_shows_its_dependencies_as_links_and_its_environment(page):
    parent = page.cluster.submit("print('parent')\n", name="parent")
    other = page.cluster.submit("print('other')\n", name="other")
    child = page.cluster.client.submit(
        {"main.py": b"print('child')\n"},
        {"entry": "main.py", "after": [f"afterany:{other}"], "inputs_from": [parent],
         "env": {"GREETING": "<b>hi</b>"}})["id"]
    page.sign_in(page.cluster.tokens["alice"])
    page.open(f"#/jobs/{child}")
    after = page.wait(lambda: page.driver.find_elements(
        By.CSS_SELECTOR, '#job-fields tr[data-field="after"] td'), what="no 'Runs after' row")
    inputs = page.find('#job-fields tr[data-field="inputs_from"] td')
    assert sorted(after[0].text.split(", ")) == sorted([parent, f"afterany:{other}"])
    assert inputs.text == parent
    assert page.text('#job-fields tr[data-field="env"] td') == "GREETING=<b>hi</b>"
    links = [a.get_attribute("href").rsplit("/", 1)[1]
             for a in after[0].find_elements(By.TAG_NAME, "a")]
    assert sorted(links) == sorted([parent, other])
    assert page.csp_violations() == []


def test_a_long_job_is_cancelled_from_its_page_after_a_confirmation(page):
    job_id = page.cluster.submit(SLOW_JOB, name="long one")
    page.cluster.wait_for(job_id, lambda j: j["state"] == "running")
    waiting = page.cluster.submit("print('both CPUs')\n", name="needs both CPUs", cpus=2)
    page.open("#/")
    page.wait(lambda: "waiting for a worker with 2 free CPU(s)" in page.row(waiting).text
              and "#1 in queue" in page.row(waiting).text, what="no queue position and reason")
    page.wait(lambda: "on w1" in page.row(job_id).text)
    page.screenshot("job-list.png")
    page.open(f"#/jobs/{job_id}")
    page.wait(lambda: page.find("#job-title .state").text == "running", 30, "never running")
    page.find("#cancel-job").click()
    page.driver.switch_to.alert.dismiss()  # "no": nothing happens
    time.sleep(0.3)
    assert page.cluster.client.get(job_id)["cancel_requested"] is False
    page.find("#cancel-job").click()
    alert = page.driver.switch_to.alert
    assert "long one" in alert.text
    alert.accept()
    page.wait(lambda: page.find("#job-title .state").text == "cancelled", 30, "never cancelled")
    assert page.cluster.client.get(job_id)["state"] == "cancelled"
    page.wait(lambda: page.find("#delete-job").is_displayed())
    page.find("#delete-job").click()
    page.driver.switch_to.alert.accept()
    page.wait(lambda: page.driver.current_url.endswith("#/"), what="not back on the list")
    assert job_id not in [j["id"] for j in page.cluster.client.list()]
    assert page.cluster.client.wait(waiting, timeout=30)["state"] == "succeeded"


def test_a_failed_tasks_page_runs_its_arrays_failed_tasks_again(page):
    made = page.cluster.client.submit(
        {"main.py": b"import os, sys\nsys.exit(int(os.environ['JOBQUEUE_ARRAY_TASK_ID']))\n"},
        {"entry": "main.py", "array": "0-1", "name": "half fails"})
    ok, failed = made["jobs"]
    page.cluster.client.wait_array(made["array"]["id"], timeout=60)
    page.open(f"#/jobs/{ok}")
    page.wait(lambda: page.find("#job-title .state").text == "succeeded", what="not succeeded")
    assert not page.find("#rerun-array").is_displayed()
    page.open(f"#/jobs/{failed}")
    page.wait(lambda: page.find("#rerun-array").is_displayed(), what="no rerun button")
    page.find("#rerun-array").click()
    alert = page.driver.switch_to.alert
    assert "half fails" in alert.text
    alert.accept()
    page.wait(lambda: "#/?array=" in page.driver.current_url, what="not on the new array")
    rerun_id = page.driver.current_url.rsplit("=", 1)[1]
    assert page.cluster.client.array(rerun_id)["rerun_of"] == made["array"]["id"]
    task = page.cluster.client.array_tasks(rerun_id)[0]
    assert task["array"]["index"] == 1
    page.wait(lambda: page.row(task["id"]).is_displayed(), what="the new task is not listed")


def test_the_list_and_a_job_fit_the_window_from_360_to_1440_pixels(page):
    """No page-wide horizontal scroll bar, from a phone to a wide screen: what is too
    wide scrolls on its own (screenshots in build/browser/)."""
    page.sign_in(page.cluster.tokens["alice"])
    job_id = page.cluster.submit("print('hi')\n", name="a-rather-long-name-" * 4,
                                 args=["--some-option=" + "x" * 60])
    size = page.driver.get_window_size()
    try:
        for width in (360, 390, 900, 1440):
            page.driver.set_window_size(width, size["height"])
            for view, ready in (("#/", lambda: page.row(job_id)),
                                (f"#/jobs/{job_id}", lambda: page.find("#job-fields"))):
                page.open(view)
                ready()
                page.screenshot(f"{'list' if view == '#/' else 'job'}-{width}px.png")
                inner, overflow = page.driver.execute_script(
                    "return [window.innerWidth, "
                    "document.documentElement.scrollWidth - window.innerWidth]")
                assert inner == width, f"the window is {inner} px wide, not {width}"
                assert overflow <= 0, f"{view}: {overflow} px wider than a {width} px window"
    finally:
        page.driver.set_window_size(size["width"], size["height"])


def test_the_signed_out_page_fits_from_360_to_1440_pixels(page):
    page.driver.execute_cdp_cmd("Network.clearBrowserCookies", {})  # of every path too
    size = page.driver.get_window_size()
    try:
        for width in (360, 1440):
            page.driver.set_window_size(width, size["height"])
            page.open()
            link = page.find("#single-sign-on")
            page.wait(link.is_displayed, what="no single sign-on link")  # once /me says 401
            assert link.get_attribute("href").endswith("/sso/login")
            page.screenshot(f"signed-out-{width}px.png")
            overflow = page.driver.execute_script(
                "return document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, f"{overflow} px wider than a {width} px window"
    finally:
        page.driver.set_window_size(size["width"], size["height"])
        page.sign_in(page.cluster.tokens["alice"])  # as the checks below expect


def test_the_list_pages_with_the_api_cursor_and_filters(page):
    ids = [job["id"] for job in page.cluster.client.list()]  # newest first
    assert len(ids) >= 3
    page.open("#/?limit=2")
    page.wait(lambda: page.text("#page-number") == "page 1")
    shown = lambda: [r.get_attribute("data-id")  # noqa: E731
                     for r in page.driver.find_elements(By.CSS_SELECTOR, "#jobs tbody tr")]
    page.wait(lambda: shown() == ids[:2], what="first page")
    page.find("#page-older").click()
    page.wait(lambda: shown() == ids[2:4], what="second page")
    page.find("#page-newer").click()
    page.wait(lambda: shown() == ids[:2], what="back to the first page")
    page.find("#filter-name").send_keys("QUICK\n")
    page.wait(lambda: len(shown()) == 1 and "quick" in page.text("#jobs tbody"),
              what="name filter")


def test_a_token_revoked_while_the_page_is_open_signs_it_out(page):
    carol = create_users(page.cluster.settings, ("carol", "user"))["carol"]
    page.sign_in(carol)
    page.wait(lambda: page.find("#no-jobs").is_displayed(), what="carol's empty list")
    revoked = subprocess.run([sys.executable, "-m", "jobqueue.controller.admin", "revoke-tokens",
                              "carol"], env=page.cluster.env, capture_output=True, text=True)
    assert revoked.returncode == 0, revoked.stderr
    page.find("#refresh").click()
    page.wait(lambda: "no longer accepted" in page.text("#error"), what="not signed out")
    assert page.find("#sign-in").is_displayed()
    page.wait(lambda: page.driver.get_cookies() == [], what="the sign-in's cookies kept")


def test_signing_out_forgets_the_token(page):
    page.sign_in(page.cluster.tokens["alice"])
    page.open("#/")
    page.wait(lambda: page.find("#sign-out").is_displayed())
    page.find("#sign-out").click()
    assert page.find("#sign-in").is_displayed()
    assert page.driver.execute_script("return sessionStorage.length + localStorage.length") == 0
    page.wait(lambda: page.driver.get_cookies() == [], what="the sign-in's cookies kept")
    page.open("#/")
    assert page.find("#sign-in").is_displayed() and not page.find("#nav").is_displayed()


def test_one_sign_in_serves_every_tab_and_no_script_reads_the_token(page):
    page.sign_in(page.cluster.tokens["alice"])
    token = page.cluster.tokens["alice"]
    first = page.driver.current_window_handle
    page.driver.switch_to.new_window("tab")
    try:
        page.open("#/")
        page.wait(lambda: page.find("#who").is_displayed(), what="the new tab is not signed in")
        assert "alice" in page.text("#who-name")
        assert not page.find("#sign-in").is_displayed()
        seen = page.driver.execute_script(
            "return document.cookie + JSON.stringify(sessionStorage) + "
            "JSON.stringify(localStorage)")
        assert token not in seen and "jobqueue_csrf=" in seen
        stored = {c["name"]: c for c in page.driver.get_cookies()}
        assert set(stored) == {"jobqueue_csrf"}  # the session cookie is the API's alone
    finally:
        page.driver.close()
        page.driver.switch_to.window(first)


CHANGE = """
const [path, header] = arguments;
const done = arguments[arguments.length - 1];
fetch(path, {method: "POST", credentials: "same-origin",
             headers: header ? {"X-CSRF-Token": header} : {}})
  .then(async (r) => done([r.status, await r.text()]));
"""


def test_a_change_without_the_csrf_header_is_refused(page):
    page.sign_in(page.cluster.tokens["alice"])
    job = page.cluster.submit("import time; time.sleep(60)\n", name="csrf target")
    path = f"/api/v1/jobs/{job}/cancel"
    status, body = page.driver.execute_async_script(CHANGE, path, None)
    assert status == 403 and '"csrf"' in body
    status, _ = page.driver.execute_async_script(CHANGE, path, "forged")
    assert status == 403
    assert page.cluster.client.get(job)["state"] != "cancelled"
    csrf = page.driver.get_cookie("jobqueue_csrf")["value"]
    status, body = page.driver.execute_async_script(CHANGE, path, csrf)
    assert status == 200, body
    assert page.cluster.client.get(job)["cancel_requested"] or \
        page.cluster.client.get(job)["state"] == "cancelled"
