"""Take the README's dashboard screenshots: a private control plane, the test programs, Debian's Chromium.

    python docs/dashboard/screenshots.py      # writes docs/dashboard/*.png
"""

import shutil
import sys
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

from homeport.testing import Platform, homeport_cli

HERE = Path(__file__).parent
PROGRAMS = HERE.parent.parent / "tests" / "integration" / "programs"


def main() -> None:
    with Platform():
        link = next(w for w in homeport_cli("dashboard", "--no-browser").stdout.split() if "/login?token=" in w)
        homeport_cli("secret", "create", "stripe-key", "API_KEY=never-shown", "--force")
        homeport_cli("volume", "create", "model-weights")
        homeport_cli("deploy", str(PROGRAMS / "dashboard_warm.py"))
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 800})
            page.goto(link)
            page.wait_for_selector("text=live")
            page.goto(link.split("/login")[0] + "/#/logs")
            for marker in ("first", "second"):
                homeport_cli("run", str(PROGRAMS / "dashboard_app.py"), "--marker", marker)
            time.sleep(2)
            page.screenshot(path=str(HERE / "logs.png"))
            for nav, name in (("Apps", "apps"), ("Containers", "containers"), ("Calls", "calls"),
                              ("Volumes, secrets, endpoints", "storage")):
                page.click(f"nav >> text={nav}")
                time.sleep(1.5)
                page.screenshot(path=str(HERE / f"{name}.png"))
            page.click("nav >> text=Calls")
            page.locator("tr", has_text="restock").first.click()
            page.wait_for_selector("pre.traceback")
            page.screenshot(path=str(HERE / "failed-call.png"))
            page.click("nav >> text=Apps")
            page.click("text=Holder")
            time.sleep(3)
            page.screenshot(path=str(HERE / "function.png"))
            browser.close()
        homeport_cli("app", "stop", "dash-warm")


if __name__ == "__main__":
    sys.exit(main())
