"""static/tornado-ws.js in real Chromium against the real server: the guarantees of issue #18.

Each test opens a harness page (tests/browser/conftest.py) that imports the SDK from the hub, at
the server's origin or at a cutting proxy's (tests/faultproxy.py) in front of it. The other side
of each session is a plain ``websockets`` client of ``/ws`` (tests/conftest.py ``MuxClient``), so
the SDK is checked against the server and an independent client, never against itself.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from tornado.httpclient import AsyncHTTPClient
from tornado.ioloop import IOLoop

from tests.browser.conftest import Harness, stage
from tests.conftest import ROOT, Clients, MuxClient, make_token, test_config
from tests.faultproxy import FaultProxy
from tornado_ws.config import Config
from tornado_ws.web.state import AppState


@pytest.fixture
def config() -> Config:
    # History long enough for every replay of the cut test (it publishes 300 messages); a session
    # cap the tests can reach.
    return test_config(history_size=1000, max_sessions_per_connection=3)


@pytest.fixture
def proxy(port: int, io_loop: IOLoop) -> Iterator[FaultProxy]:
    fp = io_loop.run_sync(FaultProxy(port).start)
    yield fp
    io_loop.run_sync(fp.stop)


#: What Chromium logs while the proxy refuses or cuts (resets, refused or unconnected sockets):
#: the SDK's retries, not problems.
NETWORK_DOWN = (
    r"WebSocket connection to .* failed"
    r"|net::ERR_(CONNECTION_RESET|EMPTY_RESPONSE|SOCKET_NOT_CONNECTED|CONNECTION_REFUSED|CONNECTION_CLOSED)"
)


def sockets_of(app_state: AppState, user_id: str) -> int:
    """The server's count of ``/ws`` connections of ``user_id``."""
    return sum(1 for conn in app_state.multiplexed if conn.claims is not None and conn.claims.user_id == user_id)


async def frames_until(
    client: MuxClient, session: str, done: Callable[[list[dict[str, Any]]], bool]
) -> list[dict[str, Any]]:
    """The frames of ``session`` the client reads until ``done(frames)``."""
    frames: list[dict[str, Any]] = []
    while not frames or not done(frames):
        frame = await client.recv()
        if frame.get("session_id") == session:
            frames.append(frame)
    return frames


async def recv_messages(client: MuxClient, session: str, count: int) -> list[dict[str, Any]]:
    return [await client.recv_in(session, "message") for _ in range(count)]


# -- one socket, many sessions --------------------------------------------------------------


