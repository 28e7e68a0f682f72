"""``make_app(config)``: routes, settings and the one registry they share."""

from __future__ import annotations

import secrets
from typing import Any

import tornado.web

from .api import DemoTokenHandler, HealthHandler, NotFoundHandler, PageHandler, api_routes
from .auth import TokenVerifier
from .config import Config
from .handlers import SessionHandler
from .hub import Hub
from .logs import log_request
from .metrics import Metrics
from .state import AppState


def make_app(config: Config, *, hub: Hub | None = None) -> tornado.web.Application:
    """Build the application.

    Its shared state is ``app.settings["state"]`` (an :class:`AppState`); the
    hub is also ``app.settings["hub"]`` and ``SessionHandler.registry``.
    """
    demo_secret = secrets.token_urlsafe(32) if config.demo and not config.jwt_secret else None
    if hub is None:
        hub = Hub(history_size=config.history_size, history_ttl=config.history_ttl)
    state = AppState(
        config=config,
        verifier=TokenVerifier.from_config(config, demo_secret),
        hub=hub,
        metrics=Metrics(hub),
    )
    SessionHandler.registry = hub

    routes: list[Any] = [
        (r"/ws/(.*)", SessionHandler, {"state": state}),
        (r"/healthz", HealthHandler),
        *api_routes(state),
        (r"/()", PageHandler, {"path": config.static_dir, "default_filename": "index.html"}),
        (r"/static/(.*)", PageHandler, {"path": config.static_dir}),
    ]
    if config.demo:
        signing_secret = config.jwt_secret or demo_secret
        assert signing_secret is not None
        routes.append((r"/demo/token", DemoTokenHandler, {"secret": signing_secret}))

    return tornado.web.Application(
        routes,
        state=state,
        hub=hub,
        config=config,
        log_function=log_request,
        default_handler_class=NotFoundHandler,
        websocket_max_message_size=config.max_message_size,
        websocket_ping_interval=config.ping_interval,
        websocket_ping_timeout=config.ping_timeout,
        # Deflate costs hundreds of KiB per connection; off unless asked for.
        compress_response=False,
    )
