"""What every handler of one app shares: config, verifier, hub, metrics, lifecycle."""

from __future__ import annotations

import dataclasses

from .auth import TokenVerifier
from .config import Config
from .hub import Hub
from .metrics import Metrics


@dataclasses.dataclass
class AppState:
    config: Config
    verifier: TokenVerifier
    hub: Hub
    metrics: Metrics
    #: Set when shutdown starts: new handshakes get 503, /readyz answers 503.
    draining: bool = False

    def __post_init__(self) -> None:
        origins = self.config.allowed_origins
        self.allowed_origins = None if origins is None else frozenset(o.lower().rstrip("/") for o in origins)
