"""Horizon in headless Chromium for the end-to-end tests.

The dashboard's own ``Panel`` helper (``tests/dashboard/browser.py``),
which the dashboard suite runs against a fake Nova, with a real cloud's
patience and screenshots saved under ``artifacts/screenshots/e2e/``.
"""

from selenium.common.exceptions import (
    StaleElementReferenceException,
    TimeoutException,
)
from selenium.webdriver.common.by import By

from tests.e2e import conftest

# The dashboard helper waits 20 s, enough for its fake Nova; the real cloud
# on two busy cores sometimes needs more.
CLOUD_WAIT = 90


class Panel:
    """The dashboard's Panel, saving its screenshots under e2e/."""

    def __init__(self, module, cloud: dict, prefix: str) -> None:
        self.driver = module.start_chromium()
        self.module = module
        self.panel = module.Panel(self.driver, cloud["dashboard_url"])
        self.prefix = prefix
        self.step = 0

    def __getattr__(self, name):
        return getattr(self.panel, name)

    def shot(self, what: str) -> None:
        self.step += 1
        conftest.SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        self.driver.save_screenshot(str(
            conftest.SCREENSHOTS
            / f"{self.prefix}-{self.step:02d}-{what}.png"))

    def login(self, username: str, password: str) -> None:
        """Horizon's login form; the first page after it compiles the
        panel's templates and stylesheets, hence the longer wait."""
        self.driver.get(f"{self.panel.base_url}/auth/login/?next="
                        "/admin/elastic_sizing/")
        self.panel.find("#id_username").send_keys(username)
        self.driver.find_element(By.ID, "id_password").send_keys(password)
        self.driver.find_element(By.CSS_SELECTOR,
                                 "button[type=submit]").click()
        self.panel.wait(lambda driver: driver.find_elements(
            By.ID, "instances"), CLOUD_WAIT)

    def wait_for_message(self, text: str,
                         timeout: float = CLOUD_WAIT) -> str:
        """As the dashboard helper's, with a real cloud's patience: a form
        post here goes through Keystone, nova-api and the database."""
        def shown(driver):
            for alert in driver.find_elements(By.CSS_SELECTOR,
                                              ".messages .alert"):
                try:
                    if text in alert.text:
                        return alert.text
                except StaleElementReferenceException:
                    continue
            return False
        try:
            return self.panel.wait(shown, timeout)
        except TimeoutException:
            self.shot("no-message")
            page = self.driver.find_element(By.TAG_NAME, "body").text
            raise AssertionError(
                f"no message containing {text!r} after {timeout} s; the "
                f"page showed: {page[:1500]}") from None

    def close(self) -> None:
        self.module.stop_chromium(self.driver)
