"""``make_app(config)``: the whole application the CLI serves, built on :class:`~tornado_ws.Hub`."""

from __future__ import annotations

import tornado.web

from .config import Config
from .embedded import Hub


def make_app(config: Config) -> tornado.web.Application:
    """Build the application.

    ``app.settings`` holds ``hub`` (the :class:`~tornado_ws.Hub`), ``registry``
    (its session registry, also ``SessionHandler.registry``) and ``state``.
    """
    return Hub(config).application()
