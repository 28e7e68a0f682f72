"""The demo page (static/index.html + app.js, built on the SDK) in real Chromium.

Every step waits on something a person would see (a status, a log line, a list entry, a cursor),
never on a fixed sleep. People are separate browser contexts; a "hostile" peer is a plain
``websockets`` client of ``/ws`` that sends what no page of ours would.
"""

from __future__ import annotations

import asyncio
import json
import re
import urllib.parse
from typing import Any

import pytest
from playwright.async_api import Locator, Page, Route, expect

from tests.browser.conftest import ARTIFACTS, Stage, stage
from tests.conftest import Clients, http_get, make_token, test_config
from tornado_ws.config import Config
from tornado_ws.web.state import AppState

PHONE = {"width": 390, "height": 780}
XSS = '<img src=x onerror="window.__xss = 1">'
#: The same, without spaces or commas (the page splits session lists on them).
XSS_SESSION = "<img/src=x/onerror=window.__xss=1>"


@pytest.fixture
def config() -> Config:
    return test_config(demo=True, jwt_secret=None)


class Person:
    """One person's page, with its landmarks found as a reader finds them."""

    def __init__(self, name: str, page: Page) -> None:
        self.name = name
        self.page = page
        self.status = page.get_by_role("status")

    @classmethod
    async def arrive(
        cls, scene: Stage, name: str, base_url: str, *, viewport: dict[str, int] | None = None, mode: str = "demo mode"
    ) -> Person:
        page = await scene.page(name, **({"viewport": viewport} if viewport else {}))
        response = await page.goto(base_url)
        assert response is not None and response.ok
        csp = response.headers.get("content-security-policy", "")
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        await expect(page.get_by_role("note")).to_have_text(mode)
        return cls(name, page)

    async def join(self, sessions: str, *, org: str | None = "acme", token: str | None = None) -> None:
        page = self.page
        if org is not None:
            await page.get_by_label("Name").fill(self.name)
            await page.get_by_label("Organization").fill(org)
        await page.get_by_label("Sessions", exact=True).fill(sessions)
        if token is not None:
            await page.get_by_label("Token").fill(token)
        await page.get_by_role("button", name="Connect").click()

    def panel(self, session: str) -> Locator:
        return self.page.get_by_role("tabpanel", name=session, exact=True)

    def tab(self, session: str) -> Locator:
        # (a "/" escaped too: Playwright writes the pattern into a /.../ selector)
        return self.page.get_by_role("tab", name=re.compile("^" + re.escape(session).replace("/", r"\/")))

    def entry(self, session: str, text: str) -> Locator:
        """The log line (message or notice) of ``session`` containing ``text``."""
        return self.panel(session).get_by_role("list", name="Chat log").get_by_role("listitem").filter(has_text=text)

    def people(self, session: str) -> Locator:
        return self.panel(session).get_by_role("list", name="Participants")

    async def say(self, session: str, text: str) -> None:
        box = self.panel(session).get_by_label("Message", exact=True)
        await box.fill(text)
        await box.press("Enter")

    async def sockets(self) -> int:
        return int(await self.page.evaluate("window.__sockets.length"))

    async def no_markup_ran(self) -> None:
        assert await self.page.evaluate("window.__xss") is None
        await expect(self.page.locator("img")).to_have_count(0)


def connection_of(state: AppState, user_id: str) -> Any:
    (conn,) = [c for c in state.multiplexed if c.claims is not None and c.claims.user_id == user_id]
    return conn


# -- two people, two sessions, one connection each -------------------------------------------------


