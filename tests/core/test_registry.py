"""The I/O-free session registry, driven directly: no sockets, no event loop."""

from __future__ import annotations

import json

import pytest

from tests.recording import Clock, RecordingPeer
from tornado_ws.core.registry import Membership, Registry, SessionKey
from tornado_ws.core.server_messages import OutFrame

ACME = SessionKey("acme", "room")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def hub(clock: Clock) -> Registry:
    return Registry(history_size=5, history_ttl=60, clock=clock)


_ids = iter(range(10**9))


def member(user: str, key: SessionKey = ACME, name: str | None = None) -> Membership:
    return Membership(key=key, connection_id=f"c{next(_ids)}", user_id=user, name=name, peer=RecordingPeer())


def peer(m: Membership) -> RecordingPeer:
    assert isinstance(m.peer, RecordingPeer)
    return m.peer


def test_join_sends_welcome_first_with_presence_and_seq(hub: Registry) -> None:
    alice = member("alice", name="Alice")
    hub.join(alice)
    [welcome] = peer(alice).frames
    assert welcome["type"] == "welcome"
    assert welcome["participants"] == [{"user_id": "alice", "name": "Alice"}]
    assert welcome["participant_count"] == 1
    assert welcome["seq"] == 0
    assert welcome["connection_id"] == alice.connection_id
    assert welcome["org_id"] == "acme"


def test_join_announces_first_connection_only(hub: Registry) -> None:
    bob, tab1, tab2 = member("bob"), member("alice"), member("alice")
    hub.join(bob)
    hub.join(tab1)
    hub.join(tab2)
    assert peer(bob).types() == ["welcome", "user_joined"]
    assert peer(tab1).types() == ["welcome"]  # never told about itself or its own second tab
    assert peer(tab2).frames[0]["participant_count"] == 2


def test_leave_announces_last_connection_only_and_retires_empty_session(hub: Registry) -> None:
    bob, tab1, tab2 = member("bob"), member("alice"), member("alice")
    for m in (bob, tab1, tab2):
        hub.join(m)
    peer(bob).take()
    hub.leave(tab1)
    assert peer(bob).frames == []
    hub.leave(tab2)
    assert peer(bob).take() == [{"type": "user_left", "session_id": "room", "user_id": "alice", "participant_count": 1}]
    hub.leave(bob)
    assert hub.sessions == {}
    assert hub.connection_count == 0


def test_leave_twice_is_harmless(hub: Registry) -> None:
    alice, bob = member("alice"), member("bob")
    hub.join(alice)
    hub.join(bob)
    hub.leave(bob)
    hub.leave(bob)
    assert peer(alice).types() == ["welcome", "user_joined", "user_left"]
    assert hub.presence(ACME)["participant_count"] == 1


def test_publish_sequences_gaplessly_and_reaches_everyone_including_sender(hub: Registry) -> None:
    alice, bob = member("alice"), member("bob")
    hub.join(alice)
    hub.join(bob)
    seqs = [hub.publish(ACME, user_id="alice", name=None, data_json=json.dumps(n)) for n in range(3)]
    assert seqs == [1, 2, 3]
    for m in (alice, bob):
        msgs = [f for f in peer(m).frames if f["type"] == "message"]
        assert [(f["seq"], f["data"], f["user_id"]) for f in msgs] == [(n + 1, n, "alice") for n in range(3)]


def test_broadcast_frame_is_encoded_once_for_all_members(hub: Registry) -> None:
    sent: list[OutFrame] = []

    class SpyPeer(RecordingPeer):
        def send(self, frame: OutFrame) -> None:
            sent.append(frame)

    members = [Membership(ACME, f"s{i}", f"u{i}", None, SpyPeer()) for i in range(3)]
    for m in members:
        hub.join(m)
    sent.clear()
    hub.publish(ACME, user_id="u0", name=None, data_json="1")
    assert len(sent) == 3
    assert sent[0] is sent[1] is sent[2]


def test_orgs_and_sessions_never_share_anything(hub: Registry) -> None:
    acme = member("alice", SessionKey("acme", "standup"))
    globex = member("eve", SessionKey("globex", "standup"))
    other_room = member("carol", SessionKey("acme", "retro"))
    for m in (acme, globex, other_room):
        hub.join(m)
    hub.publish(SessionKey("acme", "standup"), user_id="alice", name=None, data_json='"hi"')
    assert peer(globex).types() == ["welcome"]
    assert peer(other_room).types() == ["welcome"]
    assert peer(globex).frames[0]["participants"] == [{"user_id": "eve"}]
    assert hub.publish(SessionKey("globex", "standup"), user_id="eve", name=None, data_json="1") == 1


