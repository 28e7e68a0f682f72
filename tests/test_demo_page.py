"""The demo page in a real browser: Playwright drives Debian's Chromium against the in-process server.

Every step waits on something a person would see (a status, a log line, a list
entry), never on a fixed sleep. Playwright's sync API cannot run inside the
test's event loop, so the async API runs on the io_loop like every other test.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.conftest import ROOT, make_token, test_config
from tornado_ws.config import Config
from tornado_ws.core.registry import Registry
from tornado_ws.web.connection import Connection

try:
    from playwright.async_api import Browser, BrowserContext, Page, Route, async_playwright, expect
except ImportError:  # pragma: no cover - only without the test extras
    if os.environ.get("CI", "").lower() == "true":
        raise
    pytest.skip("playwright is not installed: pip install -e '.[test]'", allow_module_level=True)

#: Debian's Chromium unless TORNADO_WS_CHROMIUM names another build (Playwright never downloads one).
CHROMIUM = os.environ.get("TORNADO_WS_CHROMIUM", "/usr/bin/chromium")
# Debian's Chromium, quiet: without these it floods the closed network with background requests.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = ROOT / "test-artifacts"
VIEWPORT = {"width": 1000, "height": 700}
PHONE = {"width": 390, "height": 780}
XSS = '<img src=x onerror="window.__xss = 1">'

expect.set_options(timeout=10_000)


@pytest.fixture
def config() -> Config:
    return test_config(demo=True, jwt_secret=None)


@pytest.fixture
def chromium() -> str:
    """Debian's Chromium; Playwright never downloads a browser of its own here."""
    if not os.access(CHROMIUM, os.X_OK):
        message = f"{CHROMIUM} is missing: apt-get install -y chromium"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true and {message}")
        pytest.skip(message)
    return CHROMIUM


class Person:
    """One browser context (one person) with the page's landmarks found as a reader finds them."""

    def __init__(self, name: str, context: BrowserContext, page: Page) -> None:
        self.name = name
        self.context = context
        self.page = page
        self.problems: list[str] = []
        page.on("pageerror", lambda exc: self.problems.append(f"page error: {exc}"))
        page.on("console", self._console)
        self.status = page.get_by_role("status")
        self.log = page.get_by_role("list", name="Chat log")
        self.participants = page.get_by_role("list", name="Participants")
        self.people_heading = page.get_by_role("heading", name="People")

    def _console(self, msg: Any) -> None:
        if msg.type == "error":
            self.problems.append(f"console error: {msg.text}")

    def entry(self, text: str) -> Any:
        """The log line (message or notice) containing ``text``."""
        return self.log.get_by_role("listitem").filter(has_text=text)

    async def join(self, session: str, *, org: str | None = None, token: str | None = None) -> None:
        page = self.page
        if org is not None:
            await page.get_by_label("Name").fill(self.name)
            await page.get_by_label("Organization").fill(org)
        await page.get_by_label("Session").fill(session)
        if token is not None:
            await page.get_by_label("Token").fill(token)
        await page.get_by_role("button", name="Connect").click()

    async def say(self, text: str) -> None:
        box = self.page.get_by_label("Message", exact=True)
        await box.fill(text)
        await box.press("Enter")


class Stage:
    """A browser and the people in it; on failure every page is screenshotted for the CI artifacts."""

    def __init__(self, browser: Browser, base_url: str) -> None:
        self.browser = browser
        self.base_url = base_url
        self.people: list[Person] = []

    async def person(self, name: str, viewport: dict[str, int] = VIEWPORT, mode: str = "demo mode") -> Person:
        context = await self.browser.new_context(viewport=viewport)  # type: ignore[arg-type]
        person = Person(name, context, await context.new_page())
        self.people.append(person)
        response = await person.page.goto(self.base_url)
        assert response is not None and response.ok
        csp = response.headers.get("content-security-policy", "")
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        await expect(person.page.get_by_role("note")).to_have_text(mode)
        return person

    def assert_no_problems(self, allowed: str | None = None) -> None:
        for person in self.people:
            problems = [p for p in person.problems if not (allowed and re.search(allowed, p))]
            assert not problems, f"{person.name}: {problems}"

    async def snapshot_all(self, prefix: str) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        for person in self.people:
            with contextlib.suppress(Exception):
                await person.page.screenshot(path=ARTIFACTS / f"{prefix}-{person.name}.png", full_page=True)


@contextlib.asynccontextmanager
async def stage(chromium: str, port: int, failure_prefix: str) -> AsyncIterator[Stage]:
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        scene = Stage(browser, f"http://127.0.0.1:{port}/")
        try:
            yield scene
        except BaseException:
            await scene.snapshot_all(f"failed-{failure_prefix}")
            raise
        finally:
            for person in scene.people:
                await person.context.close()
            await browser.close()


# -- the scenario of issue #4 -------------------------------------------------------------


