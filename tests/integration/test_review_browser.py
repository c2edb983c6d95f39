"""The console in a real browser: Debian's chromium, driven by chromedriver through selenium.

Log in, claim by keyboard, see the post blurred, reveal it, check that its markup is inert,
pick a category and block by keyboard, then read the human verdict and the label back
from Kafka. `MODPIPE_SCREENSHOT=docs/console-item.png` also saves the item page there
(the README's screenshot).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from tests.conftest import MakeSettings
from tests.integration.review_support import (
    PASSWORD,
    add_users,
    console_process,
    publish_items,
    read_topic,
    review_settings,
)

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
TEXT = (
    "People like you should be driven out of this town. "
    '<script>window.pwned = 1</script><img src=x onerror="window.pwned = 2">'
)

pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="needs Debian's chromium and chromium-driver (make browser installs them)",
)


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    profile = tempfile.mkdtemp(prefix="modpipe-chromium-")
    options = Options()
    options.binary_location = CHROMIUM or ""
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1280,860",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER or ""), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _key(driver: WebDriver, key: str) -> None:
    """A key press on the page body, as a reviewer's keyboard sends it."""
    driver.find_element(By.TAG_NAME, "body").send_keys(key)


async def test_a_reviewer_decides_by_keyboard_in_chromium(
    make_settings: MakeSettings, browser: WebDriver
) -> None:
    settings = review_settings(make_settings)
    await add_users(settings, "ann")
    await publish_items(
        settings,
        ["browser-1"],
        text=TEXT,
        author_id="u-4821",
        lang="en",
        created_at="2026-11-29T11:58:03Z",
    )
    wait = WebDriverWait(browser, 20)
    async with console_process(settings):
        base = f"http://127.0.0.1:{settings.review.port}"
        await asyncio.to_thread(browser.get, f"{base}/items/0123")
        assert browser.current_url == f"{base}/login"  # no session: the login page
        browser.find_element(By.ID, "username").send_keys("ann")
        browser.find_element(By.ID, "password").send_keys(PASSWORD)
        browser.find_element(By.ID, "sign-in").click()
        # The login page's title says "modpipe review" too: wait for the queues page itself.
        wait.until(lambda d: "Review queues" in d.page_source)
        deadline = time.monotonic() + 30  # the console's feeder queues the item
        while "/items/" not in browser.current_url:
            assert time.monotonic() < deadline, "nothing to claim"
            browser.get(f"{base}/")
            _key(browser, "c")  # claim the oldest item
            await asyncio.sleep(0.5)
        text = wait.until(ec.presence_of_element_located((By.ID, "post-text")))
        assert "blurred" in text.get_attribute("class")
        assert "blur" in text.value_of_css_property("filter")
        _key(browser, "r")  # reveal
        wait.until(lambda d: "blurred" not in text.get_attribute("class"))
        assert text.value_of_css_property("filter") == "none"
        assert text.text == TEXT  # the markup is shown as text ...
        assert text.find_elements(By.CSS_SELECTOR, "*") == []  # ... and made no elements
        assert browser.execute_script("return window.pwned === undefined")
        _key(browser, "1")  # the first category, harassment
        box = browser.find_element(By.CSS_SELECTOR, "input[name=categories][data-key='1']")
        assert box.is_selected() and box.get_attribute("value") == "harassment"
        shot = os.environ.get("MODPIPE_SCREENSHOT")
        if shot:
            Path(shot).parent.mkdir(parents=True, exist_ok=True)
            browser.save_screenshot(shot)
        _key(browser, "b")  # block
        wait.until(lambda d: d.current_url.startswith(f"{base}/?msg=decided"))
        assert "Decision recorded and published." in browser.page_source
        assert browser.execute_script("return window.pwned === undefined")

    verdicts = await read_topic(settings, settings.topics.verdicts, 1)
    labels = await read_topic(settings, settings.topics.labels, 1)
    assert [k for k, _ in verdicts] == [b"browser-1"] and [k for k, _ in labels] == [b"browser-1"]
    verdict, label = json.loads(verdicts[0][1]), json.loads(labels[0][1])
    assert (verdict["tier"], verdict["action"], verdict["categories"], verdict["reviewer"]) == (
        "human",
        "block",
        ["harassment"],
        "ann",
    )
    assert (label["action"], label["source"], label["reviewer"], label["reason"]) == (
        "block",
        "human",
        "ann",
        "no_provider",
    )
    assert label["post"]["text"] == TEXT and label["categories"] == ["harassment"]