def test_session_id_with_colons_cannot_collide_across_orgs(hub: Registry) -> None:
    a = member("a", SessionKey("a", "b:c"))
    b = member("b", SessionKey("a:b", "c"))
    hub.join(a)
    hub.join(b)
    assert len(hub.sessions) == 2
    assert peer(a).types() == ["welcome"]


def test_presence_query(hub: Registry) -> None:
    assert hub.presence(ACME) == {"participants": [], "participant_count": 0}
    hub.join(member("alice", name="A"))
    hub.join(member("alice", name="A"))
    hub.join(member("bob"))
    assert hub.presence(ACME) == {
        "participants": [{"user_id": "alice", "name": "A"}, {"user_id": "bob"}],
        "participant_count": 2,
    }


def test_close_all_asks_every_peer_to_close(hub: Registry) -> None:
    members = [member("a"), member("b", SessionKey("globex", "x"))]
    for m in members:
        hub.join(m)
    hub.close_all(1001, "bye")
    assert [peer(m).closed for m in members] == [(1001, "bye"), (1001, "bye")]


# -- history and resume through the hub ------------------------------------------------------


def test_lone_user_resumes_after_dropping(hub: Registry) -> None:
    alice = member("alice")
    hub.join(alice)
    epoch = peer(alice).frames[0]["epoch"]
    hub.publish(ACME, user_id="alice", name=None, data_json='"mine"')
    hub.leave(alice)
    assert hub.sessions == {} and hub.dormant_count == 1
    hub.publish(ACME, user_id="svc", name=None, data_json='"while away"')
    back = member("alice")
    recovery = hub.join(back, epoch=epoch, since=0)
    assert recovery.recovered
    frames = peer(back).frames
    assert frames[0]["recovered"] is True and frames[0]["epoch"] == epoch and frames[0]["seq"] == 2
    assert [f["data"] for f in frames[1:]] == ["mine", "while away"]


def test_resume_with_wrong_epoch_or_evicted_history_is_not_recovered(hub: Registry) -> None:
    alice = member("alice")
    hub.join(alice)
    for n in range(8):  # history keeps 5
        hub.publish(ACME, user_id="alice", name=None, data_json=str(n))
    epoch = peer(alice).frames[0]["epoch"]
    for kwargs in ({"epoch": "stale", "since": 7}, {"epoch": epoch, "since": 1}, {"epoch": epoch, "since": 99}):
        late = member("bob")
        assert not hub.join(late, **kwargs).recovered
        assert peer(late).types() == ["welcome"]
        assert peer(late).frames[0]["recovered"] is False
    ok = member("carol")
    assert hub.join(ok, epoch=epoch, since=3).recovered
    assert [f["seq"] for f in peer(ok).frames[1:]] == [4, 5, 6, 7, 8]


def test_expired_stream_restarts_with_new_epoch(hub: Registry, clock: Clock) -> None:
    alice = member("alice")
    hub.join(alice)
    epoch = peer(alice).frames[0]["epoch"]
    hub.publish(ACME, user_id="alice", name=None, data_json="1")
    hub.leave(alice)
    clock.now += 30
    assert hub.expire() == 0
    clock.now += 31
    assert hub.expire() == 1
    assert hub.dormant_count == 0
    again = member("alice")
    assert not hub.join(again, epoch=epoch, since=1).recovered
    welcome = peer(again).frames[0]
    assert welcome["seq"] == 0 and welcome["epoch"] != epoch


def test_idle_live_session_forgets_history_but_keeps_order(hub: Registry, clock: Clock) -> None:
    alice = member("alice")
    hub.join(alice)
    epoch = peer(alice).frames[0]["epoch"]
    hub.publish(ACME, user_id="alice", name=None, data_json="1")
    clock.now += 61
    hub.expire()
    assert not hub.join(member("bob"), epoch=epoch, since=0).recovered
    assert hub.join(member("carol"), epoch=epoch, since=1).recovered  # nothing missed
    assert hub.publish(ACME, user_id="alice", name=None, data_json="2") == 2


def test_publish_to_empty_session_is_kept_for_later_joiners(hub: Registry) -> None:
    assert hub.publish(ACME, user_id="svc", name=None, data_json='"early"') == 1
    assert hub.sessions == {}
    alice = member("alice")
    hub.join(alice)
    assert peer(alice).frames[0]["seq"] == 1


def test_history_disabled_drops_stream_with_the_session() -> None:
    hub = Registry(history_size=0, history_ttl=60)
    alice = member("alice")
    hub.join(alice)
    hub.leave(alice)
    assert hub.dormant_count == 0


