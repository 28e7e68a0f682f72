"""The I/O-free core: the session registry, each session's stream (epoch, seq, history), the
JSON protocol, the RFC 6455 frame codec and rate limiting.

Plain synchronous Python: it imports no Tornado (but its C unmasking helper), no Redis, no
socket and no asyncio (an import-linter contract in setup.cfg checks it), so every rule here is
unit-tested without a socket, like the sans-I/O core of the ``websockets`` library.
"""
