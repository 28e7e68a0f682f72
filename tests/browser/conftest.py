"""Real headless Chromium (Debian's, driven by Playwright) against the real server of the test.

Playwright's sync API cannot run inside the test's event loop, so the async API runs on the
io_loop like every other test. Every wait is on something the page shows or records (a status, a
frame, a counter), never a fixed sleep. Each page counts the WebSockets it opens and records every
frame it sends (``window.__sockets``, ``window.__sent``), so a test can say "one socket".
"""

from __future__ import annotations

import collections
import contextlib
import os
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
import tornado.web

from tests.conftest import ROOT, make_token

try:
    from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect
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
VIEWPORT = {"width": 1100, "height": 720}
#: Milliseconds any one wait in a page may take before the test fails.
WAIT_MS = 10_000

expect.set_options(timeout=WAIT_MS)

#: Runs before any script of the page: counts `new WebSocket` and records what each one sends.
COUNT_SOCKETS = """
(() => {
  const Native = window.WebSocket;
  window.__sockets = [];
  window.__sent = [];
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      window.__sockets.push(this);
    }
    send(data) {
      try { window.__sent.push(JSON.parse(data)); } catch { window.__sent.push(data); }
      return super.send(data);
    }
  };
})();
"""

#: A blank page that imports the SDK from the hub as any page would, with helpers for the tests.
HARNESS = """<!doctype html>
<meta charset="utf-8"><title>SDK harness</title><link rel="icon" href="data:,">
<script type="module">
import * as tw from "/static/tornado-ws.js";
window.tw = tw;
// A token callable: GET /token?<query> (answered by the test with a token it minted).
window.tokenFor = (query) => async () => (await fetch("/token?" + query)).text();
// Everything a room emits, for the test to read back.
window.record = (room) => {
  const seen = { room, frames: [], states: [], seqs: [] };
  room.on("*", (frame) => {
    seen.frames.push(frame);
    if (frame.type === "message") seen.seqs.push(frame.seq);
  });
  room.on("state", (event) => seen.states.push(event));
  return seen;
};
window.ready = true;
</script>
"""


@pytest.fixture
def chromium() -> str:
    """Debian's Chromium; Playwright never downloads a browser of its own here."""
    if not os.access(CHROMIUM, os.X_OK):
        message = f"{CHROMIUM} is missing: apt-get install -y chromium"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true and {message}")
        pytest.skip(message)
    return CHROMIUM


class Stage:
    """A browser and its pages; on failure every page is screenshotted for the CI artifacts."""

    def __init__(self, browser: Browser) -> None:
        self.browser = browser
        self.contexts: list[BrowserContext] = []
        self.pages: dict[str, Page] = {}
        self.problems: list[str] = []

    async def page(self, name: str, viewport: dict[str, int] = VIEWPORT) -> Page:
        """A page in a context of its own (its own storage: another person)."""
        context = await self.browser.new_context(viewport=viewport)  # type: ignore[arg-type]
        self.contexts.append(context)
        await context.add_init_script(COUNT_SOCKETS)
        page = await context.new_page()
        page.on("pageerror", lambda exc: self.problems.append(f"{name}: page error: {exc}"))
        page.on("console", lambda msg: msg.type == "error" and self.problems.append(f"{name}: {msg.text}"))
        self.pages[name] = page
        return page

    def assert_no_problems(self, allowed: str | None = None) -> None:
        problems = [p for p in self.problems if not (allowed and re.search(allowed, p))]
        assert not problems, problems

    async def snapshot_all(self, prefix: str) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        for name, page in self.pages.items():
            with contextlib.suppress(Exception):
                await page.screenshot(path=ARTIFACTS / f"{prefix}-{name}.png", full_page=True)


@contextlib.asynccontextmanager
async def stage(chromium: str, failure_prefix: str) -> AsyncIterator[Stage]:
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        scene = Stage(browser)
        try:
            yield scene
        except BaseException:
            await scene.snapshot_all(f"failed-{failure_prefix}")
            raise
        finally:
            for context in scene.contexts:
                await context.close()
            await browser.close()


#: Tokens ``GET /token`` handed out in this test, by ``sub``.
ISSUED: collections.Counter[str] = collections.Counter()


class HarnessPage(tornado.web.RequestHandler):
    """``GET /harness``: the page above, from the server itself, so Chromium treats it as the
    loopback page it is (a page Playwright made up may not reach a local server)."""

    def get(self) -> None:
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(HARNESS)


class TokenRoute(tornado.web.RequestHandler):
    """``GET /token?sub=S[&ttl=seconds][&name=N][&role=R...]``: a token of org ``acme``, as an
    application's own token endpoint would hand one to its page."""

    def get(self) -> None:
        sub = self.get_query_argument("sub")
        ISSUED[sub] += 1
        claims: dict[str, Any] = {}
        if (name := self.get_query_argument("name", None)) is not None:
            claims["name"] = name
        if roles := self.get_query_arguments("role"):
            claims["roles"] = roles
        self.set_header("Content-Type", "text/plain")
        self.set_header("Cache-Control", "no-store")
        self.finish(make_token(sub, "acme", ttl=float(self.get_query_argument("ttl", "3600")), **claims))


@pytest.fixture
def app(app: tornado.web.Application) -> tornado.web.Application:
    """The hub's app plus the harness page and the token route."""
    ISSUED.clear()
    app.add_handlers(r".*", [(r"/harness", HarnessPage), (r"/token", TokenRoute)])
    return app


class Harness:
    """A page at ``origin`` (the server's, or a proxy's in front of it) running the SDK."""

    def __init__(self, page: Page, origin: str) -> None:
        self.page = page
        self.origin = origin
        #: Tokens handed out, by ``sub``.
        self.tokens = ISSUED

    @classmethod
    async def open(cls, scene: Stage, name: str, origin: str) -> Harness:
        harness = cls(await scene.page(name), origin)
        await harness.page.goto(f"{origin}/harness")
        await harness.page.wait_for_function("window.ready === true", timeout=WAIT_MS)
        return harness

    async def run(self, script: str, arg: Any = None) -> Any:
        """Evaluate ``script`` (a function expression) in the page."""
        return await self.page.evaluate(script, arg)

    async def until(self, condition: str, arg: Any = None, timeout: float = WAIT_MS) -> Any:
        """Wait until the JavaScript expression (or function) ``condition`` is truthy; return it."""
        handle = await self.page.wait_for_function(condition, arg=arg, timeout=timeout)
        return await handle.json_value()
