"""The servers the benchmark compares, one :class:`Peer` entry each.

A peer is one or more server processes ("nodes"), optionally behind Redis
instances started first. The driver spreads its connections over the nodes
and charges the CPU of every process (Redis included) to the peer. Adding a
variant, e.g. tornado-ws with Redis once ``--broker`` exists, is one entry.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import re
import shutil
import subprocess
import sys
from collections.abc import Callable

from .. import ROOT

PEERS_DIR = ROOT / "bench" / "peers"
NODE_WS_DIR = PEERS_DIR / "node_ws"


@dataclasses.dataclass(frozen=True)
class Launch:
    """What a peer's command line may depend on."""

    port: int
    node: int  # 0-based index among the peer's nodes
    redis_urls: tuple[str, ...]
    jwt_secret: str
    #: Flags of the scenario's run (tornado-ws's; the peers have none and take none).
    extra: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Peer:
    key: str  # the --peers name
    label: str  # the table row
    argv: Callable[[Launch], list[str]]
    verifies_jwt: bool
    nodes: int = 1
    redis: int = 0
    #: None when it can run here, else why not (shown in its table rows).
    unavailable: Callable[[], str | None] = lambda: None
    note: str = ""
    #: What it does beyond relaying a room (:data:`FEATURES`); a figure that needs more is not measured.
    features: Callable[[], frozenset[str]] = frozenset


#: Protocol features a scenario may need, and what a table says for a peer without one.
FEATURES = {"multiplex": "no multiplexing", "acks": "no acks", "presence": "no presence"}


@functools.cache
def tornado_ws_flags() -> frozenset[str]:
    """The long options this build of tornado-ws accepts (its flags are still growing)."""
    out = subprocess.run(
        [sys.executable, "-m", "tornado_ws", "--help"], capture_output=True, text=True, timeout=30, cwd=ROOT
    ).stdout
    return frozenset(re.findall(r"--[a-z][a-z-]*", out))


def _tornado_ws_argv(module: str, extra: Callable[[Launch], list[str]] = lambda _: []) -> Callable[[Launch], list[str]]:
    def argv(launch: Launch) -> list[str]:
        flags = tornado_ws_flags()
        args = [sys.executable, "-m", module, "--host", "127.0.0.1", "--port", str(launch.port)]
        # "=" form: a random secret may start with "-", which argparse would take for a flag.
        args += [f"--jwt-secret={launch.jwt_secret}", "--shutdown-timeout", "1"]
        # WARNING: per-connection INFO lines would be the only log output any peer writes.
        args += ["--log-level", "WARNING"]
        if "--rate-limit" in flags:
            args += ["--rate-limit", "0"]  # every member publishes as fast as it can
        if "--max-connections" in flags:
            args += ["--max-connections", "50000"]  # the idle scenario holds 10,000
        if "--max-sessions-per-org" in flags:
            args += ["--max-sessions-per-org", "100000"]  # the multiplex scenario opens 2,200 (one org)
        if "--max-connections-per-org" in flags:
            args += ["--max-connections-per-org", "50000"]  # the big room is 10,000 of one org
        return args + extra(launch) + list(launch.extra)

    return argv


def tornado_ws_features() -> frozenset[str]:
    """What this build of tornado-ws speaks, by the flags that came with it (issue #16)."""
    flags = tornado_ws_flags()
    return frozenset(
        feature
        for feature, flag in (
            ("multiplex", "--max-sessions-per-connection"),
            ("acks", "--idempotency-window"),
            ("presence", "--presence-roster-limit"),  # issue #17: signals, states, big rooms
        )
        if flag in flags
    )


def _needs_flag(flag: str) -> Callable[[], str | None]:
    return lambda: None if flag in tornado_ws_flags() else f"not available in this build (no {flag} flag)"


def _needs_module(name: str) -> Callable[[], str | None]:
    return lambda: None if importlib.util.find_spec(name) else f"not available ({name} not installed)"


def _redis_args(launch: Launch) -> list[str]:
    # Every node of the peer shares the one Redis: a room spans nodes.
    return ["--broker", launch.redis_urls[0]]


def _redis_ready() -> str | None:
    for check in (_needs_flag("--broker"), _needs_module("redis")):
        reason = check()
        if reason is not None:
            return reason
    return None if shutil.which("redis-server") else "not available (redis-server not installed)"


TORNADO_WS = "tornado-ws"

PEERS: dict[str, Peer] = {
    peer.key: peer
    for peer in (
        Peer(
            "naive-tornado",
            "naive Tornado (write_message per client)",
            lambda launch: [sys.executable, "-m", "bench.peers.naive_tornado", "--port", str(launch.port)],
            verifies_jwt=False,
        ),
        Peer(
            "websockets",
            "websockets broadcast()",
            lambda launch: [sys.executable, "-m", "bench.peers.ws_broadcast", "--port", str(launch.port)],
            verifies_jwt=False,
        ),
        Peer(
            "node-ws",
            "Node ws",
            lambda launch: ["node", str(NODE_WS_DIR / "server.js"), "--port", str(launch.port)],
            verifies_jwt=False,
        ),
        Peer(
            TORNADO_WS,
            "tornado-ws (memory broker)",
            _tornado_ws_argv("tornado_ws"),
            verifies_jwt=True,
            features=tornado_ws_features,
        ),
        Peer(
            "tornado-ws-uvloop",
            "tornado-ws + uvloop",
            _tornado_ws_argv("bench.peers.uvloop_tornado_ws"),
            verifies_jwt=True,
            unavailable=_needs_module("uvloop"),
            note="the same server on uvloop's event loop (optional extra)",
            features=tornado_ws_features,
        ),
        Peer(
            "tornado-ws-orjson",
            "tornado-ws + orjson",
            _tornado_ws_argv("bench.peers.orjson_tornado_ws"),
            verifies_jwt=True,
            unavailable=_needs_module("orjson"),
            note="the same server re-encoding message data with orjson (measured, not a dependency)",
            features=tornado_ws_features,
        ),
        Peer(
            "tornado-ws-redis",
            "tornado-ws, Redis, 1 node",
            _tornado_ws_argv("tornado_ws", _redis_args),
            verifies_jwt=True,
            redis=1,
            unavailable=_redis_ready,
            features=tornado_ws_features,
        ),
        Peer(
            "tornado-ws-redis-2",
            "tornado-ws, Redis, 2 nodes",
            _tornado_ws_argv("tornado_ws", _redis_args),
            verifies_jwt=True,
            nodes=2,
            redis=1,
            unavailable=_redis_ready,
            features=tornado_ws_features,
        ),
    )
}
