"""Headless Chromium for the browser tests: Debian's chromium and chromedriver (never a
driver downloaded at run time; this machine reaches no such site), flags that keep it from
calling out, and a fresh profile per run; the console's messages, axe-core's accessibility
check, and screenshots."""

import contextlib
import json
import os
import sys
import tempfile

from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


@contextlib.contextmanager
def chromium():
    os.environ["SE_OFFLINE"] = "true"
    with tempfile.TemporaryDirectory() as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1280,2000",
            f"--user-data-dir={profile}",
        ]:
            options.add_argument(flag)
        # The console's messages, for console_problems().
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        browser = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
        try:
            yield browser
        finally:
            browser.quit()


def fail(message: str) -> None:
    print(f"FAILED: {message}")
    sys.exit(1)


@contextlib.contextmanager
def step(what: str, browser=None, near: str = "body"):
    """One thing the user should see; on failure, what the page held instead (the text of
    the element `near`, cut to a few kilobytes)."""
    try:
        yield
    except TimeoutException:
        if browser is not None:
            try:
                html = browser.execute_script(
                    "const e = document.querySelector(arguments[0]); return e ? e.innerText : '(absent)';", near
                )
                print(f"{near} showed: {html[:4000]}")
            except Exception as error:  # the page itself may be gone
                print(f"{near} could not be read: {error}")
        fail(f"{what}: not within the wait")
    print(f"ok: {what}")


def console_problems(browser, expected_statuses=()) -> list:
    """The console's errors and warnings since the last call. A failed request whose status
    is in `expected_statuses` (a 401 before the token is typed) is the network's log line,
    not a fault of the page, and is left out."""
    problems = []
    for entry in browser.get_log("browser"):
        if entry["level"] not in ("SEVERE", "WARNING"):
            continue
        if entry.get("source") == "network" and any(
            f"status of {status}" in entry["message"] for status in expected_statuses
        ):
            continue
        problems.append(f"{entry['level']} {entry.get('source')}: {entry['message']}")
    return problems


def axe_violations(browser, axe_path: str) -> list:
    """axe-core's WCAG 2 A/AA violations on the page as it is now, one line each."""
    with open(axe_path, encoding="utf-8") as source:
        browser.execute_script(source.read())
    browser.set_script_timeout(60)
    result = browser.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        axe.run(document, { runOnly: { type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"] } })
          .then((r) => done(JSON.stringify(r.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help,
            nodes: v.nodes.slice(0, 3).map((n) => n.target.join(" ")) })))))
          .catch((e) => done(JSON.stringify([{ id: "axe-failed", impact: "critical", help: String(e), nodes: [] }])));
        """
    )
    return [f"{v['id']} ({v['impact']}): {v['help']} at {v['nodes']}" for v in json.loads(result)]


def screenshot(browser, path: str) -> None:
    """The whole page (not only the window) as a PNG at `path`."""
    height = browser.execute_script("return Math.max(document.body.scrollHeight, document.documentElement.scrollHeight);")
    browser.set_window_size(1280, max(800, min(int(height) + 40, 4000)))
    browser.execute_script("window.scrollTo(0, 0);")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if not browser.save_screenshot(path):
        fail(f"the screenshot {path} was not written")
    print(f"screenshot: {path}")


def fits_a_small_screen(browser, what: str) -> None:
    """At a phone-sized kiosk screen (390 x 844), the page needs no sideways scrolling."""
    browser.set_window_size(390, 844)
    overflow = browser.execute_script(
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth;"
    )
    if overflow > 0:
        fail(f"{what} is {overflow} px wider than a 390 px screen")
    print(f"ok: {what} fits a 390 px screen")
    browser.set_window_size(1280, 2000)