def test_reset_forgets_everything(hub: Registry) -> None:
    alice = member("alice")
    hub.join(alice)
    hub.publish(ACME, user_id="alice", name=None, data_json="1")
    hub.leave(alice)
    hub.join(member("bob"))
    hub.reset()
    assert hub.sessions == {} and hub.dormant_count == 0


def test_sessions_per_org_are_capped_counting_kept_history(clock: Clock) -> None:
    registry = Registry(history_size=5, history_ttl=60, max_sessions_per_org=2, clock=clock)
    a, b = member("alice", SessionKey("acme", "a")), member("alice", SessionKey("acme", "b"))
    registry.join(a)
    registry.publish(SessionKey("acme", "b"), user_id="svc", name=None, data_json="1")  # a stream, no members
    assert not registry.has_room(SessionKey("acme", "c"))
    assert registry.has_room(SessionKey("acme", "b")) and registry.has_room(SessionKey("globex", "c"))
    registry.join(b)
    registry.leave(a)  # kept as history: still counts
    assert not registry.has_room(SessionKey("acme", "c"))
    clock.now += 61
    registry.expire()
    assert registry.has_room(SessionKey("acme", "c"))


# -- a member no frame can carry, bans, per-org connections ------------------------------------------

LONE_SURROGATE = "\ud83d"  # half an emoji: JSON and JWT accept it, UTF-8 cannot encode it


def test_a_join_whose_frames_cannot_be_built_changes_nothing(hub: Registry) -> None:
    alice = member("alice", name="Alice")
    hub.join(alice)
    for bad in (
        member("mallory", name=LONE_SURROGATE),  # a new user
        member("alice", name=LONE_SURROGATE),  # a second tab of a present user: not in the welcome
        member("mallory", SessionKey("acme", "new"), name=LONE_SURROGATE),  # a new session
    ):
        with pytest.raises(UnicodeEncodeError):
            hub.join(bad)
    assert hub.connection_count == 1 and hub.user_connections("acme", "mallory") == 0
    assert hub.org_connections("acme") == 1
    assert set(hub.sessions) == {ACME} and hub.dormant_count == 0
    assert hub.presence(ACME)["participants"] == [{"user_id": "alice", "name": "Alice"}]
    assert peer(alice).types() == ["welcome"]  # nobody heard of the refused joins
    bob = member("bob")
    hub.join(bob)  # the session still takes members
    assert peer(bob).frames[0]["participant_count"] == 2
    assert peer(alice).take()[-1]["user_id"] == "bob"
    hub.leave(bob)
    assert peer(alice).take() == [{"type": "user_left", "session_id": "room", "user_id": "bob", "participant_count": 1}]


def test_a_publish_whose_frame_cannot_be_built_starts_no_stream(clock: Clock) -> None:
    registry = Registry(history_size=5, history_ttl=60, max_sessions_per_org=1, clock=clock)
    with pytest.raises(UnicodeEncodeError):
        registry.publish(SessionKey("acme", "a"), user_id="svc", name=LONE_SURROGATE, data_json="1")
    assert registry.dormant_count == 0
    assert registry.has_room(SessionKey("acme", "b"))  # no phantom stream holds the org's one slot


def test_a_ban_lasts_its_seconds_for_that_user_and_session_only(hub: Registry, clock: Clock) -> None:
    hub.ban(ACME, "mallory", 30)
    hub.ban(ACME, "bob", 0)  # no ban
    assert hub.banned(ACME, "mallory")
    assert not hub.banned(ACME, "bob") and not hub.banned(SessionKey("acme", "other"), "mallory")
    assert not hub.banned(SessionKey("globex", "room"), "mallory")
    clock.now += 29
    assert hub.banned(ACME, "mallory")
    clock.now += 1
    assert not hub.banned(ACME, "mallory")


def test_expired_bans_are_swept(hub: Registry, clock: Clock) -> None:
    for n in range(5):
        hub.ban(SessionKey("acme", f"s{n}"), "mallory", 10)
    clock.now += 11
    hub.expire()
    assert hub._bans == {}


def test_connections_are_counted_per_org(clock: Clock) -> None:
    registry = Registry(history_size=5, history_ttl=60, max_connections_per_org=2, clock=clock)
    tabs = [member("alice"), member("bob", SessionKey("acme", "other"))]
    for m in tabs:
        registry.join(m)
    registry.join(member("eve", SessionKey("globex", "room")))
    assert (registry.org_connections("acme"), registry.org_connections("globex")) == (2, 1)
    assert registry.org_full("acme") and not registry.org_full("globex")
    registry.leave(tabs[0])
    assert registry.org_connections("acme") == 1 and not registry.org_full("acme")
    assert not Registry(max_connections_per_org=0).org_full("acme")  # 0: no cap
