"""The scenarios: their parameters per preset, and the columns of their tables.

Presets: ``full`` (the figures in docs/performance.md, a few minutes on 2
cores), ``quick`` (a minute or so, for development) and ``smoke`` (seconds;
the test suite runs it so the benchmark cannot rot).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from .peers import TORNADO_WS

MSG = 100  # bytes of each client publish frame's JSON
UNLIMITED = 100_000  # a --presence-roster-limit no big room reaches
NOLIMIT_BUDGET_S = 300  # seconds of joins for the big room without the limit (O(N²): ~3 minutes)


@dataclasses.dataclass(frozen=True)
class Column:
    key: str  # a figure from the driver
    label: str
    fmt: str = "{:,.0f}"
    better: str | None = None  # "higher" / "lower": a ratio column is added for it
    needs: str | None = None  # a peer feature (bench.peers.FEATURES) without which there is no such figure


@dataclasses.dataclass(frozen=True)
class Variant:
    """One of a scenario's runs, each on a fresh deployment of the peer: ``params`` override the
    preset's, the figures get ``prefix``; skipped for a peer without the feature ``needs``."""

    prefix: str
    params: dict[str, Any] = dataclasses.field(default_factory=dict)
    needs: str | None = None
    #: The peers it runs for (empty: every peer).
    only: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    what: str  # one sentence, with {placeholders} from the params
    presets: dict[str, dict[str, Any]]
    columns: tuple[Column, ...]
    timeout: float  # seconds for one driver run (full preset)
    #: Runs on fresh servers, one after the other (none: one run with the preset's params).
    variants: tuple[Variant, ...] = ()
    #: Server flags for a run, from its params and the peer's features (tornado-ws's flags).
    server_args: Callable[[dict[str, Any], frozenset[str]], list[str]] = lambda params, features: []
    #: Figures computed from the others once every variant ran (ratios between variants).
    derived: Callable[[dict[str, Any]], dict[str, Any]] = lambda figures: {}


def _lat(prefix: str, label: str, better: str | None = "lower") -> tuple[Column, ...]:
    return (
        Column(f"{prefix}p50_ms", f"p50 ms {label}", "{:.1f}"),
        Column(f"{prefix}p99_ms", f"p99 ms {label}", "{:.1f}", better),
    )


# Whole-core busy % of the server's core (softirq included): ~100 means the server was the limit.
SERVER_CORE = Column("server_core_pct", "server core %")
DRIVER_CPU = Column("driver_cpu_pct", "driver CPU %")


FANOUT = Scenario(
    "fanout",
    "Fan-out",
    "1 room x {receivers:,} members, one publishes {message_bytes}-byte messages. Max: closed loop, at most"
    " {window} messages not yet delivered to everyone, {duration} s after {warmup} s warm-up. Latency: open loop"
    " for {latency_duration} s at {fixed_rate} msg/s (same for all) and at half of the peer's own max.",
    {
        "full": dict(receivers=1000, window=16, warmup=1, duration=3, latency_duration=2, fixed_rate=10),
        "quick": dict(receivers=300, window=16, warmup=0.5, duration=1.5, latency_duration=1, fixed_rate=10),
        "smoke": dict(receivers=20, window=4, warmup=0.1, duration=0.3, latency_duration=0.2, fixed_rate=20),
    },
    (
        Column("deliveries_per_s", "deliveries/s (max)", better="higher"),
        Column("server_us_per_delivery", "server CPU µs/delivery", "{:.2f}", "lower"),
        SERVER_CORE,
        DRIVER_CPU,
        *_lat("fixed_", "@ fixed rate", None),
        *_lat("half_", "@ half max"),
        Column("lost", "lost"),
    ),
    timeout=120,
)

