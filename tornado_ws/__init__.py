"""tornado-ws: a real-time session hub on Tornado.

JWT-authenticated WebSocket sessions with one total order per session,
join/leave presence, resume after reconnect, and strict tenant isolation.

Exports load lazily so that importing the I/O-free core (``tornado_ws.hub``,
``tornado_ws.history``, ``tornado_ws.messages``) never pulls in Tornado.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import make_app
    from .client import Backoff, Client, SessionClosed, connect
    from .config import Config, ConfigError
    from .embedded import Hub
    from .errors import CloseCode, ErrorCode
    from .hooks import Reject
    from .hub import Registry, SessionKey

__all__ = [
    "Backoff",
    "Client",
    "CloseCode",
    "Config",
    "ConfigError",
    "ErrorCode",
    "Hub",
    "Registry",
    "Reject",
    "SessionClosed",
    "SessionKey",
    "connect",
    "make_app",
]
__version__ = "0.1.0"

_EXPORTS = {
    "make_app": ".app",
    "Backoff": ".client",
    "Client": ".client",
    "SessionClosed": ".client",
    "connect": ".client",
    "Config": ".config",
    "ConfigError": ".config",
    "CloseCode": ".errors",
    "ErrorCode": ".errors",
    "Hub": ".embedded",
    "Registry": ".hub",
    "Reject": ".hooks",
    "SessionKey": ".hub",
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'tornado_ws' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
