"""What every handler of one hub shares: config, verifier, registry, metrics, hooks, lifecycle."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from .auth import TokenVerifier
from .config import Config
from .hooks import Hooks
from .hub import Registry
from .metrics import Metrics


def _nothing() -> None:
    return None


@dataclasses.dataclass
class AppState:
    config: Config
    verifier: TokenVerifier
    registry: Registry
    metrics: Metrics
    hooks: Hooks = dataclasses.field(default_factory=Hooks)
    #: Called on each accepted connection; starts the history sweeper on the running loop.
    start_housekeeping: Callable[[], None] = _nothing
    #: Set when shutdown starts: new handshakes get 503, /readyz answers 503.
    draining: bool = False

    def __post_init__(self) -> None:
        origins = self.config.allowed_origins
        self.allowed_origins = None if origins is None else frozenset(o.lower().rstrip("/") for o in origins)