async def test_several_sessions_over_one_socket(chromium: str, port: int, app: Any, clients: Clients) -> None:
    bob = await clients.mux("bob", name="Bob")
    for session in ("standup", "random", "alerts"):
        await bob.join(session)
    async with stage(chromium, "sdk-mux") as scene:
        page = await Harness.open(scene, "alice", f"http://127.0.0.1:{port}")

        # The module exports what its declarations say, and the heartbeat's defaults notice a
        # dead line within 15 s.
        exports = await page.run("() => Object.keys(tw).sort()")
        declared = re.findall(
            r"^export declare (?:class|function|const) (\w+)", (ROOT / "static/tornado-ws.d.ts").read_text(), re.M
        )
        assert exports == sorted(declared)
        assert await page.run("() => tw.DEFAULTS.pingInterval + tw.DEFAULTS.pingTimeout") <= 15_000

        await page.run("""() => {
            window.conn = tw.connect(location.origin, { token: tokenFor("sub=alice&name=Alice") });
            window.seen = {};
            for (const session of ["standup", "random", "alerts"]) seen[session] = record(conn.join(session));
        }""")
        await page.until("Object.values(seen).every((s) => s.room.state === 'joined')")
        assert await page.run("() => [conn.state, conn.connected.user_id, conn.attempts]") == ["open", "alice", 1]
        for session in ("standup", "random", "alerts"):
            assert (await bob.recv_in(session, "user_joined"))["user_id"] == "alice"

        # publish resolves with the ack's seq; every session has its own stream.
        seqs = await page.run("""() => Promise.all(["standup", "random", "alerts", "standup"].map(
            (session, i) => seen[session].room.publish({ text: `hello ${session} ${i}` })))""")
        assert seqs == [1, 1, 1, 2]
        got = await recv_messages(bob, "standup", 2)
        assert [(m["seq"], m["data"]["text"], m["user_id"], m["name"]) for m in got] == [
            (1, "hello standup 0", "alice", "Alice"),
            (2, "hello standup 3", "alice", "Alice"),
        ]
        await bob.publish_in("random", {"text": "from bob"})
        await page.until("seen.random.seqs.includes(2)")
        assert await page.run("() => seen.alerts.seqs") == [1]
        frames = await page.run("() => Object.entries(seen).map(([s, r]) => r.frames.every((f) => f.session_id === s))")
        assert frames == [True, True, True]

        # Presence state both ways, in the roster; a keyed signal both ways (not to the sender).
        await page.run("() => seen.standup.room.setPresence({ typing: true })")  # resolves on the echo
        state = await bob.recv_in("standup", "presence_state")
        assert (state["user_id"], state["state"]) == ("alice", {"typing": True})
        # A burst is coalesced: one presence frame on its way at a time, the latest state wins.
        await page.run("() => Promise.all(Array.from({ length: 30 }, (_, n) => seen.standup.room.setPresence({ n })))")
        while (await bob.recv_in("standup", "presence_state"))["state"] != {"n": 29}:
            pass
        frames = await page.run("() => window.__sent.filter((f) => f.type === 'presence').map((f) => f.state)")
        assert frames == [{"typing": True}, {"n": 0}, {"n": 29}]
        # A refusal rejects, and the state stays the one before.
        refusal = await page.run(
            "() => seen.standup.room.setPresence({ big: 'x'.repeat(2000) }).catch((err) => [err.name, err.code])"
        )
        assert refusal == ["PresenceError", "state_too_large"]
        assert await page.run("() => seen.standup.room.presence") == {"n": 29}
        await bob.send({"type": "presence", "session": "random", "state": {"typing": True}})
        roster = await page.until(
            "seen.random.room.participants.find((p) => p.user_id === 'bob' && p.state && p.state.typing)"
        )
        assert roster == {"user_id": "bob", "name": "Bob", "state": {"typing": True}}
        assert await page.run("() => seen.alerts.room.signal({ x: 0.25, y: 0.5 }, { key: 'cursor' })") is True
        signal = await bob.recv_in("alerts", "signal")
        assert (signal["user_id"], signal["key"], signal["data"]) == ("alice", "cursor", {"x": 0.25, "y": 0.5})
        await bob.send({"type": "signal", "session": "alerts", "key": "cursor", "data": {"x": 1, "y": 0}})
        await page.until("seen.alerts.frames.some((f) => f.type === 'signal' && f.user_id === 'bob')")

        # leave(): the others see user_left; the session can be joined again on the same socket.
        await page.run("() => seen.alerts.room.leave()")
        assert (await bob.recv_in("alerts", "user_left"))["user_id"] == "alice"
        assert await page.run("() => [seen.alerts.room.state, conn.rooms.has('alerts')]") == ["closed", False]
        await page.run("() => { seen.again = record(conn.join('alerts')); }")
        await page.until("seen.again.room.state === 'joined'")

        # One WebSocket in the page, one /ws connection of alice's on the server.
        assert await page.run("() => window.__sockets.length") == 1
        assert sockets_of(app.settings["state"], "alice") == 1
        scene.assert_no_problems()


# -- resume through cuts ------------------------------------------------------------------------


