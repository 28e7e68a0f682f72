"""Run one scenario against one peer: deploy it, drive it, stop it."""

from __future__ import annotations

import dataclasses
import os
import secrets
from collections.abc import Callable
from typing import Any

from .peers import Peer
from .procs import DRIVER_CORE, SERVER_CORE, deploy, ensure_node_ws, run_driver
from .scenarios import Scenario, Variant, params

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
    """One driver run (per variant of the scenario, each on a fresh deployment); never raises for a
    peer's failure (the table shows it instead)."""
    result = Result(scenario.key, peer.key)
    reason = peer.unavailable()
    if reason is not None:
        result.unavailable = reason
        return result
    if peer.key == "node-ws":
        ensure_node_ws()
    scale = {"full": 1.0, "quick": 0.6, "smoke": 0.5}[preset]
    features = peer.features()
    for variant in scenario.variants or (Variant(""),):
        if (variant.needs is not None and variant.needs not in features) or (
            variant.only and peer.key not in variant.only
        ):
            continue
        run = {**params(scenario, preset), **variant.params}
        extra = tuple(scenario.server_args(run, features))
        out = _drive(scenario, peer, run, extra, features, pin, scenario.timeout * scale, on_phase, result)
        if out is None:
            return result
        result.figures.update({variant.prefix + k: v for k, v in out["figures"].items()})
        result.figures[f"{variant.prefix}driver_wall_s"] = out["wall_s"]
        result.errors += out["errors"]
        fresh = [sample for sample in out["error_samples"] if sample not in result.error_samples]
        result.error_samples = (result.error_samples + fresh)[:5]
    result.figures.update(scenario.derived(result.figures))
    return result


def _drive(
    scenario: Scenario,
    peer: Peer,
    run: dict[str, Any],
    extra: tuple[str, ...],
    features: frozenset[str],
    pin: bool,
    timeout: float,
    on_phase: Callable[[str, list[int]], None] | None,
    result: Result,
) -> dict[str, Any] | None:
    """Deploy ``peer`` (with ``extra`` server flags) and drive one run; None (and
    ``result.failure``) when it broke."""
    secret = secrets.token_urlsafe(32)
    try:
        with deploy(peer, secret, SERVER_CORE if pin else None, extra) as dep:
            config = {
                "scenario": scenario.key,
                "params": run,
                "targets": dep.targets,
                "pids": dep.pids,
                "clk_tck": os.sysconf("SC_CLK_TCK"),
                "jwt_secret": secret,
                "org": ORG,
                "cores": [SERVER_CORE, DRIVER_CORE] if pin else [],
                "features": sorted(features),
            }
            hook = None if on_phase is None else (lambda phase: on_phase(phase, dep.pids))
            out = run_driver(config, DRIVER_CORE if pin else None, timeout, hook)
            crashed = [p.name for p in dep.procs if p.popen.poll() is not None]
            if crashed:
                result.failure = f"server died during the run: {', '.join(crashed)}"
    except (RuntimeError, OSError) as exc:
        result.failure = str(exc)[:500]
        return None
    return out
