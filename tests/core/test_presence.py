"""Presence state, signals and big sessions in the I/O-free core: no sockets, no event loop.

The registry's ``schedule`` is driven by hand here (a list of due callbacks), so the coalescing
windows are proven without waiting for them.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.core.test_registry import ACME, member, peer
from tests.recording import Clock
from tornado_ws.core.presence import SUMMARY_USERS, Roster, Summary
from tornado_ws.core.registry import STATE_INTERVAL, Registry
from tornado_ws.core.server_messages import signal_frame


class Timers:
    """What the registry asked to run later: (delay, callback), run by the test."""

    def __init__(self) -> None:
        self.due: list[tuple[float, Callable[[], None]]] = []

    def __call__(self, delay: float, callback: Callable[[], None]) -> None:
        self.due.append((delay, callback))

    def run(self) -> list[float]:
        due, self.due = self.due, []
        for _, callback in due:
            callback()
        return [delay for delay, _ in due]


@pytest.fixture
def timers() -> Timers:
    return Timers()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def registry(clock: Clock, timers: Timers, **options: int) -> Registry:
    return Registry(history_size=5, history_ttl=60, clock=clock, schedule=timers, **options)


def of_type(frames: list[dict[str, object]], kind: str) -> list[dict[str, object]]:
    return [f for f in frames if f["type"] == kind]


def test_a_burst_of_states_is_one_frame_per_member_with_the_latest(clock: Clock, timers: Timers) -> None:
    hub = registry(clock, timers)
    alice, bob = member("alice"), member("bob")
    hub.join(alice)
    hub.join(bob)
    peer(bob).take()
    for n in range(10):
        assert hub.set_state(alice, {"n": n}, f'{{"n":{n}}}')
    assert of_type(peer(bob).frames, "presence_state") == []  # nothing before the flush
    assert timers.run() == [0.0]  # one flush for the whole burst, at once (none was sent before)
    expected = {"type": "presence_state", "session_id": "room", "user_id": "alice", "state": {"n": 9}}
    assert peer(bob).take() == [expected]
    assert of_type(peer(alice).take(), "presence_state") == [expected]  # the user's own connection too
    clock.now += 0.01
    hub.set_state(alice, {"n": 10}, '{"n":10}')
    assert timers.due[0][0] == pytest.approx(STATE_INTERVAL - 0.01)  # the window since the last flush


def test_a_users_state_is_its_newest_connections_and_the_welcome_shows_it(clock: Clock, timers: Timers) -> None:
    hub = registry(clock, timers)
    phone, laptop, bob = member("alice"), member("alice"), member("bob")
    for m in (phone, laptop, bob):
        hub.join(m)
    hub.set_state(phone, {"on": "phone"}, '{"on":"phone"}')
    hub.set_state(laptop, {"on": "laptop"}, '{"on":"laptop"}')
    timers.run()
    carol = member("carol")
    hub.join(carol)
    welcome = peer(carol).frames[0]
    assert welcome["participants"][0] == {"user_id": "alice", "state": {"on": "laptop"}}
    peer(bob).take()
    hub.leave(laptop)  # the phone's state is the user's again
    timers.run()
    assert of_type(peer(bob).take(), "presence_state")[-1]["state"] == {"on": "phone"}
    hub.set_state(phone, {"on": "phone", "typing": True}, '{"on":"phone","typing":true}')
    hub.leave(phone)  # its last connection: the waiting state goes with it, user_left says so
    timers.run()
    assert [f["type"] for f in peer(bob).take()] == ["user_left"]
    assert hub.presence(ACME)["participants"] == [{"user_id": "bob"}, {"user_id": "carol"}]


def test_a_state_of_a_member_that_is_gone_is_refused() -> None:
    hub = Registry()
    alice = member("alice")
    assert not hub.set_state(alice, {"a": 1}, '{"a":1}')


def test_over_the_roster_limit_the_welcome_is_truncated_and_joins_are_summarised(clock: Clock, timers: Timers) -> None:
    hub = registry(clock, timers, roster_limit=2)
    first, second = member("u0"), member("u1")
    hub.join(first)
    hub.join(second)
    assert of_type(peer(first).take(), "user_joined")  # at the limit: as today
    third = member("u2")
    hub.join(third)
    welcome = peer(third).frames[0]
    assert welcome["participants_truncated"] is True and welcome["participant_count"] == 3
    assert [p["user_id"] for p in welcome["participants"]] == ["u0", "u1"]
    assert of_type(peer(first).frames, "user_joined") == []
    assert timers.run() == [0.0]
    summary = {"type": "presence_summary", "session_id": "room", "participant_count": 3, "joined": ["u2"], "left": []}
    assert peer(first).take() == [summary]
    clock.now += 0.25
    fourth = member("u3")
    hub.join(fourth)
    hub.leave(second)
    assert timers.due[0][0] == pytest.approx(0.75)  # one summary a second at most
    timers.run()
    assert peer(first).take() == [
        {"type": "presence_summary", "session_id": "room", "participant_count": 3, "joined": ["u3"], "left": ["u1"]}
    ]
    # The cached roster is rebuilt once one of the first two left.
    fifth = member("u4")
    hub.join(fifth)
    assert [p["user_id"] for p in peer(fifth).frames[0]["participants"]] == ["u0", "u2"]


def test_back_under_the_limit_a_waiting_summary_goes_first_then_frames_as_today(clock: Clock, timers: Timers) -> None:
    hub = registry(clock, timers, roster_limit=2)
    members = [member(f"u{n}") for n in range(3)]
    for m in members:
        hub.join(m)
    timers.run()
    peer(members[0]).take()
    clock.now += 0.1
    late = member("u3")
    hub.join(late)  # waits for the next summary (due in 0.9 s)
    hub.leave(late)  # net nothing, and 3 of 2 still summarised
    hub.leave(members[2])  # 3 -> 2: was over the limit, summarised too
    hub.leave(members[1])  # 2 -> 1: under it, so the waiting summary goes first, then user_left
    frames = peer(members[0]).take()
    assert [f["type"] for f in frames] == ["presence_summary", "user_left"]
    assert frames[0]["joined"] == [] and frames[0]["left"] == ["u2"]
    assert frames[1]["user_id"] == "u1"


def test_signals_go_to_every_other_connection_and_are_never_stored(clock: Clock, timers: Timers) -> None:
    hub = registry(clock, timers)
    alice, tab, bob = member("alice"), member("alice"), member("bob")
    for m in (alice, tab, bob):
        hub.join(m)
    for m in (alice, tab, bob):
        peer(m).take()
    frame = signal_frame(session_id="room", user_id="alice", name=None, data_json='{"x":1}', key="cursor")
    assert hub.signal(ACME, frame, sender=alice.connection_id, slot_key="cursor") == 2
    assert peer(alice).frames == []
    assert (
        peer(tab).take()
        == peer(bob).take()
        == [{"type": "signal", "session_id": "room", "user_id": "alice", "key": "cursor", "data": {"x": 1}}]
    )
    late = member("carol")
    hub.join(late)
    assert [f["type"] for f in peer(late).frames] == ["welcome"]  # nothing replayed, nothing stored
    assert peer(late).frames[0]["seq"] == 0


def test_roster_and_summary_bookkeeping() -> None:
    roster = Roster()
    one, two = member("u"), member("u")
    assert roster.add(one) and not roster.add(two)
    assert "u" in roster and len(roster) == 1
    roster.set_state(two, {"a": 1}, '{"a":1}')
    assert roster.state_json("u") == '{"a":1}' and roster.state_json("nobody") == "null"
    assert roster.remove(one) == (False, False)  # not the state's source
    assert roster.remove(two) == (True, False)
    summary = Summary()
    for n in range(SUMMARY_USERS + 5):
        summary.user_joined(f"u{n}")
    summary.user_joined("back")
    summary.user_left("back")  # joined and left within one summary: in neither list
    summary.count = 7
    listed = summary.frame("room")
    assert b'"joined":["u104"' in listed.text.encode() and '"back"' not in listed.text
    assert listed.text.count('"u') == SUMMARY_USERS


def test_a_member_is_not_told_presence_changes_its_welcome_showed_but_every_later_one() -> None:
    # Over Redis: changes published before the join script may still be held for the newcomer,
    # or still on their way over pub/sub after its welcome; their versions say which.
    hub = Registry()
    alice = member("alice")
    hub.attach(alice)
    hub.announce(ACME, "user_joined", "bob", None, 2, None, version=4)  # held, shown by the welcome
    alice.presence_version = 5
    hub.release(alice, 0)
    hub.announce(ACME, "user_joined", "dave", None, 3, None, version=5)  # late, shown by the welcome
    hub.announce(ACME, "user_joined", "carol", None, 4, None, version=6)  # news: the check is off
    hub.announce(ACME, "user_joined", "fred", None, 5, None, version=1)  # a counter that restarted
    assert [f["user_id"] for f in peer(alice).frames] == ["carol", "fred"]