async def test_cuts_mid_stream_lose_nothing_and_repeat_nothing(
    chromium: str, proxy: FaultProxy, clients: Clients
) -> None:
    total = 300
    publisher = await clients.mux("bob")
    await publisher.join("stream")
    async with stage(chromium, "sdk-cut") as scene:
        page = await Harness.open(scene, "alice", f"http://127.0.0.1:{proxy.port}")
        await page.run("""() => {
            window.conn = tw.connect(location.origin, { token: tokenFor("sub=alice"), backoffBase: 50 });
            window.seen = record(conn.join("stream"));
        }""")
        await page.until("seen.room.state === 'joined'")

        async def publish_all() -> None:
            for i in range(total):
                await publisher.publish_in("stream", {"i": i})
                await asyncio.sleep(0.003)  # a steady stream, so the cuts fall in the middle of it

        sending = asyncio.ensure_future(publish_all())
        try:
            for after in (60, 160):
                await page.until(f"seen.seqs.length >= {after}")
                assert proxy.cut() > 0
            await sending
        finally:
            sending.cancel()
        await page.until(f"seen.seqs.length >= {total}")
        seqs = await page.run("() => seen.seqs")
        assert seqs == list(range(1, total + 1))
        data = await page.run("() => seen.frames.filter((f) => f.type === 'message').map((f) => f.data.i)")
        assert data == list(range(total))
        welcomes = await page.run("() => seen.frames.filter((f) => f.type === 'welcome').map((f) => f.recovered)")
        assert welcomes == [False, True, True]  # the first join, then two resumes
        assert await page.run("() => [conn.attempts, window.__sockets.length, conn.state]") == [3, 3, "open"]
        scene.assert_no_problems(allowed=NETWORK_DOWN)


async def test_publish_while_down_resolves_after_the_reconnect_once_for_everyone(
    chromium: str, proxy: FaultProxy, clients: Clients
) -> None:
    bob = await clients.mux("bob")
    await bob.join("doc")
    async with stage(chromium, "sdk-down") as scene:
        page = await Harness.open(scene, "alice", f"http://127.0.0.1:{proxy.port}")
        await page.run("""() => {
            const fast = { backoffBase: 50, backoffCap: 200 };
            window.conn = tw.connect(location.origin, { token: tokenFor("sub=alice"), ...fast });
            window.seen = record(conn.join("doc"));
            window.acks = {};
        }""")
        await page.until("seen.room.state === 'joined'")
        await page.run("() => seen.room.setPresence({ typing: true })")

        # A: reaches the server, but its ack is held back, then the line is cut: unacknowledged.
        proxy.hold_replies()
        await page.run("() => { seen.room.publish({ text: 'A' }).then((seq) => { acks.A = seq; }); }")
        (first,) = [
            f for f in await frames_until(bob, "doc", lambda fs: fs[-1]["type"] == "message") if f["type"] == "message"
        ]
        assert first["data"] == {"text": "A"}
        proxy.refusing = True
        proxy.cut()
        proxy.resume()
        await page.until("conn.state === 'reconnecting'")

        # B: published while there is no connection at all.
        await page.run("() => { seen.room.publish({ text: 'B' }).then((seq) => { acks.B = seq; }); }")
        assert await page.run("() => [seen.room.unacked, seen.room.state, acks.A]") == [2, "joining", None]
        proxy.refusing = False
        await page.until("acks.A !== undefined && acks.B !== undefined")

        # Bob sees alice leave and come back with her presence state (kept and sent again), and B once.
        def back(frames: list[dict[str, Any]]) -> bool:
            kinds = [(f["type"], f.get("user_id")) for f in frames]
            if ("user_joined", "alice") not in kinds:
                return False
            since = kinds[kinds.index(("user_joined", "alice")) :]
            return ("message", "alice") in since and ("presence_state", "alice") in since

        later = await frames_until(bob, "doc", back)
        (second,) = [f for f in later if f["type"] == "message"]
        assert second["data"] == {"text": "B"}
        assert [f["state"] for f in later if f["type"] == "presence_state"][-1] == {"typing": True}
        acks = await page.run("() => acks")
        assert acks == {"A": first["seq"], "B": second["seq"]}

        # A went out twice with the same id; the server applied it once (a duplicate ack).
        sent = await page.run("() => window.__sent.filter((f) => f.type === 'message').map((f) => [f.data.text, f.id])")
        assert [text for text, _ in sent] == ["A", "A", "B"]
        assert sent[0][1] == sent[1][1] != sent[2][1]
        await bob.assert_silent()  # nothing more: A was not broadcast a second time
        texts = await page.run("() => seen.frames.filter((f) => f.type === 'message').map((f) => f.data.text)")
        assert texts == ["A", "B"]
        scene.assert_no_problems(allowed=NETWORK_DOWN)