async def test_two_orgs_chat_presence_escaping_and_reconnect(chromium: str, port: int, registry: Registry) -> None:
    async with stage(chromium, port, "scenario") as scene:
        alice = await scene.person("alice")
        bob = await scene.person("bob")
        eve = await scene.person("eve")

        # Three people join "standup"; eve's org is another tenant, so another session.
        await alice.join("standup", org="acme")
        await expect(alice.status).to_have_text("live")
        await bob.join("standup", org="acme")
        await expect(bob.status).to_have_text("live")
        await eve.join("standup", org="globex")
        await expect(eve.status).to_have_text("live")

        await expect(alice.participants).to_contain_text("bob")
        await expect(alice.people_heading).to_have_text("People 2")
        await expect(alice.entry("bob joined")).to_be_visible()
        await expect(eve.people_heading).to_have_text("People 1")
        await expect(eve.participants).not_to_contain_text("alice")

        # alice speaks: bob sees it with sender, time and seq; eve never does.
        await alice.say("hello from alice")
        line = bob.entry("hello from alice")
        await expect(line).to_contain_text("alice")
        await expect(line).to_contain_text("#1")
        await expect(line.locator("time")).to_have_text(re.compile(r"\d{1,2}:\d{2}:\d{2}"))
        await eve.say("eve here")
        # eve's own echo was written to her socket after anything misrouted from acme would have been.
        await expect(eve.entry("eve here")).to_be_visible()
        await expect(eve.log).not_to_contain_text("hello from alice")

        # bob's markup shows as text and runs nothing, on both sides.
        await bob.say(XSS)
        for person in (alice, bob):
            await expect(person.entry(XSS)).to_contain_text("#2")
            await expect(person.log.locator("img")).to_have_count(0)
            assert await person.page.evaluate("window.__xss") is None
        await expect(bob.log).not_to_contain_text("eve here")

        # A network drop: the server aborts alice's TCP connection. Her next token fetch is held
        # until bob has spoken, so the message she misses is certain, and then resumed.
        gate = asyncio.Event()

        async def hold(route: Route) -> None:
            await gate.wait()
            await route.continue_()

        await alice.context.route(re.compile(r"/demo/token\?"), hold)
        member = next(m for m in registry.members() if m.user_id == "alice")
        assert isinstance(member.peer, Connection)
        member.peer.abort()
        await expect(alice.entry("Disconnected: 1006 connection lost")).to_be_visible()
        await expect(alice.status).to_contain_text("reconnecting")
        await expect(alice.page.get_by_label("Message", exact=True)).to_be_disabled()
        await bob.say("did you drop, alice?")
        await expect(bob.entry("did you drop, alice?")).to_contain_text("#3")
        gate.set()
        await expect(alice.status).to_have_text("live")
        await expect(alice.entry("recovered 1 missed message")).to_be_visible()
        await expect(alice.entry("did you drop, alice?")).to_contain_text("#3")
        await expect(alice.people_heading).to_have_text("People 2")
        await alice.say("back again")
        await expect(bob.entry("back again")).to_contain_text("#4")

        # bob closes his tab: alice sees him leave.
        await bob.page.close()
        await expect(alice.entry("bob left")).to_be_visible()
        await expect(alice.participants).not_to_contain_text("bob")
        await expect(alice.people_heading).to_have_text("People 1")

        ARTIFACTS.mkdir(exist_ok=True)
        await alice.page.screenshot(path=ARTIFACTS / "demo-page.png", full_page=True)
        scene.assert_no_problems()


async def test_phone_width_fits_without_sideways_scrolling(chromium: str, port: int) -> None:
    async with stage(chromium, port, "phone") as scene:
        zoe = await scene.person("Zoë Z", viewport=PHONE)
        await zoe.join("lobby", org="acme")
        await expect(zoe.status).to_have_text("live")
        await expect(zoe.participants).to_contain_text("Zoë Z")
        await zoe.say("a long line " * 30)
        await expect(zoe.entry("a long line")).to_contain_text("#1")
        assert await zoe.page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        controls = {
            "message box": zoe.page.get_by_label("Message", exact=True),
            "Send": zoe.page.get_by_role("button", name="Send"),
            "Leave": zoe.page.get_by_role("button", name="Leave"),
        }
        for what, control in controls.items():
            box = await control.bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], what
        ARTIFACTS.mkdir(exist_ok=True)
        await zoe.page.screenshot(path=ARTIFACTS / "demo-page-phone.png", full_page=True)
        scene.assert_no_problems()


#: The page probes GET /demo/token to learn the mode; outside demo mode Chromium logs that 404.
PROBE_404 = r"status of 404 \(Not Found\)"


class TestWithoutDemoMode:
    """A server with a real secret: the page asks for a token instead of minting one."""

    @pytest.fixture
    def config(self) -> Config:
        return test_config()

    async def test_pasted_token_joins(self, chromium: str, port: int) -> None:
        async with stage(chromium, port, "token") as scene:
            carol = await scene.person("carol", mode="token mode")
            await expect(carol.page.get_by_label("Name")).to_be_hidden()
            await carol.join("standup", token=make_token("carol", "acme", name="Carol"))
            await expect(carol.status).to_have_text("live")
            await expect(carol.participants).to_contain_text("Carol")
            await expect(carol.page.get_by_text("in acme as carol")).to_be_visible()
            await carol.say("token mode works")
            await expect(carol.entry("token mode works")).to_contain_text("Carol")
            scene.assert_no_problems(allowed=PROBE_404)

    async def test_refused_token_shows_1008_and_does_not_retry(self, chromium: str, port: int) -> None:
        async with stage(chromium, port, "refused") as scene:
            mallory = await scene.person("mallory", mode="token mode")
            await mallory.join("standup", token="not-a-jwt")
            await expect(mallory.status).to_contain_text("closed · 1008 policy violation")
            await expect(mallory.entry("Not reconnecting")).to_be_visible()
            await expect(mallory.page.get_by_role("button", name="Back")).to_be_visible()
            scene.assert_no_problems(allowed=PROBE_404)