FANOUT_IDS = Scenario(
    "fanout-ids",
    "Fan-out with ids",
    "The fan-out scenario (1 room x {receivers:,} members, closed loop with at most {window} messages in flight,"
    " {duration} s after {warmup} s warm-up), twice on the same server and connections: without ids, then with a"
    ' unique `"id"` on every publish (tornado-ws acknowledges each to the sender; the peers relay it like any'
    " frame, so their two runs show the noise). Latency: open loop for {latency_duration} s, both at half of the"
    ' max without ids. "ids ÷ no ids" is the ratio within the run.',
    {
        "full": dict(receivers=1000, window=16, warmup=1, duration=3, latency_duration=2),
        "quick": dict(receivers=300, window=16, warmup=0.5, duration=1.5, latency_duration=1),
        "smoke": dict(receivers=20, window=4, warmup=0.1, duration=0.3, latency_duration=0.2),
    },
    (
        Column("deliveries_per_s", "deliveries/s (max), ids", better="higher"),
        Column("server_us_per_delivery", "server CPU µs/delivery, ids", "{:.2f}", "lower"),
        Column("plain_deliveries_per_s", "deliveries/s (max), no ids"),
        Column("plain_server_us_per_delivery", "server CPU µs/delivery, no ids", "{:.2f}"),
        Column("ids_rate_ratio", "deliveries/s ids ÷ no ids", "{:.2f}x"),
        Column("ids_cpu_ratio", "µs/delivery ids ÷ no ids", "{:.2f}x"),
        Column("half_p99_ms", "p99 ms, ids", "{:.1f}", "lower"),
        Column("plain_half_p99_ms", "p99 ms, no ids", "{:.1f}"),
        Column("ids_p99_ratio", "p99 ids ÷ no ids", "{:.2f}x"),
        Column("ack_half_p99_ms", "ack p99 ms", "{:.1f}", needs="acks"),
        Column("acks_missing", "acks missing", needs="acks"),
        SERVER_CORE,
        DRIVER_CPU,
        Column("lost", "lost"),
    ),
    timeout=120,
)

ROOMS = Scenario(
    "rooms",
    "Many rooms",
    "{rooms} rooms x {members} members, every member publishes {message_bytes}-byte messages, each keeping one in"
    " flight (closed loop); {duration} s after {warmup} s warm-up.",
    {
        "full": dict(rooms=100, members=10, warmup=1, duration=3),
        "quick": dict(rooms=30, members=10, warmup=0.5, duration=1.5),
        "smoke": dict(rooms=3, members=5, warmup=0.1, duration=0.3),
    },
    (
        Column("deliveries_per_s", "deliveries/s", better="higher"),
        Column("server_us_per_delivery", "server CPU µs/delivery", "{:.2f}", "lower"),
        SERVER_CORE,
        DRIVER_CPU,
        *_lat("", "(closed loop)"),
        # Every room has the same load; far below 100 % means some rooms were starved.
        Column("slowest_room_pct", "slowest room, % of mean"),
    ),
    timeout=90,
)

IDLE = Scenario(
    "idle",
    "Idle connections",
    "{connections:,} connections in rooms of {members}, held {hold} s after a {settle} s settle; RSS growth of the"
    " server process(es) over the empty server, per connection.",
    {
        "full": dict(connections=10000, members=10, settle=1, hold=2),
        "quick": dict(connections=2000, members=10, settle=1, hold=1),
        "smoke": dict(connections=50, members=10, settle=0.1, hold=0.2),
    },
    (
        Column("connections", "connected"),
        Column("kib_per_connection", "KiB RSS/connection", "{:.1f}", "lower"),
        Column("connect_per_s", "connects/s (64 at a time)"),
        Column("idle_server_cpu_pct", "idle server CPU %", "{:.1f}"),
    ),
    timeout=120,
)

MULTIPLEX = Scenario(
    "multiplex",
    "One socket, many sessions (`/ws`)",
    "{single_connections:,} sockets to `/ws/<id>` in rooms of {members}, as in the idle scenario: RSS growth per"
    " socket. Then, where the peer has `/ws`: {connections} `/ws` sockets each join {sessions} sessions (every"
    " session has {members} members): RSS growth per membership over the {connections} connected sockets. One"
    " socket joins its {sessions} alone (its join frames in one write, timed to the last welcome), then the others"
    " {join_concurrency} at a time (time per socket, and joins/s; at most {join_budget_s} s). {settle} s settle"
    " before each RSS reading.",
    {
        "full": dict(
            single_connections=2000,
            members=10,
            connections=200,
            sessions=100,
            join_concurrency=10,
            join_budget_s=30,
            join_timeout_s=20,
            settle=1,
        ),
        "quick": dict(
            single_connections=1000,
            members=10,
            connections=100,
            sessions=100,
            join_concurrency=10,
            join_budget_s=15,
            join_timeout_s=15,
            settle=0.5,
        ),
        "smoke": dict(
            single_connections=20,
            members=5,
            connections=4,
            sessions=10,
            join_concurrency=2,
            join_budget_s=5,
            join_timeout_s=5,
            settle=0.1,
        ),
    },
    (
        Column("single_connections", "`/ws/<id>` sockets"),
        Column("kib_per_connection", "KiB RSS per `/ws/<id>` socket", "{:.1f}", "lower"),
        Column("memberships", "`/ws` memberships", needs="multiplex"),
        Column("kib_per_membership", "KiB RSS per membership", "{:.2f}", "lower", needs="multiplex"),
        Column("membership_vs_connection", "membership ÷ socket", "{:.2f}x", needs="multiplex"),
        Column("solo_join_ms", "ms to join all, alone", "{:.0f}", "lower", needs="multiplex"),
        Column("join_p50_ms", "p50 ms to join all, concurrently", "{:.0f}", needs="multiplex"),
        Column("join_p99_ms", "p99 ms to join all, concurrently", "{:.0f}", needs="multiplex"),
        Column("joins_per_s", "joins/s", better="higher", needs="multiplex"),
        Column("server_us_per_join", "server CPU µs/join", "{:.0f}", "lower", needs="multiplex"),
    ),
    timeout=120,
)

