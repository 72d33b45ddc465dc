"""The demo page in a real browser: headless Chromium (Debian's ``chromium``, which
.ci/run installs) driven by Playwright against ``chunkwire demo``."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_stack import ROOT, start_demo
from playwright.sync_api import Page, expect, sync_playwright

pytestmark = pytest.mark.timeout(180)

# Hang guards only, generous for a loaded machine (Playwright's default is 5 s).
WAIT_MS = 60_000
expect.set_options(timeout=WAIT_MS)

ARTIFACTS = ROOT / "test-artifacts"

# Records, for each reply the page adds to a log, the stream's status shown then.
RECORD_ADDITIONS = """
(name) => {
  window.additions = window.additions || {};
  const seen = (window.additions[name] = []);
  const status = document.getElementById(name + "-status");
  new MutationObserver((records) => {
    for (const record of records) {
      for (const node of record.addedNodes) seen.push([node.textContent, status.textContent]);
    }
  }).observe(document.getElementById(name + "-log"), { childList: true });
}
"""


def chromium_path() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.fail("the browser test needs Debian's chromium (apt-get install chromium)")
    return path


@pytest.fixture(scope="module")
def demo_url() -> Iterator[str]:
    proc, url = start_demo()
    try:
        yield url
    finally:
        proc.stop()


@pytest.fixture
def page() -> Iterator[Page]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium_path(), headless=True, args=["--no-sandbox"]
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(WAIT_MS)
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on(
                "console",
                lambda message: errors.append(message.text) if message.type == "error" else None,
            )
            yield page
            assert errors == []
        finally:
            browser.close()


def items(page: Page, name: str) -> list[str]:
    return page.locator(f"#{name}-log li").all_text_contents()


def test_demo_page_drives_the_three_modes(page: Page, demo_url: str) -> None:
    page.goto(f"{demo_url}/plugins/demo/")
    expect(page).to_have_title("chunkwire demo")

    # bidirectional: each message answered at once, numbered by the server
    page.fill("#bidi-message", "hello")
    page.click("#bidi-send")
    expect(page.locator("#bidi-log li")).to_have_count(1)
    expect(page.locator("#bidi-status")).to_have_text("open")
    page.fill("#bidi-message", "wörld")
    page.click("#bidi-send")
    expect(page.locator("#bidi-log li")).to_have_count(2)
    assert items(page, "bidi") == ["#1 from server: hello", "#2 from server: wörld"]
    page.click("#bidi-close")
    expect(page.locator("#bidi-status")).to_have_text("closed 1000: done")

    # server stream: five ticks, each shown while the stream is still open
    page.evaluate(RECORD_ADDITIONS, "server")
    page.fill("#server-message", "tick")
    page.fill("#server-interval", "0.2")
    page.click("#server-start")
    expect(page.locator("#server-status")).to_have_text("closed 1000")
    expected = [f"#{i} from server: tick (echo {i}/5)" for i in range(1, 6)]
    assert items(page, "server") == expected
    assert page.evaluate("window.additions.server") == [[text, "open"] for text in expected]

    # client stream: three messages, then end
    page.fill("#client-message", "part")
    page.fill("#client-count", "3")
    page.click("#client-start")
    expect(page.locator("#client-status")).to_have_text("closed 1000")
    assert items(page, "client") == ["#3 from server: received 3 messages"]

    ARTIFACTS.mkdir(exist_ok=True)
    shot = Path(ARTIFACTS / "demo-page.png")
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 0
    print(f"screenshot: {shot}")


def test_demo_page_shows_the_token_stream_live(page: Page, demo_url: str) -> None:
    page.goto(f"{demo_url}/plugins/demo/")
    expect(page.locator("#tokens-status")).to_have_text("open")
    page.fill("#tokens-text", "alpha beta gamma")
    page.click("#tokens-generate")
    expect(page.locator("#tokens-status")).to_have_text("open, 3 tokens received")
    expect(page.locator("#tokens-out")).to_have_text("alpha beta gamma")
