"""The close handshake of the server side of a WebSocket (RFC 6455 sections 5.5.1, 7). No I/O.

:class:`CloseHandshake` takes the events (our ``close()``, the peer's close frame, a protocol
error, the socket gone) and says what to do: which close frame to send, whether data is still
processed, and how the socket ends. The connection (``tornado_ws.transport.websocket``) does
the sending, the timers and the system calls. Like the ``websockets`` library's
``protocol.py``: every rule here is unit-tested without a socket (tests/core/test_closing.py).
"""

from __future__ import annotations

import logging

from tornado_ws.core import frames

log = logging.getLogger("tornado_ws")

#: Our close frame not sent / sent, waiting for the peer's / handshake over (or the peer broke
#: the protocol), the socket closes once our last bytes are out / the socket is closed.
OPEN, CLOSING, DONE, CLOSED = 0, 1, 2, 3


class CloseHandshake:
    """Who closed first, which code goes back, and when the socket may close.

    ``state`` only moves forward: OPEN, CLOSING (our close frame went out), DONE (the
    handshake is over: the application is told, and only the socket's end is left), CLOSED.
    The methods that return bytes return the close frame to send now, or None.
    """

    __slots__ = ("close_code", "error", "server_close_code", "state")

    def __init__(self) -> None:
        self.state = OPEN
        #: The code of the close frame the peer sent (None: none yet, or it had no code).
        self.close_code: int | None = None
        #: The code of the close frame we sent first, if we did.
        self.server_close_code: int | None = None
        #: The violation the parser found, from the moment it found it (see :meth:`protocol_error`).
        self.error: frames.ProtocolError | None = None

    @property
    def accepts_data(self) -> bool:
        """Messages are handled, pings answered and frames written only before our close frame;
        after it, data is read and dropped (RFC 6455 5.5.1)."""
        return self.state == OPEN

    @property
    def discards_input(self) -> bool:
        """The handshake is over but the socket is not closed: what arrives is read and dropped."""
        return self.state == DONE

    @property
    def half_close(self) -> bool:
        """How the socket ends once DONE: True, shut down our side, read and drop until the
        peer's EOF; False, close it at once (once our last bytes are out). The first only
        after a protocol error: that peer may still be sending, and closing with its bytes
        unread would reset the connection and could destroy our close frame on its side."""
        return self.error is not None

    def close(self, code: int = 1000, reason: str = "") -> bytes | None:
        """We close first: our close frame; None once one went out (a second close is a no-op)."""
        if self.state != OPEN:
            return None
        self.state = CLOSING
        self.server_close_code = code
        return frames.close_frame(code, reason)

    def receive_close(self, payload: bytes) -> bytes | None:
        """The peer's close frame ends the handshake (DONE).

        Returns the reply if we had not closed first: its code echoed (an empty close frame if
        it had none), as Tornado and browsers do, or a close with 1002/1007 if the payload is
        invalid. None if ours went out already. The server then closes TCP first (RFC 6455 7.1.1).
        """
        if self.state >= DONE:
            return None
        try:
            code, _reason = frames.parse_close(payload)
        except frames.ProtocolError as exc:
            log.info("protocol error: %s; closing with %d", exc.reason, exc.code)
            reply = self.close(exc.code, exc.reason)
        else:
            self.close_code = code
            reply = frames.close_frame(code) if self.state == OPEN else None
        self.state = DONE
        return reply

    def protocol_error(self, error: frames.ProtocolError) -> None:
        """The parser refused the peer's bytes. Nothing is sent yet: the events parsed before
        the error are handled first (they may hold the connection), then :meth:`fail`. From
        now on the socket half-closes rather than closes, whatever ends the handshake."""
        self.error = error

    def fail(self) -> bytes | None:
        """Act on :attr:`error`: the handshake is over (DONE). Returns the close frame with the
        error's code, unless ours went out already (or the handshake was over before)."""
        error = self.error
        assert error is not None, "fail() follows protocol_error()"
        if self.state >= DONE:
            return None
        log.info("protocol error: %s; closing with %d", error.reason, error.code)
        reply = self.close(error.code, error.reason)
        self.state = DONE
        return reply

    def lost(self) -> bool:
        """The socket is gone (the peer's EOF, a socket error, the close timer, an abort) and
        CLOSED. True when the handshake had not ended: the application is told now."""
        ended = self.state >= DONE
        self.state = CLOSED
        return not ended