HANDSHAKE = Scenario(
    "handshake",
    "Handshake rate",
    "{concurrency} workers loop: TCP connect, upgrade (tornado-ws: + JWT check), wait for the welcome frame, close;"
    " {duration} s after {warmup} s warm-up. A fresh user id per connection.",
    {
        "full": dict(concurrency=32, warmup=0.5, duration=3),
        "quick": dict(concurrency=32, warmup=0.3, duration=1.5),
        "smoke": dict(concurrency=4, warmup=0.1, duration=0.3),
    },
    (
        Column("handshakes_per_s", "handshakes/s", better="higher"),
        Column("server_us_per_handshake", "server CPU µs/handshake", "{:.0f}", "lower"),
        SERVER_CORE,
        DRIVER_CPU,
    ),
    timeout=60,
)

CHURN = Scenario(
    "churn",
    "Churn",
    "{rooms} rooms x {members} steady members, each room broadcasting {rate_per_room} msg/s, while {concurrency}"
    " workers join those rooms and leave again (connect, welcome, close) as fast as they can; {duration} s after"
    " {warmup} s warm-up.",
    {
        "full": dict(rooms=20, members=20, rate_per_room=10, concurrency=16, warmup=0.5, duration=3),
        "quick": dict(rooms=10, members=20, rate_per_room=10, concurrency=16, warmup=0.3, duration=1.5),
        "smoke": dict(rooms=2, members=5, rate_per_room=10, concurrency=2, warmup=0.1, duration=0.3),
    },
    (
        Column("cycles_per_s", "connect/close cycles/s", better="higher"),
        Column("deliveries_per_s", "deliveries/s"),
        Column("offered_deliveries_per_s", "offered"),
        *_lat("", "broadcast"),
        SERVER_CORE,
        DRIVER_CPU,
    ),
    timeout=60,
)

CURSORS = Scenario(
    "cursors",
    "Cursors (signals)",
    "1 session x {members} members, each sending a keyed signal"
    ' (`{{"type":"signal","data":{{"x","y","t"}},"key":"cursor"}}`) at {hz} Hz, all spread evenly over time,'
    " for {duration} s after {warmup} s warm-up; each reaches the other members. Latency: from the send time in"
    " `data` to receipt. Server CPU: % of one core, the server process(es) only. tornado-ws replaces a cursor"
    " still unsent to a member with the same sender's next one (latest wins); the peers have no latest-wins and"
    ' relay every signal to the other members. "delivered" is the share of every (signal, other member)'
    ' that arrived by the time 300 ms passed without one (at most 2 s after the last send). "Driver sent late":'
    " how far behind its schedule the driver sent (its timer ticks every 2 ms; more is a stall of its core), a"
    " late batch reaching the server at once.",
    {
        "full": dict(members=50, hz=30, warmup=2, duration=20),
        "quick": dict(members=50, hz=30, warmup=1, duration=5),
        "smoke": dict(members=4, hz=30, warmup=0.05, duration=0.25),
    },
    (
        Column("deliveries_per_s", "deliveries/s"),
        Column("offered_per_s", "offered/s"),
        Column("delivered_pct", "delivered %", "{:.2f}"),
        *_lat("", "send → receipt"),
        Column("send_lag_p99_ms", "p99 ms driver sent late", "{:.1f}"),
        Column("send_lag_max_ms", "max ms driver sent late", "{:.1f}"),
        Column("server_cpu_pct", "server CPU % of a core", "{:.1f}", "lower"),
        Column("server_us_per_delivery", "server CPU µs/delivery", "{:.2f}"),
        SERVER_CORE,
        DRIVER_CPU,
    ),
    timeout=60,
)


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _big_room_args(params: dict[str, Any], features: frozenset[str]) -> list[str]:
    if "presence" not in features:
        return []
    pings = ["--ping-interval", str(params["ping_interval"])] if "ping_interval" in params else []
    return ["--presence-roster-limit", str(params["roster_limit"]), *pings]


