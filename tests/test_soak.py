"""The bounded soak (bench/soak.py) as a CI test: a short run against the CLI server, fully audited.

``TORNADO_WS_SOAK_SECONDS`` sets the churn time (default 15 s: the whole suite has a 5-minute
budget; use less on a slow machine, more for a real soak: ``python -m bench.soak --duration 600``).
"""

from __future__ import annotations

import asyncio
import os

from bench.soak import render, soak

SECONDS = float(os.environ.get("TORNADO_WS_SOAK_SECONDS", "15"))


def test_soak_streams_are_gapless_and_the_server_returns_to_its_baseline() -> None:
    figures = asyncio.run(soak(duration=SECONDS, clients=32, sessions=4, seed=7))
    print("\n" + render(figures))
    assert figures["violations"] == [], render(figures)
    # The run exercised what it claims to: churn, drops, resumes that recovered, traffic.
    assert figures["drops"] > 0 and figures["clean_leaves"] > 0
    assert figures["resumes_recovered"] > 0
    assert figures["sequenced"] > 0 and figures["deliveries_checked"] > figures["sequenced"]