async def test_two_people_chat_type_point_and_recover_over_one_connection(chromium: str, port: int, app: Any) -> None:
    base = f"http://127.0.0.1:{port}/"
    async with stage(chromium, "demo") as scene:
        alice = await Person.arrive(scene, "Alice", base)
        bob = await Person.arrive(scene, "Bob", base)
        await alice.join("standup, random")
        await expect(alice.status).to_have_text("live")
        await bob.join("standup random")
        await expect(bob.status).to_have_text("live")

        # Two sessions in a tab, over one WebSocket; the page says who is where.
        await expect(alice.page.get_by_role("tab")).to_have_text(["standup", "random"])
        await expect(alice.people("standup")).to_contain_text("Bob")
        await expect(alice.entry("standup", "Bob joined")).to_be_visible()
        await expect(alice.panel("standup").get_by_role("heading", name="People")).to_have_text("People 2")
        assert await alice.sockets() == 1 and await bob.sockets() == 1

        # Messages both ways, with sender, time and seq.
        await alice.say("standup", "hello from alice")
        line = bob.entry("standup", "hello from alice")
        await expect(line).to_contain_text("Alice")
        await expect(line).to_contain_text("#1")
        await expect(line.locator("time")).to_have_text(re.compile(r"\d{1,2}:\d{2}:\d{2}"))
        await bob.say("standup", "hi alice")
        await expect(alice.entry("standup", "hi alice")).to_contain_text("#2")

        # The other session: its own seq, and an unread badge where alice is not looking.
        await bob.tab("random").click()
        await bob.say("random", "over here")
        await expect(alice.tab("random")).to_contain_text("1")
        await alice.tab("random").click()
        await expect(alice.entry("random", "over here")).to_contain_text("#1")
        await expect(alice.tab("random")).to_have_text("random")
        await alice.tab("standup").click()
        await bob.tab("standup").click()

        # Typing (presence state): bob types, alice sees it; he sends, it goes.
        await bob.panel("standup").get_by_label("Message", exact=True).fill("I am typ")
        await expect(alice.panel("standup").locator(".typing")).to_have_text("Bob is typing…")
        await expect(alice.people("standup").get_by_role("listitem").filter(has_text="Bob")).to_contain_text("typing…")
        await bob.panel("standup").get_by_label("Message", exact=True).press("Enter")
        await expect(alice.panel("standup").locator(".typing")).to_have_text("")

        # A live cursor (keyed signals) and a reaction (a keyless one).
        conversation = bob.panel("standup").locator(".conversation")
        box = await conversation.bounding_box()
        assert box is not None
        await bob.page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.4)
        await bob.page.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + box["height"] * 0.5)
        cursor = alice.panel("standup").locator(".cursor")
        await expect(cursor).to_have_text("Bob")
        # ...where bob's pointer is, as a share of the conversation's size (the pages differ).
        await alice.page.wait_for_function(
            """() => {
                const cursor = document.querySelector(".cursor");
                const at = cursor.getBoundingClientRect(), area = cursor.parentElement.getBoundingClientRect();
                const near = (value, goal) => Math.abs(value - goal) < 0.03;
                return cursor.getAnimations().length === 0
                    && near((at.x - area.x) / area.width, 0.6) && near((at.y - area.y) / area.height, 0.5);
            }"""
        )
        await bob.panel("standup").get_by_role("button", name="React 🎉").click()
        await expect(alice.panel("standup").locator(".bubble")).to_contain_text("🎉Bob")

        # A network drop: the server aborts alice's TCP connection. Her next token fetch is held
        # until bob has spoken and she has typed, so what she misses and queues is certain.
        gate = asyncio.Event()

        async def hold(route: Route) -> None:
            await gate.wait()
            await route.continue_()

        await alice.page.context.route(re.compile(r"/demo/token\?"), hold)
        connection_of(app.settings["state"], "alice").abort()
        await expect(alice.entry("standup", "Connection lost (1006 connection lost)")).to_be_visible()
        await expect(alice.status).to_contain_text("reconnecting")
        await bob.say("standup", "did you drop, alice?")
        await expect(bob.entry("standup", "did you drop, alice?")).to_contain_text("#4")
        await alice.say("standup", "typed while offline")
        await expect(alice.entry("standup", "typed while offline")).to_contain_text("queued")
        gate.set()
        await expect(alice.status).to_have_text("live")
        await expect(alice.entry("standup", "Back: recovered 1 missed message")).to_be_visible()
        await expect(alice.entry("standup", "did you drop, alice?")).to_contain_text("#4")
        await expect(bob.entry("standup", "typed while offline")).to_contain_text("#5")
        await expect(alice.entry("standup", "typed while offline")).to_have_count(1)
        await expect(alice.entry("standup", "typed while offline")).to_contain_text("#5")
        assert await alice.sockets() == 2  # one at a time: the first, then the one after the drop
        await alice.tab("random").click()  # the other session lived through the same drop
        await expect(alice.entry("random", "Connection lost (1006 connection lost)")).to_be_visible()
        await expect(alice.entry("random", "Back: recovered 0 missed messages")).to_be_visible()

        # bob closes his tab: alice sees him leave, in both sessions.
        await bob.page.close()
        await expect(alice.entry("random", "Bob left")).to_be_visible()
        await alice.tab("standup").click()
        await expect(alice.entry("standup", "Bob left")).to_be_visible()
        await expect(alice.panel("standup").get_by_role("heading", name="People")).to_have_text("People 1")
        ARTIFACTS.mkdir(exist_ok=True)
        await alice.page.screenshot(path=ARTIFACTS / "demo-page.png")
        scene.assert_no_problems()


# -- hostile input ---------------------------------------------------------------------------------