BIG_ROOM = Scenario(
    "big-room",
    "Big room",
    "{members:,} members join one session, {concurrency} handshakes at a time (each waits for its welcome):"
    " time and server CPU until the last welcome, then until every presence frame arrived (settled); joins"
    " start for at most {budget_s} s. With `--presence-roster-limit {roster_limit}` (above it a welcome lists"
    " {roster_limit} participants and joins go out as one `presence_summary` a second); then, for tornado-ws"
    f" only, on a fresh server with the limit out of reach (`--presence-roster-limit {UNLIMITED}"
    " --ping-interval 0`: every welcome lists everyone, every join is a `user_joined` to everyone, O(N²); pings"
    " off, or the one driver, seconds behind that flood, would miss pongs and be cut; joins start for at most"
    f" {NOLIMIT_BUDGET_S} s). The peers have no presence: their rows are {{members:,}} connects into one room"
    " with a welcome, nothing announced, the floor of the connection work, not the same job."
    ' "2nd ÷ 1st half": server CPU from the welcome of half of the members to settled, over the CPU up to it:'
    " ~1 for O(N), ~3 for O(N²).",
    {
        "full": dict(members=10000, concurrency=50, roster_limit=1000, budget_s=60, drain_s=15),
        "quick": dict(members=3000, concurrency=50, roster_limit=1000, budget_s=30, drain_s=10),
        "smoke": dict(members=11, concurrency=4, roster_limit=10, budget_s=10, drain_s=5),
    },
    (
        Column("members", "members"),
        Column("join_s", "s to last welcome", "{:.1f}"),
        Column("settle_s", "s to settled", "{:.1f}"),
        Column("server_cpu_s", "server CPU s", "{:.1f}", "lower"),
        Column("server_us_per_join", "server CPU µs/join", "{:.0f}"),
        Column("half_cpu_ratio", "2nd ÷ 1st half", "{:.2f}x"),
        Column("presence_frames_per_join", "presence frames/join", "{:.1f}", needs="presence"),
        Column("mib_received", "MiB to the driver", "{:,.0f}"),
        Column("nolimit_members", "members, no limit", needs="presence"),
        Column("nolimit_join_s", "s to last welcome, no limit", "{:.1f}", needs="presence"),
        Column("nolimit_settle_s", "s to settled, no limit", "{:.1f}", needs="presence"),
        Column("nolimit_server_cpu_s", "server CPU s, no limit", "{:.1f}", needs="presence"),
        Column("nolimit_half_cpu_ratio", "2nd ÷ 1st half, no limit", "{:.2f}x", needs="presence"),
        Column("nolimit_mib_received", "MiB to the driver, no limit", "{:,.0f}", needs="presence"),
        Column("limit_cpu_ratio", "CPU no limit ÷ limit", "{:.1f}x", needs="presence"),
    ),
    timeout=450,
    variants=(
        Variant(""),
        # Without the limit, the one driver falls seconds behind the flood of presence frames, its
        # pongs with it, and the server would drop members for missed pongs: pings off for that run.
        # O(N²) by design, minutes long: one row shows it.
        Variant(
            "nolimit_",
            {"roster_limit": UNLIMITED, "ping_interval": 0, "budget_s": NOLIMIT_BUDGET_S},
            needs="presence",
            only=(TORNADO_WS,),
        ),
    ),
    server_args=_big_room_args,
    derived=lambda f: {"limit_cpu_ratio": _ratio(f.get("nolimit_server_cpu_s"), f.get("server_cpu_s"))},
)

SCENARIOS: dict[str, Scenario] = {
    s.key: s for s in (FANOUT, FANOUT_IDS, ROOMS, IDLE, MULTIPLEX, HANDSHAKE, CHURN, CURSORS, BIG_ROOM)
}


def params(scenario: Scenario, preset: str) -> dict[str, Any]:
    return {"message_bytes": MSG, **scenario.presets[preset]}
