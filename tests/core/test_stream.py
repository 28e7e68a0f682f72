"""The history window and the recovery decision: pure functions, checked exhaustively."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tornado_ws.core.server_messages import OutFrame
from tornado_ws.core.stream import PublishedIds, Stream


def stream_with(n: int, size: int, epoch: str = "e1") -> Stream:
    stream = Stream(size, now=0.0, epoch_factory=lambda: epoch)
    for seq in range(1, n + 1):
        stream.append(seq, OutFrame(json.dumps({"seq": seq})), now=float(seq))
    return stream


def seqs(frames: object) -> list[int]:
    return [json.loads(f.text)["seq"] for f in frames]  # type: ignore[attr-defined]


def test_append_must_be_gapless() -> None:
    stream = stream_with(2, 5)
    with pytest.raises(ValueError):
        stream.append(4, OutFrame("{}"), now=0)
    assert stream.next_seq() == 3


def test_window_keeps_only_the_newest() -> None:
    stream = stream_with(10, 3)
    assert len(stream) == 3
    assert seqs(stream.recover("e1", 7).frames) == [8, 9, 10]
    assert not stream.recover("e1", 6).recovered


def test_nothing_missed_is_recovered_even_without_history() -> None:
    stream = stream_with(4, 0)
    assert stream.recover("e1", 4).recovered
    assert not stream.recover("e1", 3).recovered


def test_no_resume_point_means_not_recovered() -> None:
    stream = stream_with(3, 10)
    assert not stream.recover(None, None).recovered
    assert not stream.recover("e1", None).recovered
    assert not stream.recover(None, 1).recovered


def test_forget_history_keeps_seq_and_epoch() -> None:
    stream = stream_with(3, 10)
    stream.forget_history()
    assert stream.epoch == "e1" and stream.next_seq() == 4
    assert not stream.recover("e1", 2).recovered


@given(
    published=st.integers(0, 60),
    size=st.integers(0, 20),
    since=st.integers(-3, 65),
    same_epoch=st.booleans(),
)
def test_recovery_is_exactly_the_missed_suffix_or_an_honest_no(
    published: int, size: int, since: int, same_epoch: bool
) -> None:
    stream = stream_with(published, size)
    result = stream.recover("e1" if same_epoch else "e0", since)
    possible = same_epoch and 0 <= since <= published and published - since <= size
    assert result.recovered == possible
    if result.recovered:
        assert seqs(result.frames) == list(range(since + 1, published + 1))
    else:
        assert list(result.frames) == []


@given(
    ops=st.lists(st.sampled_from(["publish", "drop", "resume"]), max_size=80),
    size=st.integers(1, 15),
)
def test_a_client_that_drops_and_resumes_sees_a_gapless_stream_or_is_told(ops: list[str], size: int) -> None:
    """Model: a client reads live while connected, drops, resumes from its last seq."""
    stream = Stream(size, now=0.0, epoch_factory=lambda: "e")
    connected, seen, told_not_recovered = True, [0], False
    for op in ops:
        if op == "publish":
            seq = stream.next_seq()
            stream.append(seq, OutFrame(json.dumps({"seq": seq})), now=0.0)
            if connected:
                seen.append(seq)
        elif op == "drop":
            connected = False
        elif not connected:
            result = stream.recover("e", seen[-1])
            connected = True
            if result.recovered:
                seen.extend(seqs(result.frames))
            else:
                told_not_recovered = True
                seen.append(stream.last_seq)  # the client reloads state and goes on from here
    if connected and not told_not_recovered:
        assert seen == list(range(0, stream.last_seq + 1))
    assert seen == sorted(set(seen))  # never a duplicate, never out of order


def test_published_ids_forget_by_age_and_drop_the_oldest_past_the_limit() -> None:
    ids = PublishedIds(limit=3)
    for n in range(3):
        ids.add("alice", f"m{n}", n + 1, now=100.0 + n)
    assert ids.seq_of("alice", "m0", deadline=0) == 1
    assert ids.seq_of("bob", "m0", deadline=0) is None  # ids are per user
    ids.add("alice", "m3", 4, now=103.0)  # over the limit: m0, the oldest, goes
    assert (len(ids), ids.seq_of("alice", "m0", deadline=0), ids.seq_of("alice", "m3", deadline=0)) == (3, None, 4)
    assert ids.seq_of("alice", "m1", deadline=101.0) is None  # published at 101: not after the deadline
    assert ids.seq_of("alice", "m2", deadline=101.0) == 3
    assert len(ids) == 2
