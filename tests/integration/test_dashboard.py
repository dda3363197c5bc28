"""The dashboard in a real browser (Debian's Chromium driven by Playwright) against a real control plane:
sign-in, live call history and log tail, a failed call's traceback, container memory, no secret value
on any page, and the Prometheus endpoint scraped and parsed."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from homeport.testing import homeport_cli

pytestmark = pytest.mark.integration

PROGRAMS = Path(__file__).parent / "programs"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _login_link() -> str:
    out = homeport_cli("dashboard", "--no-browser")
    assert out.returncode == 0, out.stderr
    return next(word for word in out.stdout.split() if "/login?token=" in word)


@pytest.fixture(scope="module")
def link(platform) -> str:
    return _login_link()


@pytest.fixture(scope="module")
def page(link):
    if CHROMIUM is None:
        pytest.skip("no Chromium on this machine (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(30_000)
            page.goto(link)
            page.wait_for_selector("text=live")
            yield page
        finally:
            browser.close()


def test_everything_needs_the_login(link):
    base = link.split("/login")[0]
    for path in ("/", "/api/snapshot", "/api/calls", "/api/logs", "/api/storage", "/metrics", "/api/events"):
        r = httpx.get(base + path, timeout=10)
        assert r.status_code == 401, path
    assert httpx.get(base + "/login?token=wrong", timeout=10).status_code == 401
    r = httpx.get(link, timeout=10)
    assert r.status_code == 303
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie


def test_calls_and_logs_arrive_live_and_a_failure_shows_its_traceback(page):
    marker = f"m{uuid.uuid4().hex[:10]}"
    page.goto(page.url.split("#")[0] + "#/logs")
    page.wait_for_selector("#log-lines")
    out = homeport_cli("run", str(PROGRAMS / "dashboard_app.py"), "--marker", marker)
    assert out.returncode == 0, out.stderr
    # The log line reached the open page through the live stream: no reload happened.
    page.wait_for_selector(f"#log-lines >> text=greeting {marker}")
    page.click("nav >> text=Calls")
    page.wait_for_selector("table >> text=restock")
    row = page.locator("tr", has_text="restock").first
    assert "failure" in row.inner_text()
    row.click()
    page.wait_for_selector("pre.traceback")
    traceback = page.inner_text("pre.traceback")
    assert "inventory is short by 17 crates" in page.inner_text("pre.error")
    assert "check_inventory" in traceback and "restock" in traceback
    # The map's twenty successes are one row with their count.
    page.click("nav >> text=Calls")
    page.wait_for_selector("table >> text=square")
    assert "20" in page.locator("tr", has_text="square").first.inner_text()


def test_a_container_shows_its_memory_and_start_up(page):
    out = homeport_cli("deploy", str(PROGRAMS / "dashboard_warm.py"))
    assert out.returncode == 0, out.stderr
    try:
        page.click("nav >> text=Containers")
        page.wait_for_function(
            "() => [...document.querySelectorAll('tr')].some(r => r.innerText.includes('Holder') && /\\d+\\.\\d MiB/.test(r.innerText) && r.innerText.includes('ready'))",
            timeout=60_000)
        row = page.locator("tr", has_text="Holder").first.inner_text()
        mib = float(row.split(" MiB")[0].split()[-1])
        assert mib >= 48, row  # the 48 MiB the enter hook touched
        assert "ready" in row
        # The function's own page: settings, figures and charts, drawn from the live stream.
        page.click("nav >> text=Apps")
        page.click("a >> text=hold")
        page.wait_for_selector("h2 >> text=Settings")
        assert page.locator(".chart svg").count() == 3
        assert '"min_containers": 1' in page.inner_text("pre")
    finally:
        assert homeport_cli("app", "stop", "dash-warm", "-y").returncode == 0


def test_a_deployed_app_rolls_back_from_the_apps_page(page):
    for _ in range(2):
        out = homeport_cli("deploy", str(PROGRAMS / "dashboard_warm.py"))
        assert out.returncode == 0, out.stderr
    try:
        versions = len(json.loads(homeport_cli("app", "history", "dash-warm", "--json").stdout))
        page.on("dialog", lambda dialog: dialog.accept())
        page.click("nav >> text=Apps")
        page.click(f"tr:has-text('dash-warm') button.rollback[data-version='{versions - 1}']")
        page.wait_for_selector(f"tr:has-text('dash-warm') >> text=v{versions + 1}")
        history = json.loads(homeport_cli("app", "history", "dash-warm", "--json").stdout)
        assert len(history) == versions + 1  # a rollback is a new version
    finally:
        assert homeport_cli("app", "stop", "dash-warm", "-y").returncode == 0


def test_no_secret_value_on_any_page(page):
    value = f"s3cr3t-{uuid.uuid4().hex}"
    out = homeport_cli("secret", "create", "dash-secret", f"API_KEY={value}", "--force")
    assert out.returncode == 0, out.stderr
    seen = []
    for nav in ("Apps", "Containers", "Calls", "Logs", "Volumes, secrets, endpoints"):
        page.click(f"nav >> text={nav}")
        page.wait_for_timeout(300)
        seen.append(page.content())
    assert "dash-secret" in seen[-1] and "API_KEY" in seen[-1]
    assert not any(value in html for html in seen)


def test_metrics_are_served_for_prometheus(link):
    homeport_cli("run", str(PROGRAMS / "dashboard_app.py"), "--marker", "metrics")
    base, token = link.split("/login?token=")
    r = httpx.get(base + "/metrics", headers={"authorization": f"Bearer {token}"}, timeout=10)
    assert r.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    inputs = {(s.labels["function"], s.labels["status"]): s.value
              for s in families["homeport_inputs"].samples if s.name == "homeport_inputs_total"}
    assert inputs[("square", "success")] >= 20
    assert inputs[("restock", "failure")] >= 1
    cold = [s for s in families["homeport_cold_start_seconds"].samples if s.name.endswith("_count")]
    assert sum(s.value for s in cold) >= 1
    assert "homeport_input_duration_seconds" in families
    assert "homeport_containers" in families and "homeport_queue_depth" in families
    assert all(name.startswith("homeport_") for name in families)


def test_dashboard_cli_prints_a_working_link(link):
    out = subprocess.run([sys.executable, "-m", "homeport.cli", "dashboard", "--no-browser"],
                         capture_output=True, text=True, timeout=60)
    assert link in out.stdout.replace("\n", "")
    with httpx.Client(follow_redirects=True, timeout=10) as client:
        assert client.get(link).status_code == 200
        snap = client.get(link.split("/login")[0] + "/api/snapshot").json()
    assert json.dumps(snap)  # JSON all the way down
