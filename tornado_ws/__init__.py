"""tornado-ws: a real-time session hub on Tornado.

JWT-authenticated WebSocket sessions with one total order per session,
join/leave presence, resume after reconnect, and strict tenant isolation.

Exports load lazily so that importing the I/O-free core (``tornado_ws.core``) never pulls in Tornado.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tornado_ws.client import Backoff, Client, PublishError, SessionClient, SessionClosed, Subscription, connect
    from tornado_ws.config import Config, ConfigError
    from tornado_ws.core.protocol import valid_session_id
    from tornado_ws.core.registry import Registry, SessionKey
    from tornado_ws.errors import CloseCode, ErrorCode
    from tornado_ws.hooks import Reject
    from tornado_ws.hub import Hub, make_app

__all__ = [
    "Backoff",
    "Client",
    "CloseCode",
    "Config",
    "ConfigError",
    "ErrorCode",
    "Hub",
    "PublishError",
    "Registry",
    "Reject",
    "SessionClient",
    "SessionClosed",
    "SessionKey",
    "Subscription",
    "connect",
    "make_app",
    "valid_session_id",
]
__version__ = "0.1.0"

_EXPORTS = {
    "make_app": ".hub",
    "Backoff": ".client",
    "Client": ".client",
    "PublishError": ".client",
    "SessionClient": ".client",
    "SessionClosed": ".client",
    "Subscription": ".client",
    "connect": ".client",
    "Config": ".config",
    "ConfigError": ".config",
    "CloseCode": ".errors",
    "ErrorCode": ".errors",
    "Hub": ".hub",
    "Registry": ".core.registry",
    "Reject": ".hooks",
    "SessionKey": ".core.registry",
    "valid_session_id": ".core.protocol",
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'tornado_ws' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