# -- tokens and terminal codes -------------------------------------------------------------------


async def test_token_refresh_before_expiry_keeps_the_connection(chromium: str, port: int, clients: Clients) -> None:
    bob = await clients.mux("bob")
    await bob.join("live")
    async with stage(chromium, "sdk-refresh") as scene:
        page = await Harness.open(scene, "alice", f"http://127.0.0.1:{port}")
        # Tokens of two seconds: the connection must outlive its first token by refreshing it.
        await page.run("""() => {
            window.conn = tw.connect(location.origin, { token: tokenFor("sub=alice&ttl=2") });
            window.states = [];
            window.refreshed = [];
            conn.on("state", (event) => states.push(event.state));
            conn.on("connected", (frame) => { window.firstExp = frame.expires_at; });
            conn.on("refreshed", (frame) => refreshed.push(frame.expires_at));
            window.seen = record(conn.join("live"));
        }""")
        await page.until("refreshed.length >= 2 && Date.now() / 1000 > firstExp + 0.5", timeout=8_000)
        seq = await page.run("() => seen.room.publish('still here')")
        assert (await bob.recv_in("live", "message"))["seq"] == seq
        assert await page.run("() => [states, conn.attempts, window.__sockets.length]") == [["open"], 1, 1]
        expiries = await page.run("() => [firstExp, ...refreshed]")
        assert expiries == sorted(expiries) and len(set(expiries)) >= 2
        assert page.tokens["alice"] >= 3  # the connect, and one per refresh
        scene.assert_no_problems()


async def test_terminal_codes_stop_retrying_and_the_others_retry(chromium: str, port: int, clients: Clients) -> None:
    """A kick (left 4003) ends its room for good, a refused token (1008) its connection; a room
    over the session cap (left 1013) and a token callable that failed once are retried."""
    bob = await clients.mux("bob")
    await bob.join("standup")
    async with stage(chromium, "sdk-kick") as scene:
        page = await Harness.open(scene, "alice", f"http://127.0.0.1:{port}")
        await page.run("""() => {
            const fast = { backoffBase: 10, backoffCap: 20 };  // a retry, if any, would come at once
            window.conn = tw.connect(location.origin, { token: tokenFor("sub=alice"), ...fast });
            window.standup = record(conn.join("standup"));
            window.other = record(conn.join("other"));
            window.extra = record(conn.join("extra"));
            window.bad = tw.connect(location.origin, { token: "not-a-jwt", ...fast });
            window.badStates = [];
            bad.on("state", (event) => badStates.push(event));
            window.badRoom = record(bad.join("standup"));
            let calls = 0;
            const flakyToken = async () => {
                if (calls++ === 0) throw new Error("auth service down");
                return tokenFor("sub=dave")();
            };
            window.flaky = tw.connect(location.origin, { token: flakyToken, ...fast });
            window.flakyStates = [];
            flaky.on("state", (event) => flakyStates.push(event));
        }""")
        await page.until("[standup, other, extra].every((s) => s.room.state === 'joined')")

        # A fourth session is one over --max-sessions-per-connection (3 here): left 1013, rejoined.
        await page.run("() => { window.fourth = record(conn.join('fourth')); }")
        over = await page.until("fourth.states.find((e) => e.code === 1013)")
        assert over == {"state": "joining", "code": 1013, "reason": "too many sessions on this connection"}

        # A kick (HTTP DELETE, 4003) ends that room only, for good; the socket and the others stay,
        # and the place it frees lets the fourth session in.
        admin = make_token("ops", "acme", roles=["admin"])
        response = await AsyncHTTPClient().fetch(
            f"http://127.0.0.1:{port}/api/sessions/standup/users/alice",
            method="DELETE",
            headers={"Authorization": f"Bearer {admin}"},
        )
        assert response.code == 200
        closed = await page.until("standup.states.find((e) => e.state === 'closed')")
        assert closed == {"state": "closed", "code": 4003, "reason": "kicked"}
        assert (await bob.recv_in("standup", "user_left"))["user_id"] == "alice"
        await page.until("fourth.room.state === 'joined'")
        assert await page.run("() => other.room.publish('after the kick')") == 1
        await page.run(
            "() => standup.room.publish('too late').catch((err) => { window.refusal = [err.name, err.code]; })"
        )
        assert await page.until("window.refusal") == ["ClosedError", 4003]

        # The bad token: closed with 1008 and its reason, after one attempt.
        closed = await page.until("badStates.find((e) => e.state === 'closed')")
        assert (closed["code"], closed["reason"]) == (1008, "malformed token")
        states = await page.run("() => [bad.state, badRoom.room.state, badRoom.room.closed.code]")
        assert states == ["closed", "closed", 1008]

        # The token callable that failed once: a failed attempt, then a connection.
        await page.until("flaky.state === 'open'")
        failed = await page.run("() => flakyStates[0]")
        assert (failed["state"], failed["reason"]) == ("reconnecting", "no token: auth service down")

        # No retry of the kicked room or the refused connection, over ten times the longest
        # backoff either could have waited.
        with pytest.raises(Exception, match="Timeout"):
            await page.until(
                "window.__sent.filter((f) => f.type === 'join' && f.session === 'standup').length > 1"
                " || bad.attempts > 1 || window.__sockets.length > 3",
                timeout=200,
            )
        assert await page.run("() => [conn.state, [...conn.rooms.keys()].sort()]") == [
            "open",
            ["extra", "fourth", "other"],
        ]
        scene.assert_no_problems(allowed=NETWORK_DOWN)


