"""The socket layer: the WebSocket connection on its bare socket after the upgrade
(:mod:`.websocket`), the upgrade fast path (:mod:`.upgrade`), the CLI's guarded HTTP server
(:mod:`.guard`), and :mod:`.tornado_internals`, the one module that may touch Tornado's private
parts.
"""
