"""/docs in a real headless Chromium, as an operator uses it on an appliance with tokens:
the page opens without a token, says the API needs one, takes the token typed into its bar,
and then shows every operation of the document; "Try it out" sends the token too.

Usage: docs_token.py BASE_URL TOKEN. Prints one line per step; exits 1 at the first step
that does not happen within its time.
"""

import sys

from forecourt_browser import chromium, fail, step
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as seen
from selenium.webdriver.support.ui import WebDriverWait


def live_status(browser, operation: str) -> str:
    """The status code of the server's answer shown under an operation, or "" before it."""
    return browser.execute_script(
        "const cell = document.querySelector(arguments[0] + ' .live-responses-table tbody .response-col_status');"
        "return cell ? cell.textContent.trim() : '';",
        operation,
    )


def main(base_url: str, token: str) -> None:
    with chromium() as browser:
        wait = WebDriverWait(browser, 30)
        browser.get(f"{base_url}/docs")
        state = (By.ID, "forecourt-token-state")
        with step("the page asks for a token"):
            wait.until(seen.text_to_be_present_in_element(state, "needs a token"))

        browser.find_element(By.ID, "forecourt-token").send_keys(token)
        browser.find_element(By.CSS_SELECTOR, "#forecourt-token-form button").click()
        with step("the document loads with the token"):
            wait.until(seen.text_to_be_present_in_element(state, "Using the token"))
            wait.until(
                seen.presence_of_element_located(
                    (By.CSS_SELECTOR, '.opblock-summary-path[data-path="/v1/predict/car-price"]')
                )
            )
        paths = {
            element.get_attribute("data-path")
            for element in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")
        }
        print(f"operations shown: {len(paths)}")
        for expected in ["/v1/predict/car-price", "/v1/bundles", "/v2/models/{model}/infer", "/health"]:
            if expected not in paths:
                fail(f"{expected} is not shown; shown: {sorted(paths)}")

        # The token stays for the tab: a reload needs no typing.
        browser.refresh()
        with step("a reload keeps the token for the tab"):
            wait.until(seen.text_to_be_present_in_element(state, "Using the token"))

        # "Try it out" on GET /v1/bundles: the answer is the appliance's, with the token.
        # Swagger UI keeps an operation's open and try-out states across a reload, so each
        # control is used only when it is not already in the wanted state.
        operation = "#operations-bundles-bundles"
        with step("Try it out answers 200 with the token", browser, f"{operation} .responses-wrapper"):
            block = wait.until(seen.presence_of_element_located((By.CSS_SELECTOR, operation)))
            if "is-open" not in (block.get_attribute("class") or ""):
                browser.find_element(By.CSS_SELECTOR, f"{operation} .opblock-summary-control").click()
            try_out = wait.until(seen.element_to_be_clickable((By.CSS_SELECTOR, f"{operation} .try-out__btn")))
            if try_out.text.strip() == "Try it out":
                try_out.click()
            wait.until(seen.element_to_be_clickable((By.CSS_SELECTOR, f"{operation} .execute"))).click()
            wait.until(lambda page: live_status(page, operation).startswith("200"))
        print("ok")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
