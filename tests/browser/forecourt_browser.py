"""Headless Chromium for the browser tests: Debian's chromium and chromedriver (never a
driver downloaded at run time; this machine reaches no such site), flags that keep it from
calling out, and a fresh profile per run."""

import contextlib
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
