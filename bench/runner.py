"""Run one scenario against one peer: deploy it, drive it, stop it."""

from __future__ import annotations

import dataclasses
import os
import secrets
from collections.abc import Callable
from typing import Any

from .peers import Peer
from .procs import DRIVER_CORE, SERVER_CORE, deploy, ensure_node_ws, run_driver
from .scenarios import Scenario, params

ORG = "bench"


@dataclasses.dataclass
class Result:
    scenario: str
    peer: str
    figures: dict[str, Any] = dataclasses.field(default_factory=dict)
    errors: int = 0
    error_samples: list[str] = dataclasses.field(default_factory=list)
    unavailable: str | None = None  # the peer cannot run in this build / on this machine
    failure: str | None = None  # the run itself broke

    @property
    def ok(self) -> bool:
        return self.unavailable is None and self.failure is None


def run_one(
    scenario: Scenario,
    peer: Peer,
    preset: str,
    *,
    pin: bool = True,
    on_phase: Callable[[str, list[int]], None] | None = None,
) -> Result:
    """One driver run; never raises for a peer's failure (the table shows it instead)."""
    result = Result(scenario.key, peer.key)
    reason = peer.unavailable()
    if reason is not None:
        result.unavailable = reason
        return result
    if peer.key == "node-ws":
        ensure_node_ws()
    secret = secrets.token_urlsafe(32)
    scale = {"full": 1.0, "quick": 0.6, "smoke": 0.5}[preset]
    try:
        with deploy(peer, secret, SERVER_CORE if pin else None) as dep:
            config = {
                "scenario": scenario.key,
                "params": params(scenario, preset),
                "targets": dep.targets,
                "pids": dep.pids,
                "clk_tck": os.sysconf("SC_CLK_TCK"),
                "jwt_secret": secret,
                "org": ORG,
                "cores": [SERVER_CORE, DRIVER_CORE] if pin else [],
                "features": sorted(peer.features()),
            }
            hook = None if on_phase is None else (lambda phase: on_phase(phase, dep.pids))
            out = run_driver(config, DRIVER_CORE if pin else None, scenario.timeout * scale, hook)
            crashed = [p.name for p in dep.procs if p.popen.poll() is not None]
            if crashed:
                result.failure = f"server died during the run: {', '.join(crashed)}"
    except (RuntimeError, OSError) as exc:
        result.failure = str(exc)[:500]
        return result
    result.figures = out["figures"]
    result.figures["driver_wall_s"] = out["wall_s"]
    result.errors = out["errors"]
    result.error_samples = out["error_samples"]
    return result
