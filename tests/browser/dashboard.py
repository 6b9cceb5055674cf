"""The dashboard (/dashboard) in a real headless Chromium while the appliance is under load,
as a manager watches it: it asks for a viewer token, then shows the stored-prediction
counter rising and the latency chart redrawn at each poll; a bundle version pushed through
the fleet appears as active; the audit trail verifies from its button. Then the kiosk page
takes a kiosk token once and keeps it across a reload. Checks the pages with axe-core and
the console for errors, and writes a screenshot.

Usage: dashboard.py BASE_URL VIEWER_TOKEN KIOSK_TOKEN PUSH_COMMAND_JSON NEW_VERSION AXE_JS SCREENSHOT_DIR
  PUSH_COMMAND_JSON: the argv (a JSON list) that pushes NEW_VERSION of car-price.
Prints one line per step; exits 1 at the first that does not happen within its time.
"""

import json
import os
import re
import subprocess
import sys

from forecourt_browser import axe_violations, chromium, console_problems, fail, fits_a_small_screen, screenshot, step
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as seen
from selenium.webdriver.support.ui import WebDriverWait


def number(browser, element_id):
    digits = re.sub(r"[^0-9]", "", browser.find_element(By.ID, element_id).text)
    return int(digits) if digits else -1


def updates(browser):
    return int(browser.execute_script("return Number(document.body.dataset.updates || 0);"))


def after_next_poll(browser, wait):
    seen_updates = updates(browser)
    wait.until(lambda b: updates(b) > seen_updates)


def chart_pixels(browser, chart):
    return browser.execute_script(
        "const c = document.querySelector(arguments[0] + ' canvas'); return c ? c.toDataURL() : '';", chart
    )


def enter_token(browser, token):
    browser.find_element(By.ID, "token").send_keys(token)
    browser.find_element(By.CSS_SELECTOR, "#token-form button[type=submit]").click()


def main(base_url, viewer, kiosk, push, new_version, axe_js, screenshots):
    with chromium() as browser:
        wait = WebDriverWait(browser, 30)
        browser.get(f"{base_url}/dashboard")
        with step("the dashboard asks for a viewer token", browser):
            wait.until(seen.text_to_be_present_in_element((By.ID, "token-state"), "needs a viewer token"))
        enter_token(browser, viewer)
        with step("with the token, the figures arrive", browser, "main"):
            wait.until(lambda b: updates(b) >= 1)
            wait.until(seen.text_to_be_present_in_element((By.ID, "status"), "ready"))

        with step("under load, the stored predictions rise from poll to poll", browser, "main"):
            wait.until(lambda b: number(b, "store-predictions") > 0)
            first = number(browser, "store-predictions")
            after_next_poll(browser, wait)
            wait.until(lambda b: number(b, "store-predictions") > first)
        with step("the last minute counts requests and shows latency", browser, "main"):
            wait.until(lambda b: number(b, "tile-requests") > 0)
            wait.until(seen.text_to_be_present_in_element((By.ID, "tile-p99"), "ms"))
        print(
            "figures: "
            + json.dumps({name: browser.find_element(By.ID, name).text for name in ["tile-rps", "tile-requests", "tile-p50", "tile-p99", "store-predictions"]})
        )
        with step("the latency chart is redrawn with new data", browser, "main"):
            before = chart_pixels(browser, "#latency-chart")
            wait.until(lambda b: updates(b) and chart_pixels(b, "#latency-chart") not in ("", before))
        with step("the latest predictions are listed", browser, "#predictions"):
            wait.until(seen.text_to_be_present_in_element((By.CSS_SELECTOR, "#predictions tbody"), "car-price"))

        pushed = subprocess.run(push, capture_output=True, text=True, timeout=120)
        if pushed.returncode != 0:
            fail(f"the push failed: {pushed.stdout}{pushed.stderr}")
        print("pushed: " + pushed.stdout.strip().splitlines()[-1] if pushed.stdout.strip() else "pushed")
        active = (By.CSS_SELECTOR, 'tr[data-bundle="car-price"] td')
        with step(f"the pushed version {new_version} shows as active", browser, "#bundles"):
            wait.until(seen.text_to_be_present_in_element(active, new_version))
        with step("the deployment is in the audit trail's table", browser, "#deployments"):
            wait.until(seen.text_to_be_present_in_element((By.CSS_SELECTOR, "#deployments tbody"), "deployment finished"))
            wait.until(seen.text_to_be_present_in_element((By.CSS_SELECTOR, "#deployments tbody"), new_version))

        browser.find_element(By.ID, "verify").click()
        with step("the audit trail verifies from the dashboard", browser, "#store-title"):
            wait.until(seen.text_to_be_present_in_element((By.ID, "verify-state"), "intact"))
            wait.until(seen.text_to_be_present_in_element((By.ID, "store-verified"), "intact"))

        problems = console_problems(browser, expected_statuses=(401,))
        if problems:
            fail(f"the console holds errors: {problems}")
        print("ok: no console errors on the dashboard")
        violations = axe_violations(browser, axe_js)
        if violations:
            fail("axe-core found accessibility violations on the dashboard:\n" + "\n".join(violations))
        print("ok: axe-core finds no violation on the dashboard")
        screenshot(browser, os.path.join(screenshots, "dashboard.png"))
        fits_a_small_screen(browser, "the dashboard")

        # The kiosk page on the same appliance: its own token, typed once, kept.
        browser.get(f"{base_url}/")
        with step("the kiosk page asks for a kiosk token", browser):
            wait.until(seen.text_to_be_present_in_element((By.ID, "token-state"), "needs a kiosk token"))
        enter_token(browser, kiosk)
        with step("with the token, the form appears", browser, "main"):
            wait.until(seen.presence_of_element_located((By.ID, "field-mileage")))
        browser.refresh()
        with step("a reload keeps the token: the form appears without typing", browser, "main"):
            wait.until(seen.presence_of_element_located((By.ID, "field-mileage")))
            wait.until(seen.text_to_be_present_in_element((By.ID, "token-state"), "Using the token"))
        if kiosk in browser.current_url:
            fail("the token is in the URL")
        problems = console_problems(browser, expected_statuses=(401,))
        if problems:
            fail(f"the console holds errors: {problems}")
        print("ok")


if __name__ == "__main__":
    if len(sys.argv) != 8:
        print(__doc__)
        sys.exit(2)
    main(sys.argv[1].rstrip("/"), sys.argv[2], sys.argv[3], json.loads(sys.argv[4]), sys.argv[5], sys.argv[6], sys.argv[7])