# -- dead lines and the browser's network events ----------------------------------------------------


async def test_a_dead_line_is_noticed_by_ping_and_online_skips_the_backoff(
    chromium: str, proxy: FaultProxy, clients: Clients
) -> None:
    bob = await clients.mux("bob")
    await bob.join("doc")
    async with stage(chromium, "sdk-dead") as scene:
        page = await Harness.open(scene, "alice", f"http://127.0.0.1:{proxy.port}")
        await page.run("""() => {
            const quick = { pingInterval: 300, pingTimeout: 300, connectTimeout: 500 };
            Object.assign(quick, { backoffBase: 50, backoffCap: 100 });
            window.conn = tw.connect(location.origin, { token: tokenFor("sub=alice"), ...quick });
            window.states = [];
            conn.on("state", (event) => states.push(event));
            window.seen = record(conn.join("doc"));
        }""")
        await page.until("seen.room.state === 'joined'")

        # The line goes silent (bytes held, no FIN, no RST): only the SDK's own ping notices.
        proxy.stall()
        await bob.publish_in("doc", {"text": "during the stall"})
        dead = await page.until("states.find((e) => e.state === 'reconnecting')", timeout=3_000)
        assert (dead["code"], dead["reason"]) == (1006, "no answer to ping")
        proxy.cut()
        proxy.resume()
        await page.until("seen.seqs.includes(1) && seen.room.state === 'joined'")
        assert await page.run("() => seen.seqs") == [1]
        assert await page.run("() => seen.room.welcome.recovered") is True

        # Back online: a connection waiting a whole minute for its next attempt tries at once.
        await page.run("""() => {
            const patient = { backoffBase: 60000, backoffCap: 60000, random: () => 1 };
            window.slow = tw.connect(location.origin, { token: tokenFor("sub=carol"), ...patient });
            window.slowStates = [];
            slow.on("state", (event) => slowStates.push(event));
        }""")
        await page.until("slow.state === 'open'")
        proxy.refusing = True
        proxy.cut()
        waiting = await page.until("slowStates.find((e) => e.state === 'reconnecting')")
        assert waiting["delay"] == 60_000
        proxy.refusing = False
        await page.run("() => window.dispatchEvent(new Event('online'))")
        await page.until("slow.state === 'open'", timeout=3_000)
        assert await page.run("() => slow.attempts") == 2
        scene.assert_no_problems(allowed=NETWORK_DOWN)
