"""Horizon in headless Chromium for the end-to-end tests.

The dashboard's own ``Panel`` helper (``tests/dashboard/browser.py``),
which the dashboard suite runs against a fake Nova, with a real cloud's
patience and screenshots saved under ``artifacts/screenshots/e2e/``.
"""

from tests.e2e import conftest

# The dashboard helper waits 20 s, enough for its fake Nova; the real cloud
# on two busy cores sometimes needs more: a form post goes through
# Keystone, nova-api and the database, and the first page after the login
# compiles the panel's templates and stylesheets.
CLOUD_WAIT = 90


class Panel:
    """The dashboard's Panel, saving its screenshots under e2e/."""

    def __init__(self, module, cloud: dict, prefix: str) -> None:
        self.driver = module.start_chromium()
        self.module = module
        self.panel = module.Panel(self.driver, cloud["dashboard_url"],
                                  patience=CLOUD_WAIT)
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

    def wait_for_message(self, text: str) -> str:
        try:
            return self.panel.wait_for_message(text)
        except AssertionError:
            self.shot("no-message")
            raise

    def close(self) -> None:
        self.module.stop_chromium(self.driver)
