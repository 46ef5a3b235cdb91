"""Headless Chromium driving the Elastic Sizing panel.

``ensure_chromium`` installs Debian's ``chromium`` and ``chromium-driver``
when they are missing (as root), ``start_chromium`` starts a fresh
browser, and ``Panel`` knows the panel's pages, so the same flows run
against Django's live server with the fake Nova and against a real cloud.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import tempfile

from selenium import webdriver
from selenium.common import exceptions as selenium_exceptions
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / 'artifacts' / 'screenshots' / 'dashboard'
CHROMIUM_FLAGS = ('--headless', '--no-sandbox', '--disable-gpu',
                  '--disable-quic', '--no-first-run',
                  '--disable-background-networking',
                  '--disable-component-update', '--disable-sync',
                  '--disable-dev-shm-usage',
                  # The Instances table shows every column at this width.
                  '--window-size=2100,1000')
WAIT = 20


def _binaries() -> tuple[str | None, str | None]:
    return shutil.which('chromium'), shutil.which('chromedriver')


def ensure_chromium() -> tuple[str, str]:
    """Paths of chromium and chromedriver, installing them if missing.

    Raises RuntimeError with the reason when they cannot be had.
    """
    browser, driver = _binaries()
    if browser and driver:
        return browser, driver
    if os.geteuid() != 0:
        raise RuntimeError('chromium and chromium-driver are missing and '
                           'installing them needs root: apt-get install '
                           'chromium chromium-driver')
    env = dict(os.environ, DEBIAN_FRONTEND='noninteractive')
    for command in (['apt-get', 'update', '-qq'],
                    ['apt-get', 'install', '-y', '-qq',
                     '--no-install-recommends', 'chromium',
                     'chromium-driver']):
        subprocess.run(command, check=True, env=env, timeout=900,
                       stdout=subprocess.DEVNULL)
    browser, driver = _binaries()
    if not (browser and driver):
        raise RuntimeError('apt-get installed chromium but the binaries '
                           'are not on PATH')
    return browser, driver


def start_chromium() -> webdriver.Chrome:
    browser, driver_path = ensure_chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix='xloud-chromium-')
    options.add_argument(f'--user-data-dir={profile}')
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.profile_dir = profile
    driver.implicitly_wait(0)
    return driver


def stop_chromium(driver: webdriver.Chrome) -> None:
    driver.quit()
    shutil.rmtree(driver.profile_dir, ignore_errors=True)


class Panel:
    """The Elastic Sizing panel as an administrator sees it."""

    def __init__(self, driver: webdriver.Chrome, base_url: str,
                 patience: float = WAIT):
        """``patience``: seconds any wait lasts unless told otherwise."""
        self.driver = driver
        self.base_url = base_url.rstrip('/')
        self.index_url = f'{self.base_url}/admin/elastic_sizing/'
        self.patience = patience

    def wait(self, condition, timeout: float | None = None):
        return WebDriverWait(self.driver,
                             timeout or self.patience).until(condition)

    def find(self, css: str) -> WebElement:
        return self.wait(ec.presence_of_element_located(
            (By.CSS_SELECTOR, css)))

    def visible(self, css: str) -> WebElement:
        return self.wait(ec.visibility_of_element_located(
            (By.CSS_SELECTOR, css)))

    def screenshot(self, name: str) -> pathlib.Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f'{name}.png'
        self.driver.save_screenshot(str(path))
        return path

    def login(self, username: str, password: str,
              domain: str | None = None) -> None:
        self.driver.get(f'{self.base_url}/auth/login/?next='
                        '/admin/elastic_sizing/')
        self.find('#id_username').send_keys(username)
        self.driver.find_element(By.ID, 'id_password').send_keys(password)
        if domain is not None:
            field = self.driver.find_elements(By.ID, 'id_domain')
            if field:
                field[0].clear()
                field[0].send_keys(domain)
        self.driver.find_element(By.CSS_SELECTOR,
                                 'button[type=submit]').click()
        self.find('#instances')

    def open(self, query: str = '') -> None:
        self.driver.get(self.index_url + query)
        self.find('table#instances, table#flavors')

    def wait_for_message(self, text: str) -> str:
        """The text of the first alert that contains ``text``; failing,
        what the page showed instead."""
        def shown(driver):
            for alert in driver.find_elements(By.CSS_SELECTOR,
                                              '.messages .alert'):
                try:
                    if text in alert.text:
                        return alert.text
                except selenium_exceptions.StaleElementReferenceException:
                    continue
            return False
        try:
            return self.wait(shown)
        except selenium_exceptions.TimeoutException:
            page = self.driver.find_element(By.TAG_NAME, 'body').text
            raise AssertionError(
                f'no message containing {text!r} after {self.patience} s; '
                f'the page showed: {page[:1500]}') from None

    def row(self, table: str, object_id: str) -> WebElement:
        return self.find(f'#{table}__row__{object_id}')

    def row_text(self, table: str, object_id: str) -> str:
        return self.row(table, object_id).text

    def wait_for_row(self, table: str, object_id: str, text: str,
                     timeout: float | None = None) -> str:
        """Waits until the row (refreshed by Horizon's polling) shows
        ``text``; returns the row's text."""
        def shows(driver):
            try:
                value = driver.find_element(
                    By.ID, f'{table}__row__{object_id}').text
            except selenium_exceptions.WebDriverException:
                return False
            return value if text in value else False
        return self.wait(shows, timeout)

    def open_row_action(self, table: str, object_id: str,
                        action: str) -> None:
        element_id = f'{table}__row_{object_id}__action_{action}'
        buttons = self.driver.find_elements(By.ID, element_id)
        if buttons and buttons[0].is_displayed():
            buttons[0].click()
        else:
            self.row(table, object_id).find_element(
                By.CSS_SELECTOR, '.dropdown-toggle').click()
            self.visible(f'#{element_id}').click()

    def modal(self) -> WebElement:
        return self.visible('.modal-dialog form')

    def fill(self, form: WebElement, values: dict[str, object]) -> None:
        for name, value in values.items():
            field = form.find_element(By.NAME, name)
            if field.get_attribute('type') == 'checkbox':
                if field.is_selected() != bool(value):
                    field.click()
            elif field.tag_name == 'select':
                # Horizon's themable selects hide the <select> behind a
                # dropdown; set it and let Horizon's handlers react.
                self.driver.execute_script(
                    'arguments[0].value = arguments[1];'
                    '$(arguments[0]).trigger("change");', field, str(value))
            else:
                field.clear()
                field.send_keys(str(value))

    def submit(self, form: WebElement) -> None:
        form.find_element(By.CSS_SELECTOR, 'input[type=submit], '
                                           'button[type=submit]').click()

    def select_rows(self, table: str, object_ids: list[str]) -> None:
        for object_id in object_ids:
            checkbox = self.row(table, object_id).find_element(
                By.CSS_SELECTOR, 'input.table-row-multi-select')
            # The themed checkbox draws its box on an empty label; a
            # click on the input itself is what Horizon's handlers see.
            self.driver.execute_script('arguments[0].click();', checkbox)
