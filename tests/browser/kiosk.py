"""The kiosk page (/) in a real headless Chromium, as a salesperson uses it: for each case,
choose the model, fill its form (made from the bundle's own schema) and ask for the
valuation with the keyboard's Enter; then a bad value and a missing field, whose errors must
show beside their fields. Checks the page with axe-core and the console for errors, and
writes a screenshot.

Usage: kiosk.py BASE_URL CASES_JSON AXE_JS SCREENSHOT_DIR
  CASES_JSON: [{"bundle": "car-price", "request": {...}}, ...]; the first must be car-price.
Prints one line per step and, per case, `result: {"bundle", "primary", "meta", ...}`; exits
1 at the first step that does not happen within its time.
"""

import json
import os
import sys

from forecourt_browser import axe_violations, chromium, console_problems, fail, fits_a_small_screen, screenshot, step
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as seen
from selenium.webdriver.support.ui import Select, WebDriverWait


def field(browser, name):
    return browser.find_element(By.ID, f"field-{name}")


def choose_bundle(browser, wait, name):
    with step(f"the model list offers {name}", browser):
        wait.until(seen.presence_of_element_located((By.CSS_SELECTOR, f'#bundle option[value="{name}"]')))
    Select(browser.find_element(By.ID, "bundle")).select_by_value(name)
    with step(f"the form shows {name}'s fields", browser):
        wait.until(lambda b: b.find_element(By.ID, "bundle-description").text.strip() != "")


def fill(browser, request):
    """Types each value of `request` into its field, as a person would."""
    for name, value in request.items():
        element = field(browser, name)
        kind = element.get_attribute("type") if element.tag_name == "input" else element.tag_name
        if kind == "checkbox":
            if element.is_selected() != bool(value):
                element.send_keys(Keys.SPACE)
        elif kind == "select":
            Select(element).select_by_value(str(value))
        else:
            element.clear()
            element.send_keys(", ".join(str(v) for v in value) if isinstance(value, list) else str(value))


def submit_with_enter(browser, request):
    """Enter in the first text or number field submits the form, as on a keyboard."""
    for name in request:
        element = field(browser, name)
        if element.tag_name == "input" and element.get_attribute("type") in ("number", "text"):
            element.send_keys(Keys.ENTER)
            return
    browser.find_element(By.ID, "submit").click()


def main(base_url, cases, axe_js, screenshots):
    with chromium() as browser:
        wait = WebDriverWait(browser, 30)
        browser.get(f"{base_url}/")
        for case in cases:
            bundle, request = case["bundle"], dict(case["request"])
            browser.refresh()
            choose_bundle(browser, wait, bundle)
            if bundle == "car-price":
                request["forecast_months"] = [12, 24, 36]
            fill(browser, request)
            submit_with_enter(browser, request)
            with step(f"{bundle}: the valuation is shown", browser, "main"):
                wait.until(seen.text_to_be_present_in_element((By.ID, "answer-meta"), f"{bundle} "))
            result = {
                "bundle": bundle,
                "request": request,
                "primary": browser.find_element(By.ID, "primary").text,
                "meta": browser.find_element(By.ID, "answer-meta").text,
            }
            if bundle == "car-price":
                with step("car-price: the forecast is drawn and tabled", browser, "#answer"):
                    wait.until(seen.visibility_of_element_located((By.CSS_SELECTOR, "#forecast-chart canvas")))
                rows = browser.find_elements(By.CSS_SELECTOR, "#forecast-table tbody tr")
                result["forecast_rows"] = [row.text for row in rows]
                problems = console_problems(browser)
                if problems:
                    fail(f"the console holds errors: {problems}")
                violations = axe_violations(browser, axe_js)
                if violations:
                    fail("axe-core found accessibility violations on the kiosk page:\n" + "\n".join(violations))
                print("ok: axe-core finds no violation on the kiosk page with an answer")
                screenshot(browser, os.path.join(screenshots, "kiosk.png"))
                fits_a_small_screen(browser, "the kiosk page with an answer")
            print("result: " + json.dumps(result))

        # A value out of its range: the appliance's message beside the field, the field marked.
        browser.refresh()
        choose_bundle(browser, wait, "car-price")
        fill(browser, {**cases[0]["request"], "mileage": -5})
        submit_with_enter(browser, cases[0]["request"])
        with step("a bad mileage shows its error beside the field", browser, "#valuation"):
            wait.until(lambda b: b.find_element(By.ID, "error-mileage").text.strip() != "")
        if field(browser, "mileage").get_attribute("aria-invalid") != "true":
            fail("the mileage field is not marked invalid")
        print("field error: " + browser.find_element(By.ID, "error-mileage").text)

        # A required choice left blank.
        fill(browser, {"mileage": cases[0]["request"]["mileage"]})
        Select(field(browser, "make")).select_by_value("")
        browser.find_element(By.ID, "submit").click()
        with step("a missing make shows its error beside the field", browser, "#valuation"):
            wait.until(lambda b: b.find_element(By.ID, "error-make").text.strip() != "")
        if browser.find_element(By.ID, "error-mileage").text.strip():
            fail("the mileage error stayed after the mileage was fixed")
        print("field error: " + browser.find_element(By.ID, "error-make").text)
        problems = console_problems(browser, expected_statuses=(422,))
        if problems:
            fail(f"the console holds errors: {problems}")
        print("ok: no console errors")


if __name__ == "__main__":
    if len(sys.argv) != 5:
        print(__doc__)
        sys.exit(2)
    main(sys.argv[1].rstrip("/"), json.loads(sys.argv[2]), sys.argv[3], sys.argv[4])