async def test_markup_in_every_user_field_shows_as_text(chromium: str, port: int, clients: Clients) -> None:
    """A name claim, a message, a presence state, signal data and a session id, all markup."""
    base = f"http://127.0.0.1:{port}/"
    query = urllib.parse.urlencode({"user": "eve", "org": "acme", "name": XSS})
    status, body = await asyncio.to_thread(http_get, port, f"/demo/token?{query}")
    assert status == 200
    eve = await clients.mux(token=json.loads(body)["token"])
    await eve.join("lobby")
    async with stage(chromium, "xss") as scene:
        alice = await Person.arrive(scene, "alice", base)
        mallory = await Person.arrive(scene, XSS, base)
        await alice.join("lobby")
        await mallory.join("lobby")
        await expect(alice.people("lobby")).to_contain_text(XSS)  # the name claim

        await mallory.say("lobby", XSS)  # the message text
        line = alice.entry("lobby", XSS).filter(has=alice.page.locator(".msg-body"))
        await expect(line.locator(".text")).to_have_text(XSS)
        await expect(line.locator(".who")).to_have_text(XSS)

        # Presence state, signal data and a signal key from a client that is not our page (the last
        # cursor is a good one: a newer signal with the same key may replace an unsent one).
        await eve.send({"type": "presence", "session": "lobby", "state": {"typing": True, "status": XSS}})
        for data, key in (
            ({"x": XSS}, "cursor"),
            ({"reaction": XSS}, None),
            (XSS, XSS),
            ({"x": 0.5, "y": 0.5}, "cursor"),
        ):
            await eve.send({"type": "signal", "session": "lobby", "data": data, **({"key": key} if key else {})})
        eve_row = alice.people("lobby").get_by_role("listitem").filter(has_text=XSS).filter(has_text="typing")
        await expect(eve_row.locator(".person-status")).to_have_text(XSS)
        await expect(alice.panel("lobby").locator(".typing")).to_have_text(f"{XSS} is typing…")
        await expect(alice.panel("lobby").locator(".cursor-label")).to_have_text(XSS)
        await expect(alice.panel("lobby").locator(".bubble-reaction")).to_have_text(XSS[:40])

        # A session id: refused by the server (1008), and shown, with the reason, as text.
        await alice.page.get_by_label("Join another session").fill(XSS_SESSION)
        await alice.page.get_by_role("button", name="Join", exact=True).click()
        await expect(alice.tab(XSS_SESSION)).to_have_text(XSS_SESSION)
        await alice.tab(XSS_SESSION).click()
        await expect(alice.entry(XSS_SESSION, "Refused: 1008 policy violation: invalid session id")).to_be_visible()

        for person in (alice, mallory):
            await person.no_markup_ran()
        scene.assert_no_problems()


# -- a phone --------------------------------------------------------------------------------------


async def test_phone_width_fits_without_sideways_scrolling(chromium: str, port: int) -> None:
    async with stage(chromium, "phone") as scene:
        zoe = await Person.arrive(scene, "Zoë Z", f"http://127.0.0.1:{port}/#standup,random", viewport=PHONE)
        await expect(zoe.page.get_by_label("Sessions", exact=True)).to_have_value("standup,random")  # from the link
        await zoe.join("standup,random")
        await expect(zoe.status).to_have_text("live")
        await expect(zoe.people("standup")).to_contain_text("Zoë Z")
        await zoe.say("standup", "a long line " * 30)
        await expect(zoe.entry("standup", "a long line")).to_contain_text("#1")
        assert await zoe.page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        controls = {
            "message box": zoe.panel("standup").get_by_label("Message", exact=True),
            "Send": zoe.panel("standup").get_by_role("button", name="Send"),
            "Leave": zoe.panel("standup").get_by_role("button", name="Leave"),
            "random tab": zoe.tab("random"),
            "Disconnect": zoe.page.get_by_role("button", name="Disconnect"),
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

    async def test_a_pasted_token_joins_and_a_refused_one_stops(self, chromium: str, port: int) -> None:
        base = f"http://127.0.0.1:{port}/"
        async with stage(chromium, "token") as scene:
            carol = await Person.arrive(scene, "carol", base, mode="token mode")
            mallory = await Person.arrive(scene, "mallory", base, mode="token mode")
            await expect(carol.page.get_by_label("Name")).to_be_hidden()
            await carol.join("standup", org=None, token=make_token("carol", "acme", name="Carol"))
            await mallory.join("standup", org=None, token="not-a-jwt")
            await expect(carol.status).to_have_text("live")
            await expect(carol.people("standup")).to_contain_text("Carol")
            await expect(carol.page.get_by_text("carol · acme")).to_be_visible()
            await carol.say("standup", "token mode works")
            await expect(carol.entry("standup", "token mode works")).to_contain_text("Carol")

            await expect(mallory.status).to_have_text("closed · 1008 policy violation: malformed token")
            await expect(mallory.entry("standup", "Disconnected: 1008 policy violation")).to_contain_text(
                "Not reconnecting"
            )
            await expect(mallory.page.get_by_role("button", name="Back")).to_be_visible()
            assert await mallory.sockets() == 1
            scene.assert_no_problems(allowed=PROBE_404 + "|WebSocket connection to .* failed")
