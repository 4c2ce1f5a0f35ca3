"""The console in a real browser: Playwright for Python driving Debian's chromium (Playwright's
own browser download cannot work here) against the service the shared fixtures serve.

Without chromium or a CJK font the browser tests skip with one line saying what to install;
IKEPU_REQUIRE_BROWSER=1 (CI) turns that skip into a failure. `make test` as root installs both.
Every page a test opens fails it on a JavaScript console error, an uncaught exception or a
Content-Security-Policy violation (chromium reports those as console errors).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("IKEPU_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "console"
INSTALL_HINT = "browser tests need chromium and a CJK font: apt-get install chromium fonts-noto-cjk"


def _missing() -> str | None:
    if not Path(CHROMIUM).exists():
        return f"no chromium at {CHROMIUM}"
    if shutil.which("fc-list") is None:
        return "no fontconfig (fc-list)"
    fonts = subprocess.run(["fc-list", ":lang=zh"], capture_output=True, text=True).stdout
    if not fonts.strip():
        return "no CJK font"
    return None


@pytest.fixture(scope="session")
async def browser():
    missing = _missing()
    if missing:
        if os.environ.get("IKEPU_REQUIRE_BROWSER") == "1":
            pytest.fail(f"{missing}; {INSTALL_HINT}")
        pytest.skip(INSTALL_HINT)
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=CHROMIUM,
            # As root in a container, chromium runs only without its sandbox.
            args=["--no-sandbox", "--disable-dev-shm-usage"],
        )
        yield launched
        await launched.close()


class Problems(list):
    """What the page reported that a test must not see."""

    def check(self) -> None:
        assert not self, "the page reported errors:\n" + "\n".join(self)


@pytest.fixture
async def new_page(browser, base_url):
    """Pages at 1280 px in a fresh browser context (no cookies), Chinese, Asia/Shanghai; each
    collects its console errors and uncaught exceptions, checked when the test ends."""
    contexts, problems = [], Problems()

    async def open_page():
        context = await browser.new_context(
            base_url=base_url,
            viewport={"width": 1280, "height": 860},
            locale="zh-CN",
            timezone_id="Asia/Shanghai",
        )
        contexts.append(context)
        page = await context.new_page()

        def on_console(message) -> None:
            # A page answered 403 or 404 on purpose is reported as a failed load of the
            # document itself: the test asserts that status. Any other error counts.
            document = message.location.get("url") == page.url
            if message.type == "error" and not (document and "Failed to load" in message.text):
                problems.append(f"console {message.type}: {message.text}")

        page.on("console", on_console)
        # The stack's first frames name the script and line, which the message alone does not.
        page.on(
            "pageerror",
            lambda exc: problems.append(
                f"pageerror on {page.url}: {exc.message}\n"
                + "\n".join((exc.stack or "").splitlines()[1:6])
            ),
        )
        return page

    yield open_page
    for context in contexts:
        await context.close()
    problems.check()


@pytest.fixture
def shot():
    """Save a screenshot of the page (or of one element of it) under test-artifacts/console/
    for a reviewer."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    async def save(page, name: str, *, element=None) -> Path:
        path = ARTIFACTS / f"{name}.png"
        if element is not None:
            await element.scroll_into_view_if_needed()
            await element.screenshot(path=str(path))
        else:
            await page.screenshot(path=str(path), full_page=True)
        return path

    return save


@pytest.fixture
def sign_in():
    """Sign in through the login page's development form: the openid, then Enter."""

    async def submit(page, openid: str, *, expect_home: bool = True):
        await page.goto("/console/login")
        field = page.locator('input[name="openid"]')
        await field.fill(openid)
        await field.press("Enter")
        if expect_home:
            await page.wait_for_url("**/console/")
        else:
            await page.wait_for_load_state()
        return page

    return submit
