"""Make docs/demo.png: the demo page as alice sees it, two sessions, bob typing and pointing.

    python -m tests.browser.demo_screenshot [PATH]

Starts ``python -m tornado_ws --demo`` on a free port, drives two Chromium pages through Playwright
(Debian's Chromium, as the tests do) and writes a 1280x800 screenshot of alice's. Not a test.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from playwright.async_api import Page, async_playwright

from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS
from tests.conftest import ROOT, ServerProcess

SIZE = {"width": 1280, "height": 800}


async def arrive(page: Page, base: str, name: str) -> None:
    await page.goto(base + "#standup,random")
    await page.get_by_role("note").filter(has_text="demo mode").wait_for()
    await page.get_by_label("Name").fill(name)
    await page.get_by_label("Organization").fill("acme")
    await page.get_by_role("button", name="Connect").click()
    await page.get_by_role("status").filter(has_text="live").wait_for()


async def say(page: Page, session: str, text: str) -> None:
    box = page.get_by_role("tabpanel", name=session).get_by_label("Message", exact=True)
    await box.fill(text)
    await box.press("Enter")


async def shoot(base: str, path: Path) -> None:
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        alice = await (await browser.new_context(viewport=SIZE)).new_page()  # type: ignore[arg-type]
        bob = await (await browser.new_context(viewport=SIZE)).new_page()  # type: ignore[arg-type]
        await arrive(alice, base, "Alice")
        await arrive(bob, base, "Bob Builder")
        await say(alice, "standup", "Morning! Standup in five?")
        await say(bob, "standup", "Yes, joining from the train")
        await say(alice, "standup", "Great, I'll share the board")
        await bob.get_by_role("tab", name="random").click()
        await say(bob, "random", "Anyone for lunch at 12:30?")
        await bob.get_by_role("tab", name="standup").click()
        await bob.get_by_label("Your status").fill("on the train")
        await bob.get_by_label("Your status").press("Tab")
        panel = bob.get_by_role("tabpanel", name="standup")
        await panel.get_by_label("Message", exact=True).fill("The release notes are")
        box = await panel.locator(".conversation").bounding_box()
        assert box is not None
        for share in (0.45, 0.52, 0.56):
            await bob.mouse.move(box["x"] + box["width"] * share, box["y"] + box["height"] * (share - 0.05))
        theirs = alice.get_by_role("tabpanel", name="standup")
        await theirs.locator(".cursor").wait_for()
        await theirs.get_by_text("Bob Builder is typing…").wait_for()
        await alice.wait_for_function("() => document.querySelector('.cursor').getAnimations().length === 0")
        await alice.screenshot(path=path)
        await browser.close()


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "demo.png"
    server = ServerProcess(["--demo"])
    try:
        asyncio.run(shoot(f"http://127.0.0.1:{server.port}/", path))
    finally:
        server.stop()
    print(path)


if __name__ == "__main__":
    main()
