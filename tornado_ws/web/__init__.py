"""Tornado's side: the WebSocket handler (upgrade and authentication, :mod:`.handler`), what a
connection's frames mean (:mod:`.connection`), the HTTP API and pages (:mod:`.api`), and what one
app's handlers share (:mod:`.state`, :mod:`.base`).
"""
