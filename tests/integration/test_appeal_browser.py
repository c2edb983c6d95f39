"""An appeal in a real browser (Debian's chromium): the reviewer of the decision under
appeal cannot claim it; another reviewer claims it, reads the appellant's statement and
the post's verdicts, and reverses it; the superseding verdict and the label are read back
from Kafka."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
import time

import httpx
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from modpipe.core.records import encode, first_verdict_id
from modpipe.review.appeals import appeal_verdict_id
from tests.conftest import MakeSettings
from tests.integration.dsa_support import (
    appeal,
    console_env,
    dsa_settings,
    produce,
    read_all,
    verdict,
)
from tests.integration.review_support import PASSWORD, add_users, free_port, wait_for_port
from tests.integration.test_appeals import build, instant
from tests.integration.test_review_browser import browser, pytestmark  # noqa: F401

TEXT = "Meet me at the station at noon."


async def test_a_reviewer_reverses_an_appeal_in_chromium(
    make_settings: MakeSettings,
    browser: WebDriver,  # noqa: F811 (the chromium fixture of the console's browser test)
) -> None:
    settings = dsa_settings(make_settings, review={"port": free_port()})
    first = verdict(
        "br-1", tier="human", model="human", reviewer="ann", verdict_id="f" * 32,
        supersedes=first_verdict_id("br-1"), categories=["violence"], scores={"violence": 0.8},
    )  # fmt: skip
    await produce(settings, settings.topics.verdicts, [(first.post_id, encode(first))])
    await build(settings)
    await add_users(settings, "ann", "bob")
    post = {"post_id": "br-1", "text": TEXT}
    await produce(
        settings, settings.topics.appeals, [("br-1", appeal("ab-1", "br-1", instant(), post=post))]
    )
    base = f"http://127.0.0.1:{settings.review.port}"
    wait = WebDriverWait(browser, 20)
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "modpipe", "review", "serve"],
            env=console_env(settings),
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        try:
            await wait_for_port(settings.review.port, proc, log)
            async with httpx.AsyncClient(base_url=base) as ann:
                r = await ann.post("/api/login", json={"username": "ann", "password": PASSWORD})
                ann.headers["X-CSRF-Token"] = r.json()["csrf_token"]
                deadline = time.monotonic() + 30
                while True:  # the intake queues the appeal
                    queues = (await ann.get("/api/queues")).json()["queues"]
                    if any(q["reason"] == "appeal" and q["depth"] == 1 for q in queues):
                        break
                    assert time.monotonic() < deadline, "the appeal was never queued"
                    await asyncio.sleep(0.3)
                # ann made the decision under appeal: nothing for her to claim.
                assert (await ann.post("/api/claim", json={"reason": "appeal"})).status_code == 204

            await asyncio.to_thread(browser.get, f"{base}/login")
            browser.find_element(By.ID, "username").send_keys("bob")
            browser.find_element(By.ID, "password").send_keys(PASSWORD)
            browser.find_element(By.ID, "sign-in").click()
            wait.until(lambda d: "Review queues" in d.page_source)
            browser.find_element(
                By.XPATH, "//input[@name='reason' and @value='appeal']/following-sibling::button"
            ).click()
            statement = wait.until(lambda d: d.find_element(By.ID, "appeal-statement"))
            assert statement.text.startswith("My post br-1 broke no rule")
            rows = browser.find_elements(By.CSS_SELECTOR, "#verdicts tbody tr")
            assert len(rows) == 1 and "ann" in rows[0].text and "block" in rows[0].text
            browser.find_element(By.ID, "reveal").click()
            assert browser.find_element(By.ID, "post-text").text == TEXT
            browser.find_element(By.ID, "reversed").click()
            wait.until(lambda d: d.current_url.startswith(f"{base}/?msg=decided"))
        finally:
            proc.kill()
            proc.wait(timeout=10)

    verdicts = [v for _, v in await read_all(settings, settings.topics.verdicts)]
    superseding = [v for v in verdicts if v.get("verdict_id") == appeal_verdict_id("ab-1")]
    assert len(superseding) == 1
    v = superseding[0]
    assert (v["action"], v["tier"], v["reviewer"], v["supersedes"], v["model"]) == (
        "allow", "human", "bob", "f" * 32, "appeal:reversed")  # fmt: skip
    labels = [lb for _, lb in await read_all(settings, settings.topics.labels)]
    assert [(lb["reason"], lb["action"], lb["reviewer"]) for lb in labels] == [
        ("appeal", "allow", "bob")]  # fmt: skip
    assert labels[0]["post"]["text"] == TEXT
